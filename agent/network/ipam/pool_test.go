package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdkec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	ec2emu "github.com/autonode/autonode/sandbox/ec2"
	"github.com/autonode/autonode/sandbox/vpc"
)

func TestAllocateReleaseOnPrimaryENI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "t3.medium") // 3 ENIs × 6 addresses
	p := e.started(t, nil)
	e.settle(t, p)
	primary, _ := e.model.ENI(e.inst.ENIIDs[0])
	sn, _ := e.model.Subnet(primary.SubnetID)

	a := e.allocate(t, p, "c1")
	if a.ENI != primary.ID || a.DeviceIndex != 0 || a.RouteTable != 0 || a.MAC != primary.MAC || a.SubnetCIDR != sn.CIDR {
		t.Errorf("allocation %+v: want primary ENI %s, device 0, table 0, MAC %s, subnet %s", a, primary.ID, primary.MAC, sn.CIDR)
	}
	if a.Addr == primary.PrimaryIP() || !sn.CIDR.Contains(a.Addr) {
		t.Errorf("address %s: must be a secondary address of %s", a.Addr, sn.CIDR)
	}
	again, err := p.Allocate(t.Context(), key("c1"), PodMeta{})
	if err != nil || again != a {
		t.Errorf("second Allocate = %+v, %v; want the same allocation", again, err)
	}
	if got, ok := p.Get(key("c1")); !ok || got != a {
		t.Errorf("Get = %+v, %v", got, ok)
	}
	if l := p.List(); len(l) != 1 || l[0] != a {
		t.Errorf("List = %+v", l)
	}
	for range 2 { // idempotent
		if err := p.Release(t.Context(), key("c1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Release(t.Context(), key("never")); err != nil {
		t.Errorf("Release of an unknown key: %v", err)
	}
	if _, ok := p.Get(key("c1")); ok {
		t.Error("Get after Release found the allocation")
	}
	if err := p.CanAllocate(); err != nil {
		t.Errorf("CanAllocate = %v", err)
	}
	if _, err := p.Allocate(t.Context(), Key{}, PodMeta{}); err == nil {
		t.Error("Allocate with an empty key succeeded")
	}
}

func TestENIGrowthAndShrink(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "t3.medium")
	p := e.started(t, nil) // WARM_ENI_TARGET=1: 5 free addresses
	e.settle(t, p)
	var allocs []Allocation
	for i := range 6 {
		allocs = append(allocs, e.allocate(t, p, fmt.Sprint("c", i)))
	}
	e.settle(t, p)
	second := allocs[5]
	if second.DeviceIndex != 1 || second.RouteTable != 2 {
		t.Fatalf("sixth allocation %+v: want the second ENI at device 1, route table 2", second)
	}
	n := describe(t, e, second.ENI)
	if n.Attachment == nil || aws.ToString(n.Attachment.InstanceId) != e.inst.ID || !aws.ToBool(n.Attachment.DeleteOnTermination) {
		t.Errorf("new ENI attachment %+v: want attached to %s with DeleteOnTermination", n.Attachment, e.inst.ID)
	}
	tags := map[string]string{}
	for _, tg := range n.TagSet {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if tags[TagInstanceID] != e.inst.ID || tags[TagCluster] != "test" {
		t.Errorf("new ENI tags %v", tags)
	}
	if _, enis := e.ec2Addrs(t); len(enis) != 3 {
		t.Errorf("%d ENIs with 6 pods and one warm ENI, want 3", len(enis))
	}

	for _, a := range allocs {
		if err := p.Release(t.Context(), a.Key); err != nil {
			t.Fatal(err)
		}
		e.live.set(a.Key.ContainerID, false)
	}
	e.clock.Advance(time.Minute) // past the cooldown
	e.settle(t, p)
	if _, enis := e.ec2Addrs(t); len(enis) != 1 {
		t.Errorf("%d ENIs after every pod left, want only the primary", len(enis))
	}
	if e.srv.Calls("UnassignPrivateIpAddresses") == 0 || e.srv.Calls("DetachNetworkInterface") == 0 {
		t.Error("ENI released without unassigning its addresses and detaching it first")
	}
	if _, err := e.model.ENI(second.ENI); !errors.Is(err, vpc.ErrNotFound) {
		t.Errorf("released ENI %s still exists: %v", second.ENI, err)
	}
	st, _ := p.statsNow()
	if st.avail != 5 {
		t.Errorf("%d free addresses after shrinking, want 5 (one warm ENI)", st.avail)
	}
	e.checkMatchesEC2(t, p)
}

func TestCooldown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "t3.medium")
	p := e.started(t, func(c *Config) { c.Targets = &Targets{WarmIP: 1}; c.Cooldown = 30 * time.Second })
	e.settle(t, p)
	a := e.allocate(t, p, "c1")
	if err := p.Release(t.Context(), key("c1")); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Allocate(t.Context(), key("c2"), PodMeta{}); err == nil && got.Addr == a.Addr {
		t.Fatalf("address %s handed out again within the cooldown", a.Addr)
	} else if err != nil && !errors.Is(err, ErrPoolGrowing) {
		t.Fatalf("Allocate during cooldown = %v, want ErrPoolGrowing", err)
	}
	e.clock.Advance(31 * time.Second)
	got, err := p.Allocate(t.Context(), key("c3"), PodMeta{})
	if err != nil || got.Addr != a.Addr {
		t.Errorf("after the cooldown: %+v, %v; want %s back", got, err, a.Addr)
	}
}

func TestPrefixMode(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "m5.large") // 3 ENIs × 10 slots
	p := e.started(t, func(c *Config) { c.PrefixDelegation = true })
	e.settle(t, p)
	_, enis := e.ec2Addrs(t)
	if n := len(enis[0].IPv4Prefixes); n != 1 {
		t.Fatalf("%d prefixes with WARM_PREFIX_TARGET=1 and no pods, want 1", n)
	}
	pfx := enis[0].IPv4Prefixes[0]
	var got []string
	for i := range 16 {
		a := e.allocate(t, p, fmt.Sprint("c", i))
		if i < 16 && !pfx.Contains(a.Addr) {
			t.Errorf("allocation %d: %s is not from %s", i, a.Addr, pfx)
		}
		got = append(got, a.Addr.String())
	}
	if !slices.Contains(got, pfx.Addr().String()) {
		t.Errorf("the prefix's first address %s was never handed out: every address of a prefix is usable", pfx.Addr())
	}
	e.settle(t, p)
	st, _ := p.statsNow()
	if st.wholeFreePrefixes != 1 || st.avail != 16 {
		t.Errorf("after 16 pods: %+v, want one whole free prefix", st)
	}
	e.checkMatchesEC2(t, p)
}

func TestPrefixFallback(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "m5.large")
	if _, err := e.model.Fragment(e.subnets[0]); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	p := e.started(t, func(c *Config) { c.PrefixDelegation = true; c.Registerer = reg })
	e.settle(t, p)
	a := e.allocate(t, p, "c1")
	if !hasWarning(e.health, "IPAMPrefixFallback") {
		t.Error("no IPAMPrefixFallback signal")
	}
	if n := testutil.ToFloat64(p.metrics.fallbacks); n < 1 {
		t.Errorf("fallback metric = %v", n)
	}
	_, enis := e.ec2Addrs(t)
	if len(enis[0].IPv4Prefixes) != 0 || len(enis[0].PrivateIPs) < 2 {
		t.Errorf("primary ENI %+v: want secondary addresses and no prefix", enis[0])
	}
	st, _ := p.statsNow()
	if st.avail < prefixSize-1 {
		t.Errorf("fallback keeps %d free, want a prefix's worth", st.avail)
	}
	if a.Addr == enis[0].PrimaryIP() {
		t.Error("handed out the primary address")
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(""), "autonode_ipam_addresses"); err == nil {
		t.Error("no address gauges registered")
	}
}

func TestWarmTargets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typ                  string
		prefix               bool
		wENI, wIP, min, wPfx int
		pods                 int
		free, enis           int
	}{
		// t3.medium: 5 secondary addresses per ENI.
		{"t3.medium", false, 1, 0, 0, 0, 0, 5, 1},
		{"t3.medium", false, 1, 0, 0, 0, 3, 7, 2},
		{"t3.medium", false, 1, 0, 0, 0, 7, 8, 3},
		{"t3.medium", false, 2, 0, 0, 0, 0, 10, 2},
		{"t3.medium", false, 1, 1, 1, 0, 0, 1, 1},  // WARM_IP overrides WARM_ENI
		{"t3.medium", false, 0, 2, 5, 0, 0, 5, 1},  // MINIMUM_IP is the floor
		{"t3.medium", false, 0, 2, 5, 0, 5, 2, 2},  // then WARM_IP above the pods
		{"t3.medium", false, 0, 3, 0, 0, 12, 3, 3}, // 15 addresses on 3 ENIs
		// m5.large with prefixes: 9 prefixes per ENI.
		{"m5.large", true, 0, 0, 0, 1, 0, 16, 1},
		{"m5.large", true, 0, 0, 0, 1, 5, 27, 1},
		{"m5.large", true, 0, 0, 0, 1, 16, 16, 1},
		{"m5.large", true, 0, 0, 0, 1, 17, 31, 1},
		{"m5.large", true, 0, 0, 0, 2, 0, 32, 1},
		{"m5.large", true, 0, 1, 1, 0, 5, 11, 1},
		{"m5.large", true, 0, 7, 20, 0, 0, 32, 1},
		{"m5.large", true, 0, 7, 20, 0, 17, 15, 1},
		{"m5.large", true, 0, 5, 10, 0, 15, 17, 1},
		{"m5.large", true, 0, 0, 0, 1, 150, 26, 2}, // 11 prefixes: the second ENI
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s/prefix=%v/eni=%d,ip=%d,min=%d,pfx=%d/pods=%d", tt.typ, tt.prefix, tt.wENI, tt.wIP, tt.min, tt.wPfx, tt.pods)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tt.typ)
			p := e.started(t, func(c *Config) {
				c.PrefixDelegation = tt.prefix
				c.Targets = &Targets{WarmENI: tt.wENI, WarmIP: tt.wIP, MinimumIP: tt.min, WarmPrefix: tt.wPfx}
			})
			e.settle(t, p)
			for i := range tt.pods {
				e.allocate(t, p, fmt.Sprint("c", i))
			}
			e.settle(t, p)
			st, enis := p.statsNow()
			if st.avail != tt.free || enis != tt.enis {
				t.Errorf("free %d on %d ENIs, want %d on %d (%+v)", st.avail, enis, tt.free, tt.enis, st)
			}
			e.checkMatchesEC2(t, p)
		})
	}
}

func TestCheckpointRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "t3.medium")
	p := e.started(t, nil)
	e.settle(t, p)
	var want []Allocation
	for i := range 7 { // spans two ENIs
		want = append(want, e.allocate(t, p, fmt.Sprint("c", i)))
	}
	slices.SortFunc(want, func(a, b Allocation) int { return a.Addr.Compare(b.Addr) })

	q := e.started(t, nil) // a restarted agent on the same checkpoint and VPC
	if got := q.List(); !slices.Equal(got, want) {
		t.Errorf("after restart:\n got %+v\nwant %+v", got, want)
	}
	entries, err := os.ReadDir(filepath.Dir(q.cfg.CheckpointPath))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("checkpoint directory holds %v, want only the checkpoint (no temporary files)", entries)
	}
	data, _ := os.ReadFile(q.cfg.CheckpointPath)
	if c, err := decodeCheckpoint(data); err != nil || len(c.Allocations) != 7 {
		t.Errorf("checkpoint: %d allocations, %v", len(c.Allocations), err)
	}
}

func TestCorruptCheckpoint(t *testing.T) {
	t.Parallel()
	for _, runtimeKnowsAddrs := range []bool{true, false} {
		t.Run(fmt.Sprint("runtimeKnowsAddresses=", runtimeKnowsAddrs), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, "t3.medium")
			p := e.started(t, nil)
			e.settle(t, p)
			live := e.allocate(t, p, "live")
			gone := e.allocate(t, p, "gone")
			e.live.set("gone", false)
			e.live.addrs = map[Key]netip.Addr{live.Key: live.Addr, gone.Key: gone.Addr}
			if err := os.WriteFile(p.cfg.CheckpointPath, []byte(`{"version":1,"allocations":[{"containerID":`), 0o600); err != nil {
				t.Fatal(err)
			}
			q := e.started(t, func(c *Config) {
				if runtimeKnowsAddrs {
					c.Sandboxes = withAddresses{e.live}
				}
			})
			matches, _ := filepath.Glob(p.cfg.CheckpointPath + ".corrupt-*")
			if len(matches) != 1 {
				t.Errorf("corrupt checkpoint kept aside as %v, want one file", matches)
			}
			if !hasWarning(e.health, "IPAMCheckpointCorrupt") {
				t.Error("no IPAMCheckpointCorrupt signal")
			}
			e.settle(t, q)
			if runtimeKnowsAddrs {
				if got, ok := q.Get(live.Key); !ok || got.Addr != live.Addr {
					t.Errorf("live pod: %+v, %v; want its address %s back", got, ok, live.Addr)
				}
			}
			// Whatever the runtime knows, the live pod's address is never
			// handed to another pod.
			for i := range 3 {
				if a := e.allocate(t, q, fmt.Sprint("new", i)); a.Addr == live.Addr {
					t.Fatalf("live pod's address %s handed out again", live.Addr)
				}
			}
			e.live.set("live", false)
			e.settle(t, q)
			if st, _ := q.statsNow(); st.held != 0 {
				t.Errorf("%d addresses still held after the live pod left", st.held)
			}
			e.checkMatchesEC2(t, q)
		})
	}
}

func TestReconcileWithRuntimeAndEC2(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "t3.medium")
	p := e.started(t, func(c *Config) { c.Targets = &Targets{WarmIP: 2} })
	e.settle(t, p)
	keep := e.allocate(t, p, "keep")
	gone := e.allocate(t, p, "gone")
	e.live.set("gone", false)

	// A leaked ENI of ours, and one of another node, both unattached.
	mk := func(instance string) string {
		out, err := e.ec2.CreateNetworkInterface(t.Context(), &sdkec2.CreateNetworkInterfaceInput{
			SubnetId: aws.String(e.subnets[0]),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface,
				Tags: []types.Tag{{Key: aws.String(TagInstanceID), Value: aws.String(instance)}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.NetworkInterface.NetworkInterfaceId)
	}
	ours, theirs := mk(e.inst.ID), mk("i-0someothernode")
	// An address assigned behind the pool's back (a crash between assign and
	// record), and one taken away from under an allocation.
	primary := e.inst.ENIIDs[0]
	extra, err := e.ec2.AssignPrivateIpAddresses(t.Context(), &sdkec2.AssignPrivateIpAddressesInput{
		NetworkInterfaceId: aws.String(primary), SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	adopted := netip.MustParseAddr(aws.ToString(extra.AssignedPrivateIpAddresses[0].PrivateIpAddress))
	if _, err := e.ec2.UnassignPrivateIpAddresses(t.Context(), &sdkec2.UnassignPrivateIpAddressesInput{
		NetworkInterfaceId: aws.String(keep.ENI), PrivateIpAddresses: []string{keep.Addr.String()}}); err != nil {
		t.Fatal(err)
	}

	e.clock.Advance(10 * time.Minute) // a resync is due
	if err := p.reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Get(gone.Key); ok {
		t.Error("gone pod kept its address")
	}
	if _, ok := p.Get(keep.Key); ok {
		t.Error("allocation whose address EC2 took away was kept")
	}
	p.mu.Lock()
	s := p.slots[adopted]
	p.mu.Unlock()
	if s == nil || s.alloc != nil {
		t.Errorf("address %s assigned on EC2 was not adopted as free", adopted)
	}
	if _, err := e.model.ENI(ours); !errors.Is(err, vpc.ErrNotFound) {
		t.Errorf("leaked ENI of ours %s not deleted: %v", ours, err)
	}
	if _, err := e.model.ENI(theirs); err != nil {
		t.Errorf("another node's ENI %s was touched: %v", theirs, err)
	}
	e.settle(t, p)
	e.checkMatchesEC2(t, p)
}

func TestChurnLeaksNothing(t *testing.T) {
	t.Parallel()
	for _, prefix := range []bool{false, true} {
		t.Run(fmt.Sprint("prefix=", prefix), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, "m5.large")
			p := e.started(t, func(c *Config) {
				c.PrefixDelegation = prefix
				c.Targets = &Targets{WarmIP: 3, MinimumIP: 4}
				c.Cooldown = 5 * time.Second
			})
			e.settle(t, p)
			var live []Key
			for i := range 200 {
				a := e.allocate(t, p, fmt.Sprint("c", i))
				live = append(live, a.Key)
				if len(live) > 10 { // ten pods at a time: release the oldest
					if err := p.Release(t.Context(), live[0]); err != nil {
						t.Fatal(err)
					}
					e.live.set(live[0].ContainerID, false)
					live = live[1:]
				}
				e.clock.Advance(time.Second)
				if i%10 == 9 {
					e.settle(t, p)
				}
			}
			for _, k := range live {
				if err := p.Release(t.Context(), k); err != nil {
					t.Fatal(err)
				}
			}
			e.clock.Advance(time.Minute)
			e.settle(t, p)
			if n := len(p.List()); n != 0 {
				t.Errorf("%d allocations left", n)
			}
			e.checkMatchesEC2(t, p)
			st, _ := p.statsNow()
			if st.total > 16+4 {
				t.Errorf("pool kept %d addresses after churn, want about its minimum", st.total)
			}
		})
	}
}

func TestCloudFaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "t3.medium")
	for _, action := range []string{"DescribeNetworkInterfaces", "DescribeInstanceTypes", "DescribeSubnets", "CreateNetworkInterface",
		"AttachNetworkInterface", "ModifyNetworkInterfaceAttribute", "AssignPrivateIpAddresses", "UnassignPrivateIpAddresses",
		"DetachNetworkInterface", "DeleteNetworkInterface"} {
		e.srv.SetFault(action, ec2emu.Fault{ThrottleFraction: 0.4, ServerErrorFraction: 0.3})
	}
	p, err := New(e.config(func(c *Config) {
		c.Now = nil // Run's own timers
		c.ReconcileInterval = 5 * time.Millisecond
		c.ShrinkDelay = time.Millisecond
		c.Cooldown = time.Millisecond
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	// Eventually 8 pods fit (two ENIs' worth, some created under faults),
	// and releasing them shrinks the pool again.
	deadline := time.Now().Add(time.Minute)
	var keys []Key
	for len(keys) < 8 && time.Now().Before(deadline) {
		k := key(fmt.Sprint("c", len(keys)))
		if _, err := p.Allocate(ctx, k, PodMeta{}); err == nil {
			keys = append(keys, k)
			e.live.set(k.ContainerID, true)
		} else if !errors.Is(err, ErrPoolGrowing) && !errors.Is(err, ErrNotReady) {
			t.Fatalf("Allocate = %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if len(keys) < 8 {
		t.Fatalf("only %d allocations succeeded under faults", len(keys))
	}
	if e.srv.Calls("AssignPrivateIpAddresses") <= 2 {
		t.Error("no retries seen")
	}
	for _, k := range keys {
		if err := p.Release(ctx, k); err != nil {
			t.Fatal(err)
		}
		e.live.set(k.ContainerID, false)
	}
	for time.Now().Before(deadline) {
		if _, enis := e.ec2Addrs(t); len(enis) == 1 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, enis := e.ec2Addrs(t); len(enis) != 1 {
		t.Errorf("%d ENIs after all pods left under faults, want 1", len(enis))
	}
}

func describe(t *testing.T, e *env, id string) types.NetworkInterface {
	t.Helper()
	out, err := e.ec2.DescribeNetworkInterfaces(t.Context(), &sdkec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}})
	if err != nil || len(out.NetworkInterfaces) != 1 {
		t.Fatalf("DescribeNetworkInterfaces(%s) = %v, %v", id, out, err)
	}
	return out.NetworkInterfaces[0]
}

func TestExhaustion(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "t3.medium") // 3 ENIs × 5 pod addresses
	p := e.started(t, nil)
	e.settle(t, p)
	for i := range 15 {
		e.allocate(t, p, fmt.Sprint("c", i))
	}
	e.settle(t, p)
	if _, err := p.Allocate(t.Context(), key("one-too-many"), PodMeta{}); !errors.Is(err, ErrExhausted) {
		t.Errorf("Allocate beyond the limits = %v, want ErrExhausted", err)
	}
	if err := p.CanAllocate(); !errors.Is(err, ErrExhausted) {
		t.Errorf("CanAllocate = %v, want ErrExhausted", err)
	}
	if !hasWarning(e.health, "IPAMExhausted") {
		t.Error("no IPAMExhausted signal")
	}
	if err := p.Release(t.Context(), key("c0")); err != nil {
		t.Fatal(err)
	}
	if err := p.CanAllocate(); err != nil {
		t.Errorf("CanAllocate with an address cooling = %v, want nil", err)
	}
}
