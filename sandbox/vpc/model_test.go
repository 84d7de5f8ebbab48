package vpc

import (
	"errors"
	"net/netip"
	"regexp"
	"sync"
	"testing"
	"time"
)

func newModel(t *testing.T, cfg Config) *Model {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{})
	if m.Region() != "us-west-2" || m.AccountID() != "111122223333" {
		t.Errorf("region/account = %s/%s", m.Region(), m.AccountID())
	}
	wantZones := []Zone{{"us-west-2a", "usw2-az1"}, {"us-west-2b", "usw2-az2"}, {"us-west-2c", "usw2-az3"}}
	if got := m.Zones(); len(got) != 3 || got[0] != wantZones[0] || got[2] != wantZones[2] {
		t.Errorf("zones = %v, want %v", got, wantZones)
	}
	if m.VPC().CIDR.String() != "10.0.0.0/16" {
		t.Errorf("vpc cidr = %s", m.VPC().CIDR)
	}
	subnets := m.Subnets()
	wantCIDRs := []string{"10.0.0.0/20", "10.0.16.0/20", "10.0.32.0/20"}
	if len(subnets) != len(wantCIDRs) {
		t.Fatalf("subnets = %d, want %d", len(subnets), len(wantCIDRs))
	}
	for i, s := range subnets {
		if s.CIDR.String() != wantCIDRs[i] || s.Zone != wantZones[i] || s.AvailableIPs != 4096-5 {
			t.Errorf("subnet %d = %+v", i, s)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"bad vpc cidr", Config{VPCCIDR: "nope"}},
		{"ipv6 vpc", Config{VPCCIDR: "fd00::/48"}},
		{"vpc too small for defaults", Config{VPCCIDR: "10.0.0.0/24"}},
		{"subnet outside vpc", Config{Subnets: []SubnetConfig{{Zone: "us-west-2a", CIDR: "192.168.0.0/24"}}}},
		{"unknown zone", Config{Subnets: []SubnetConfig{{Zone: "mars-1a", CIDR: "10.0.0.0/24"}}}},
		{"overlap", Config{Subnets: []SubnetConfig{{Zone: "us-west-2a", CIDR: "10.0.0.0/24"}, {Zone: "us-west-2b", CIDR: "10.0.0.128/25"}}}},
		{"subnet too small", Config{Subnets: []SubnetConfig{{Zone: "us-west-2a", CIDR: "10.0.0.0/29"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(tt.cfg); err == nil {
				t.Fatal("New succeeded, want an error")
			}
		})
	}
}

func TestLaunchInstance(t *testing.T) {
	t.Parallel()
	launched := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := newModel(t, Config{Now: func() time.Time { return launched }})
	subnet := m.Subnets()[1]
	inst, err := m.LaunchInstance("m5.large", subnet.ID, map[string]string{"Name": "a"})
	if err != nil {
		t.Fatalf("LaunchInstance: %v", err)
	}
	if !regexp.MustCompile(`^i-0[0-9a-f]{16}$`).MatchString(inst.ID) {
		t.Errorf("instance id %q does not look like AWS's", inst.ID)
	}
	if inst.PrivateIP != netip.MustParseAddr("10.0.16.4") {
		t.Errorf("first address = %s, want 10.0.16.4 (first four are reserved)", inst.PrivateIP)
	}
	if inst.PrivateDNSName != "ip-10-0-16-4.us-west-2.compute.internal" {
		t.Errorf("dns name = %s", inst.PrivateDNSName)
	}
	if inst.State != StateRunning || inst.State.Code() != 16 || !inst.LaunchTime.Equal(launched) || inst.Zone.Name != "us-west-2b" {
		t.Errorf("instance = %+v", inst)
	}
	enis, err := m.InstanceENIs(inst.ID)
	if err != nil || len(enis) != 1 {
		t.Fatalf("InstanceENIs = %v, %v", enis, err)
	}
	eni := enis[0]
	if !regexp.MustCompile(`^eni-0[0-9a-f]{16}$`).MatchString(eni.ID) || !regexp.MustCompile(`^02(:[0-9a-f]{2}){5}$`).MatchString(eni.MAC) {
		t.Errorf("eni id/mac = %s/%s", eni.ID, eni.MAC)
	}
	if eni.Attachment == nil || eni.Attachment.DeviceIndex != 0 || eni.Attachment.InstanceID != inst.ID || eni.Status != ENIInUse {
		t.Errorf("eni attachment = %+v status %s", eni.Attachment, eni.Status)
	}
	if eni.PrimaryIP() != inst.PrivateIP || len(eni.SecurityGroupIDs) != 1 {
		t.Errorf("eni = %+v", eni)
	}
	if got, _ := m.Subnet(subnet.ID); got.AvailableIPs != subnet.AvailableIPs-1 {
		t.Errorf("available = %d, want %d", got.AvailableIPs, subnet.AvailableIPs-1)
	}
	if def, err := m.LaunchInstance("m5.large", "", nil); err != nil || def.SubnetID != m.Subnets()[0].ID {
		t.Errorf("launch without subnet = %+v, %v; want the first subnet", def, err)
	}
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{})
	tests := []struct {
		name string
		kind Kind
		call func() error
	}{
		{"instance", KindInstance, func() error { _, err := m.Instance("i-0000000000000000"); return err }},
		{"subnet", KindSubnet, func() error { _, err := m.Subnet("subnet-0"); return err }},
		{"eni", KindENI, func() error { _, err := m.ENI("eni-0"); return err }},
		{"launch subnet", KindSubnet, func() error { _, err := m.LaunchInstance("m5.large", "subnet-0", nil); return err }},
		{"instance enis", KindInstance, func() error { _, err := m.InstanceENIs("i-0"); return err }},
		{"assign ip", KindENI, func() error { _, err := m.AssignPrivateIP("eni-0"); return err }},
		{"assign prefix", KindENI, func() error { _, err := m.AssignIPv4Prefix("eni-0"); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.call()
			var nf *NotFoundError
			if !errors.As(err, &nf) || nf.Kind != tt.kind || !errors.Is(err, ErrNotFound) {
				t.Fatalf("err = %v, want a %s NotFoundError", err, tt.kind)
			}
		})
	}
}

// TestAllocationExhaustsWithoutDuplicates fills a /28 (11 usable addresses)
// with addresses and checks every one is unique, usable, and that the next fails.
func TestAllocationExhaustsWithoutDuplicates(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{Subnets: []SubnetConfig{{Zone: "us-west-2a", CIDR: "10.0.5.0/28"}}})
	inst, err := m.LaunchInstance("t3.medium", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{inst.PrivateIP: true}
	for range 10 {
		ip, err := m.AssignPrivateIP(inst.ENIIDs[0])
		if err != nil {
			t.Fatalf("AssignPrivateIP: %v", err)
		}
		if seen[ip] {
			t.Fatalf("duplicate address %s", ip)
		}
		seen[ip] = true
	}
	for ip := range seen {
		if b := ip.As4()[3]; b < 4 || b > 14 {
			t.Errorf("address %s is reserved by AWS", ip)
		}
	}
	if _, err := m.AssignPrivateIP(inst.ENIIDs[0]); !errors.Is(err, ErrNoFreeAddresses) {
		t.Errorf("12th address err = %v, want ErrNoFreeAddresses", err)
	}
	if s, _ := m.Subnet(inst.SubnetID); s.AvailableIPs != 0 {
		t.Errorf("available = %d, want 0", s.AvailableIPs)
	}
	if eni, _ := m.ENI(inst.ENIIDs[0]); len(eni.PrivateIPs) != 11 || !eni.PrivateIPs[0].Primary || eni.PrivateIPs[1].Primary {
		t.Errorf("eni addresses = %v", eni.PrivateIPs)
	}
}

func TestAssignIPv4Prefix(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{Subnets: []SubnetConfig{{Zone: "us-west-2a", CIDR: "10.0.8.0/26"}}})
	inst, err := m.LaunchInstance("m5.large", "", nil) // takes 10.0.8.4, so the first /28 is not free
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.8.16/28", "10.0.8.32/28"}
	for _, w := range want {
		p, err := m.AssignIPv4Prefix(inst.ENIIDs[0])
		if err != nil || p.String() != w {
			t.Fatalf("AssignIPv4Prefix = %s, %v; want %s", p, err, w)
		}
	}
	// 10.0.8.48/28 holds the subnet's last address, which AWS reserves.
	if _, err := m.AssignIPv4Prefix(inst.ENIIDs[0]); !errors.Is(err, ErrNoFreeAddresses) {
		t.Errorf("third prefix err = %v, want ErrNoFreeAddresses", err)
	}
	ip, err := m.AssignPrivateIP(inst.ENIIDs[0])
	if err != nil || ip.String() != "10.0.8.5" {
		t.Errorf("address after prefixes = %s, %v; want 10.0.8.5", ip, err)
	}
}

func TestGettersReturnCopies(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{})
	inst, err := m.LaunchInstance("m5.large", "", map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	inst.Tags["k"] = "changed"
	inst.ENIIDs[0] = "eni-x"
	eni, _ := m.ENI(m.Instances()[0].ENIIDs[0])
	eni.PrivateIPs[0].Primary = false
	eni.Attachment.DeviceIndex = 7
	m.Subnets()[0].Tags["x"] = "y"

	again, _ := m.Instance(inst.ID)
	if again.Tags["k"] != "v" || again.ENIIDs[0] == "eni-x" {
		t.Errorf("instance changed through a copy: %+v", again)
	}
	eniAgain, _ := m.ENI(again.ENIIDs[0])
	if !eniAgain.PrivateIPs[0].Primary || eniAgain.Attachment.DeviceIndex != 0 {
		t.Errorf("eni changed through a copy: %+v", eniAgain)
	}
	if len(m.Subnets()[0].Tags) != 0 {
		t.Error("subnet tags changed through a copy")
	}
}

func TestDeterministicIDs(t *testing.T) {
	t.Parallel()
	a, b := newModel(t, Config{}), newModel(t, Config{})
	ia, _ := a.LaunchInstance("m5.large", "", nil)
	ib, _ := b.LaunchInstance("m5.large", "", nil)
	if ia.ID != ib.ID || a.Subnets()[0].ID != b.Subnets()[0].ID {
		t.Errorf("ids differ between identical models: %s %s", ia.ID, ib.ID)
	}
}

func TestConcurrentLaunches(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			inst, err := m.LaunchInstance("m5.large", "", nil)
			if err == nil {
				_, err = m.AssignPrivateIP(inst.ENIIDs[0])
			}
			if err != nil {
				t.Error(err)
			}
			_ = m.Instances()
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for _, e := range m.ENIs() {
		for _, ip := range e.PrivateIPs {
			if seen[ip.Address] {
				t.Fatalf("duplicate address %s", ip.Address)
			}
			seen[ip.Address] = true
		}
	}
	if len(seen) != 40 {
		t.Errorf("addresses = %d, want 40", len(seen))
	}
}

func TestUSEast1DNSName(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{Region: "us-east-1"})
	inst, _ := m.LaunchInstance("m5.large", "", nil)
	if inst.PrivateDNSName != "ip-10-0-0-4.ec2.internal" || m.Zones()[0].ID != "use1-az1" {
		t.Errorf("dns = %s zone = %+v", inst.PrivateDNSName, m.Zones()[0])
	}
}
