package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/autonode/autonode/agent/storage/ebs"
	"github.com/autonode/autonode/agent/storage/ebs/ebstest"
)

// TestEBSIDSubcommand runs the udev program over Identify fixtures, in each
// output format the rules in docs/storage.md use.
func TestEBSIDSubcommand(t *testing.T) {
	devs := ebstest.NewDevices()
	devs.Set("/dev/nvme1n1", ebstest.EBSVolume("vol-0abcdef0123456789", "/dev/xvdba"), nil)
	devs.Set("/dev/nvme2n1", ebstest.EBSVolume("vol-1a2b3c4d", ""), nil)
	devs.Set("/dev/nvme3n1", ebstest.InstanceStore("AWS1234567890ABCDEF0"), nil)
	devs.Set("/dev/nvme4n1", ebstest.EBSVolume("vol-0abcdef0123456789", "../x"), nil)
	tests := []struct {
		args    []string
		want    string
		wantErr string
	}{
		{args: []string{"/dev/nvme1n1"}, want: "vol-0abcdef0123456789 xvdba\n"},
		{args: []string{"--format=links", "/dev/nvme1n1"}, want: "disk/autonode/by-volume-id/vol-0abcdef0123456789 xvdba\n"},
		{args: []string{"--format=env", "/dev/nvme1n1"}, want: "AUTONODE_EBS_VOLUME_ID=vol-0abcdef0123456789\nAUTONODE_EBS_DEVICE_NAME=xvdba\n"},
		{args: []string{"/dev/nvme2n1"}, want: "vol-1a2b3c4d\n"},
		{args: []string{"--format=links", "/dev/nvme2n1"}, want: "disk/autonode/by-volume-id/vol-1a2b3c4d\n"},
		{args: []string{"--format=env", "/dev/nvme2n1"}, want: "AUTONODE_EBS_VOLUME_ID=vol-1a2b3c4d\n"},
		{args: []string{"--format=env", "/dev/nvme4n1"}, want: "AUTONODE_EBS_VOLUME_ID=vol-0abcdef0123456789\n"},
		{args: []string{"/dev/nvme3n1"}, wantErr: "/dev/nvme3n1: model \"Amazon EC2 NVMe Instance Storage\", vendor 0x1d0f: not an EBS volume"},
		{args: []string{"/dev/nvme9n1"}, wantErr: "/dev/nvme9n1"},
		{args: []string{"--format=json", "/dev/nvme1n1"}, wantErr: `--format "json"`},
		{args: nil, wantErr: "want exactly one DEVICE"},
		{args: []string{"/dev/nvme1n1", "/dev/nvme2n1"}, wantErr: "want exactly one DEVICE"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runEBSID(t.Context(), devs, tt.args, &stdout, &stderr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				if stdout.Len() != 0 {
					t.Errorf("printed %q on failure; udev would use it", stdout.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if stdout.String() != tt.want {
				t.Errorf("printed %q, want %q", stdout.String(), tt.want)
			}
		})
	}
}

// TestEBSIDSubcommandRealDevice goes through the agent's subcommand table
// and the real ioctl: a file is no NVMe device, and the error says so.
func TestEBSIDSubcommandRealDevice(t *testing.T) {
	file := filepath.Join(t.TempDir(), "nvme1n1")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"ebs-id", file}, os.Getenv, &stdout, &stderr)
	if !errors.Is(err, ebs.ErrNotNVMe) || !strings.Contains(err.Error(), file) {
		t.Fatalf("ebs-id on a file = %v, want ErrNotNVMe naming it", err)
	}
	if stdout.Len() != 0 {
		t.Errorf("printed %q on failure", stdout.String())
	}
}
