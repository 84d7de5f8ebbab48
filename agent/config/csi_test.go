package config

import (
	"strings"
	"testing"
)

func TestCSIFieldsAreValidated(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*CSI)
		field  string // empty when valid
		want   string
	}{
		{"defaults", func(*CSI) {}, "", ""},
		{"own driver name", func(c *CSI) { c.DriverName = "ebs.csi.autonode.dev" }, "", ""},
		{"driver name with a slash", func(c *CSI) { c.DriverName = "ebs/csi" }, "storage.csi.driverName (--csi-driver-name)", "CSI driver name"},
		{"driver name with digits at both ends", func(c *CSI) { c.DriverName = "2ebs.csi.example9" }, "", ""},
		{"driver name in capitals", func(c *CSI) { c.DriverName = "EBS.CSI.example.com" }, "", ""},
		{"driver name with an underscore", func(c *CSI) { c.DriverName = "ebs_csi" }, "storage.csi.driverName (--csi-driver-name)", "letters, digits, '-' and '.'"},
		{"driver name ending in a dash", func(c *CSI) { c.DriverName = "ebs-" }, "storage.csi.driverName (--csi-driver-name)", "ending with a letter or digit"},
		{"driver name too long", func(c *CSI) { c.DriverName = "a" + strings.Repeat("b", 62) + "c" }, "storage.csi.driverName (--csi-driver-name)", "63 characters"},
		{"endpoint relative", func(c *CSI) { c.Endpoint = "csi.sock" }, "storage.csi.endpoint (config file only)", "absolute"},
		{"endpoint too long", func(c *CSI) { c.Endpoint = "/" + strings.Repeat("x", 110) }, "storage.csi.endpoint (config file only)", "107 bytes"},
		{"registration dir", func(c *CSI) { c.RegistrationDir = "plugins_registry" }, "storage.csi.registrationDir (config file only)", "absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c.Storage.CSI)
			err := c.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.field) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want %s: %s", err, tt.field, tt.want)
			}
		})
	}
}

func TestCSIFlags(t *testing.T) {
	cmd, err := Parse("autonode-agent", []string{"--csi=false", "--csi-driver-name", "ebs.csi.autonode.dev"}, env(nil), &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if c := cmd.Config.Storage.CSI; c.Enabled || c.DriverName != "ebs.csi.autonode.dev" {
		t.Errorf("storage.csi = %+v", c)
	}
	cmd, err = Parse("autonode-agent", nil, env(map[string]string{"AUTONODE_CSI": "false"}), &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Config.Storage.CSI.Enabled {
		t.Error("AUTONODE_CSI=false left the CSI node service on")
	}
}
