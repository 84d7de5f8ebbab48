package vpc

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
)

// t3Limits gives t3.medium's limits (3 ENIs × 6 IPv4 slots) to every type.
func t3Limits(string) Limits { return Limits{MaxENIs: 3, IPv4PerENI: 6} }

func available(t *testing.T, m *Model, subnetID string) int {
	t.Helper()
	s, err := m.Subnet(subnetID)
	if err != nil {
		t.Fatal(err)
	}
	return s.AvailableIPs
}

func TestENILifecycle(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{})
	inst, err := m.LaunchInstance("t3.medium", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	before := available(t, m, inst.SubnetID)

	e, err := m.CreateENI(ENISpec{SubnetID: inst.SubnetID, Description: "pods", SecondaryIPs: 1, Tags: map[string]string{"k": "v"}}, t3Limits)
	if err != nil {
		t.Fatalf("CreateENI: %v", err)
	}
	if e.Status != ENIAvailable || e.Attachment != nil || len(e.PrivateIPs) != 2 || !e.PrivateIPs[0].Primary || e.Tags["k"] != "v" {
		t.Errorf("created = %+v", e)
	}
	att, err := m.AttachENI(e.ID, inst.ID, 1, 0, t3Limits)
	if err != nil {
		t.Fatalf("AttachENI: %v", err)
	}
	if att.DeleteOnTermination || att.InstanceID != inst.ID || att.DeviceIndex != 1 {
		t.Errorf("attachment = %+v", att)
	}
	if err := m.ModifyENI(e.ID, ENIChange{AttachmentID: att.ID, DeleteOnTermination: new(true)}); err != nil {
		t.Fatalf("ModifyENI: %v", err)
	}
	got, err := m.AssignAddresses(e.ID, AddressRequest{Count: 2, PrefixCount: 1}, t3Limits)
	if err != nil || len(got.Addresses) != 2 || len(got.Prefixes) != 1 {
		t.Fatalf("AssignAddresses = %+v, %v", got, err)
	}
	enis, _ := m.InstanceENIs(inst.ID)
	if len(enis) != 2 || enis[1].ID != e.ID || !enis[1].Attachment.DeleteOnTermination || enis[1].Status != ENIInUse || enis[1].Slots() != 5 {
		t.Errorf("instance enis = %+v", enis)
	}
	if err := m.UnassignAddresses(e.ID, got.Addresses[:1], got.Prefixes); err != nil {
		t.Fatalf("UnassignAddresses: %v", err)
	}
	if cur, _ := m.ENI(e.ID); len(cur.PrivateIPs) != 3 || !cur.PrivateIPs[0].Primary || len(cur.IPv4Prefixes) != 0 {
		t.Errorf("after unassign = %+v", cur)
	}
	if err := m.DetachENI(att.ID, false); err != nil {
		t.Fatalf("DetachENI: %v", err)
	}
	if enis, _ := m.InstanceENIs(inst.ID); len(enis) != 1 {
		t.Errorf("enis after detach = %d", len(enis))
	}
	if err := m.DeleteENI(e.ID); err != nil {
		t.Fatalf("DeleteENI: %v", err)
	}
	if after := available(t, m, inst.SubnetID); after != before {
		t.Errorf("available after delete = %d, want %d", after, before)
	}
	if _, err := m.ENI(e.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted ENI still there: %v", err)
	}
}

func TestENIErrors(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{})
	subnets := m.Subnets()
	inst, _ := m.LaunchInstance("t3.medium", subnets[0].ID, nil)
	primaryAtt := func() string { e, _ := m.ENI(inst.ENIIDs[0]); return e.Attachment.ID }()
	free, _ := m.CreateENI(ENISpec{SubnetID: subnets[0].ID}, nil)
	other, _ := m.CreateENI(ENISpec{SubnetID: subnets[1].ID}, nil)
	busy, _ := m.CreateENI(ENISpec{SubnetID: subnets[0].ID}, nil)
	busyAtt, err := m.AttachENI(busy.ID, inst.ID, 1, 0, t3Limits)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"create unknown subnet", func() error { _, err := m.CreateENI(ENISpec{SubnetID: "subnet-x"}, nil); return err }, ErrNotFound},
		{"create unknown group", func() error {
			_, err := m.CreateENI(ENISpec{SubnetID: subnets[0].ID, SecurityGroupIDs: []string{"sg-x"}}, nil)
			return err
		}, ErrNotFound},
		{"create over limit", func() error {
			_, err := m.CreateENI(ENISpec{SubnetID: subnets[0].ID, SecondaryIPs: 5, Prefixes: 1}, t3Limits)
			return err
		}, ErrAddressLimit},
		{"attach unknown eni", func() error { _, err := m.AttachENI("eni-x", inst.ID, 2, 0, nil); return err }, ErrNotFound},
		{"attach unknown instance", func() error { _, err := m.AttachENI(free.ID, "i-x", 2, 0, nil); return err }, ErrNotFound},
		{"attach in use", func() error { _, err := m.AttachENI(busy.ID, inst.ID, 2, 0, nil); return err }, ErrInUse},
		{"attach device taken", func() error { _, err := m.AttachENI(free.ID, inst.ID, 1, 0, nil); return err }, ErrInUse},
		{"attach other zone", func() error { _, err := m.AttachENI(other.ID, inst.ID, 2, 0, nil); return err }, ErrInvalid},
		{"attach no such card", func() error { _, err := m.AttachENI(free.ID, inst.ID, 2, 1, nil); return err }, ErrInvalid},
		{"attach negative index", func() error { _, err := m.AttachENI(free.ID, inst.ID, -1, 0, nil); return err }, ErrInvalid},
		{"attach over eni limit", func() error {
			_, err := m.AttachENI(free.ID, inst.ID, 2, 0, func(string) Limits { return Limits{MaxENIs: 2} })
			return err
		}, ErrAttachmentLimit},
		{"detach unknown", func() error { return m.DetachENI("eni-attach-x", true) }, ErrNotFound},
		{"detach primary", func() error { return m.DetachENI(primaryAtt, true) }, ErrNotPermitted},
		{"delete attached", func() error { return m.DeleteENI(busy.ID) }, ErrInUse},
		{"delete unknown", func() error { return m.DeleteENI("eni-x") }, ErrNotFound},
		{"modify wrong attachment", func() error {
			return m.ModifyENI(busy.ID, ENIChange{AttachmentID: primaryAtt, DeleteOnTermination: new(true)})
		}, ErrNotFound},
		{"modify flag without attachment", func() error { return m.ModifyENI(busy.ID, ENIChange{DeleteOnTermination: new(true)}) }, ErrInvalid},
		{"modify unknown group", func() error { return m.ModifyENI(busy.ID, ENIChange{SecurityGroupIDs: []string{"sg-x"}}) }, ErrNotFound},
		{"assign over limit", func() error {
			_, err := m.AssignAddresses(busy.ID, AddressRequest{Count: 6}, t3Limits)
			return err
		}, ErrAddressLimit},
		{"assign outside subnet", func() error {
			_, err := m.AssignAddresses(free.ID, AddressRequest{Addresses: []netip.Addr{netip.MustParseAddr("10.0.16.9")}}, nil)
			return err
		}, ErrInvalid},
		{"assign aws reserved", func() error {
			_, err := m.AssignAddresses(free.ID, AddressRequest{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}, nil)
			return err
		}, ErrInvalid},
		{"assign taken", func() error {
			_, err := m.AssignAddresses(free.ID, AddressRequest{Addresses: []netip.Addr{inst.PrivateIP}}, nil)
			return err
		}, ErrAddressInUse},
		{"assign misaligned prefix", func() error {
			_, err := m.AssignAddresses(free.ID, AddressRequest{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.1.8/28")}}, nil)
			return err
		}, ErrInvalid},
		{"assign taken prefix", func() error {
			_, err := m.AssignAddresses(free.ID, AddressRequest{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/28")}}, nil)
			return err
		}, ErrAddressInUse},
		{"unassign primary", func() error { return m.UnassignAddresses(free.ID, []netip.Addr{free.PrimaryIP()}, nil) }, ErrInvalid},
		{"unassign foreign", func() error { return m.UnassignAddresses(free.ID, []netip.Addr{inst.PrivateIP}, nil) }, ErrInvalid},
		{"unassign foreign prefix", func() error {
			return m.UnassignAddresses(free.ID, nil, []netip.Prefix{netip.MustParsePrefix("10.0.2.0/28")})
		}, ErrInvalid},
		{"reserve unknown subnet", func() error { return m.Reserve("subnet-x") }, ErrNotFound},
		{"fragment unknown subnet", func() error { _, err := m.Fragment("subnet-x"); return err }, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if e, _ := m.ENI(busy.ID); e.Attachment.ID != busyAtt.ID || e.Attachment.DeleteOnTermination {
		t.Errorf("a failed change changed the ENI: %+v", e.Attachment)
	}
}

func TestFragmentBlocksPrefixesNotAddresses(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{Subnets: []SubnetConfig{{Zone: "us-west-2a", CIDR: "10.0.8.0/24"}}})
	subnet := m.Subnets()[0].ID
	e, err := m.CreateENI(ENISpec{SubnetID: subnet}, nil)
	if err != nil {
		t.Fatal(err)
	}
	reserved, err := m.Fragment(subnet)
	// 16 blocks: the first holds reserved addresses and the primary, the
	// last holds the broadcast address, so 14 were wholly free.
	if err != nil || len(reserved) != 14 || reserved[0] != netip.MustParseAddr("10.0.8.31") {
		t.Fatalf("Fragment = %v, %v", reserved, err)
	}
	if _, err := m.AssignAddresses(e.ID, AddressRequest{PrefixCount: 1}, nil); !errors.Is(err, ErrNoFreePrefix) || !errors.Is(err, ErrNoFreeAddresses) {
		t.Errorf("prefix on a fragmented subnet: err = %v, want ErrNoFreePrefix", err)
	}
	got, err := m.AssignAddresses(e.ID, AddressRequest{Count: 1}, nil)
	if err != nil || len(got.Addresses) != 1 {
		t.Errorf("single address on a fragmented subnet = %+v, %v", got, err)
	}
	if cur, _ := m.ENI(e.ID); cur.Slots() != 2 {
		t.Errorf("the failed prefix request left slots behind: %+v", cur)
	}
}

func TestReleaseReusesAddresses(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{Subnets: []SubnetConfig{{Zone: "us-west-2a", CIDR: "10.0.8.0/26"}}})
	subnet := m.Subnets()[0].ID
	e, err := m.CreateENI(ENISpec{SubnetID: subnet, Prefixes: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.UnassignAddresses(e.ID, nil, e.IPv4Prefixes[:1]); err != nil {
		t.Fatal(err)
	}
	again, err := m.AssignAddresses(e.ID, AddressRequest{PrefixCount: 1}, nil)
	if err != nil || again.Prefixes[0] != e.IPv4Prefixes[0] {
		t.Errorf("reassigned prefix = %+v, %v; want %s back", again, err, e.IPv4Prefixes[0])
	}
	// A request that fails part way gives back what it took.
	before := available(t, m, subnet)
	if _, err := m.AssignAddresses(e.ID, AddressRequest{Count: 1, PrefixCount: 1}, nil); !errors.Is(err, ErrNoFreePrefix) {
		t.Fatalf("err = %v, want ErrNoFreePrefix", err)
	}
	if after := available(t, m, subnet); after != before {
		t.Errorf("available = %d after a failed request, want %d", after, before)
	}
	if err := m.Reserve(subnet, netip.MustParseAddr("10.0.8.5"), netip.MustParseAddr("10.0.8.5")); !errors.Is(err, ErrAddressInUse) {
		t.Errorf("Reserve twice: err = %v", err)
	}
	if after := available(t, m, subnet); after != before {
		t.Errorf("a failed Reserve kept addresses: %d, want %d", after, before)
	}
}

// TestConcurrentAssignAndRelease runs assignments, releases and prefix
// delegation from many goroutines and checks that no address is held twice
// and that the free count adds up.
func TestConcurrentAssignAndRelease(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{Subnets: []SubnetConfig{{Zone: "us-west-2a", CIDR: "10.0.8.0/24"}}})
	subnet := m.Subnets()[0]
	var enis []ENI
	for range 4 {
		e, err := m.CreateENI(ENISpec{SubnetID: subnet.ID}, nil)
		if err != nil {
			t.Fatal(err)
		}
		enis = append(enis, e)
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			e := enis[g%len(enis)]
			for i := range 10 {
				got, err := m.AssignAddresses(e.ID, AddressRequest{Count: 1, PrefixCount: i % 2}, nil)
				if err != nil && !errors.Is(err, ErrNoFreeAddresses) {
					t.Error(err)
					return
				}
				if err == nil && i%3 == 0 {
					if err := m.UnassignAddresses(e.ID, got.Addresses, got.Prefixes); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	held := 0
	for _, e := range m.ENIs() {
		var addrs []netip.Addr
		for _, ip := range e.PrivateIPs {
			addrs = append(addrs, ip.Address)
		}
		for _, p := range e.IPv4Prefixes {
			for a := p.Addr(); p.Contains(a); a = a.Next() {
				addrs = append(addrs, a)
			}
		}
		for _, a := range addrs {
			if seen[a] {
				t.Fatalf("address %s held twice", a)
			}
			seen[a] = true
		}
		held += len(addrs)
	}
	if got := available(t, m, subnet.ID); got != subnet.AvailableIPs-held {
		t.Errorf("available = %d, want %d - %d held", got, subnet.AvailableIPs, held)
	}
}

func TestAttachOrdersByDeviceIndex(t *testing.T) {
	t.Parallel()
	m := newModel(t, Config{})
	inst, _ := m.LaunchInstance("p4d.24xlarge", "", nil)
	cards := func(string) Limits { return Limits{MaxENIs: 15, NetworkCards: 4, IPv4PerENI: 50} }
	var want []string
	for _, at := range []struct{ dev, card int }{{2, 0}, {1, 1}, {1, 0}} {
		e, err := m.CreateENI(ENISpec{SubnetID: inst.SubnetID}, cards)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.AttachENI(e.ID, inst.ID, at.dev, at.card, cards); err != nil {
			t.Fatalf("attach at %+v: %v", at, err)
		}
		want = append(want, e.ID)
	}
	got, _ := m.Instance(inst.ID)
	if wantOrder := []string{inst.ENIIDs[0], want[2], want[1], want[0]}; !slices.Equal(got.ENIIDs, wantOrder) {
		t.Errorf("ENIIDs = %v, want %v", got.ENIIDs, wantOrder)
	}
}
