package instance

import (
	"net/netip"
	"strings"
	"testing"
)

func validRaw() Raw {
	return Raw{
		PathInstanceID:   "i-0123456789abcdef0",
		PathInstanceType: "m5.large",
		PathZone:         "us-west-2a",
		PathRegion:       "us-west-2",
		PathLocalIPv4:    "10.0.1.5",
		PathHostname:     "ip-10-0-1-5.us-west-2.compute.internal",
		PathMAC:          "02:AB:cd:00:11:22",
		PathMACs:         "02:ab:cd:00:11:22/\n02:ab:cd:00:11:33/\n",
		KeyVPCCIDRs:      "10.0.0.0/16\n100.64.0.0/16",
	}
}

func TestParseValid(t *testing.T) {
	id, err := Parse(validRaw())
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{
		InstanceID: "i-0123456789abcdef0", InstanceType: "m5.large", AvailabilityZone: "us-west-2a", Region: "us-west-2",
		MAC: "02:ab:cd:00:11:22", PrivateIPv4: netip.MustParseAddr("10.0.1.5"),
		Hostname: "ip-10-0-1-5.us-west-2.compute.internal",
	}
	if id.InstanceID != want.InstanceID || id.InstanceType != want.InstanceType || id.AvailabilityZone != want.AvailabilityZone ||
		id.Region != want.Region || id.MAC != want.MAC || id.PrivateIPv4 != want.PrivateIPv4 || id.Hostname != want.Hostname {
		t.Errorf("Parse() = %+v, want %+v", id, want)
	}
	if got := strings.Join(id.MACs, ","); got != "02:ab:cd:00:11:22,02:ab:cd:00:11:33" {
		t.Errorf("MACs = %s", got)
	}
	if len(id.VPCCIDRs) != 2 || id.VPCCIDRs[0] != netip.MustParsePrefix("10.0.0.0/16") {
		t.Errorf("VPCCIDRs = %v", id.VPCCIDRs)
	}
	if got := id.ProviderID(); got != "aws:///us-west-2a/i-0123456789abcdef0" {
		t.Errorf("ProviderID() = %s", got)
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		path, value, want string
	}{
		{PathInstanceID, "", "not an instance id"},
		{PathInstanceID, "i-xyz", "not an instance id"},
		{PathInstanceID, "i-0123456789abcdef0; rm -rf /", "not an instance id"},
		{PathInstanceType, "<html>", "not an instance type"},
		{PathRegion, "mars-1", "not a region"},
		{PathZone, "eu-west-1a", "not an availability zone of region us-west-2"},
		{PathZone, "us-west-2", "not an availability zone"},
		{PathLocalIPv4, "fe80::1", "not an IPv4 address"},
		{PathLocalIPv4, "10.0.1", "not an IPv4 address"},
		{PathHostname, "bad_host!", "not a DNS hostname"},
		{PathMAC, "02:ab", "not a 48-bit MAC"},
		{PathMACs, "zz/\n", "not a 48-bit MAC"},
		{PathMACs, "02:ab:cd:00:11:33/\n", "does not list the primary MAC"},
		{KeyVPCCIDRs, "10.0.0.1/16", "not an IPv4 CIDR block"},
		{KeyVPCCIDRs, "fd00::/8", "not an IPv4 CIDR block"},
		{KeyVPCCIDRs, "", "lists no VPC CIDR block"},
	}
	for _, tt := range tests {
		t.Run(tt.path+"="+tt.value, func(t *testing.T) {
			raw := validRaw()
			raw[tt.path] = tt.value
			_, err := Parse(raw)
			if err == nil || !strings.Contains(err.Error(), "metadata "+tt.path) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse() = %v, want an error naming %s and saying %q", err, tt.path, tt.want)
			}
		})
	}
}

func TestParseTakesFirstHostname(t *testing.T) {
	raw := validRaw()
	raw[PathHostname] = "ip-10-0-1-5.ec2.internal ip-10-0-1-5.corp.example.com"
	id, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if id.Hostname != "ip-10-0-1-5.ec2.internal" {
		t.Errorf("Hostname = %q, want the first name", id.Hostname)
	}
}

func TestParseAcceptsLocalZone(t *testing.T) {
	raw := validRaw()
	raw[PathZone] = "us-west-2-lax-1a"
	if _, err := Parse(raw); err != nil {
		t.Fatalf("Parse(local zone) = %v", err)
	}
}

// FuzzParse feeds arbitrary metadata answers to Parse: it must return an
// identity whose fields all passed their checks, or an error; never panic.
func FuzzParse(f *testing.F) {
	r := validRaw()
	f.Add(r[PathInstanceID], r[PathInstanceType], r[PathZone], r[PathRegion], r[PathLocalIPv4], r[PathHostname], r[PathMAC], r[PathMACs], r[KeyVPCCIDRs])
	f.Add("i-1", "x", "", "", "::1", "", "", "\n/\n", "x")
	f.Fuzz(func(t *testing.T, iid, typ, zone, region, ip, host, mac, macs, cidrs string) {
		id, err := Parse(Raw{PathInstanceID: iid, PathInstanceType: typ, PathZone: zone, PathRegion: region,
			PathLocalIPv4: ip, PathHostname: host, PathMAC: mac, PathMACs: macs, KeyVPCCIDRs: cidrs})
		if err != nil {
			return
		}
		if !id.PrivateIPv4.Is4() || !strings.HasPrefix(id.AvailabilityZone, id.Region) || len(id.MACs) == 0 || len(id.VPCCIDRs) == 0 {
			t.Fatalf("Parse accepted an inconsistent identity: %+v", id)
		}
	})
}
