package datapath

import (
	"context"
	"errors"
	"math/bits"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/autonode/autonode/agent/policy/compute"
	"github.com/autonode/autonode/sandbox/bpffs"
	"github.com/autonode/autonode/sandbox/privileged"
)

func testRules(hostIf string) PodRules {
	return PodRules{HostIf: hostIf, Namespace: "team", Name: "web-0", IP: addr(podStr),
		Ingress: compute.Direction{Isolated: true, Entries: []compute.Entry{
			entry("10.2.0.0/16", tcp, 80, 80), entry("10.2.3.4/32", udp, 53, 53)}},
		Egress: compute.Direction{Isolated: true, Entries: []compute.Entry{entry("10.9.0.0/24", tcp, 443, 443)}},
	}
}

// linkProgram returns the program id a pinned TCX link runs, and the ifindex it is attached to.
func linkProgram(t *testing.T, pin string) (ebpf.ProgramID, uint32) {
	t.Helper()
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		t.Fatalf("loading link pin %s: %v", pin, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatalf("link info of %s: %v", pin, err)
	}
	return info.Program, info.TCX().Ifindex
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

// TestAdoption: rules and tracked flows outlive Close; a second Open adopts them and switches the pinned links to
// its own programs; Reconcile removes the pods not kept.
func TestAdoption(t *testing.T) {
	privileged.Require(t, privileged.BPF, privileged.NetAdmin)
	ctx := context.Background()
	root := bpffs.PinRoot(t)
	name, idx := dummyLink(t)
	gone, goneIdx := dummyLink(t)

	d1 := openTest(t, Config{PinRoot: root})
	rules := testRules(name)
	if err := d1.Program(ctx, rules); err != nil {
		t.Fatalf("Program: %v", err)
	}
	if err := d1.Program(ctx, testRules(gone)); err != nil {
		t.Fatalf("Program: %v", err)
	}
	if !d1.send(t, idx, Egress, tcpPkt(podStr, "10.9.0.1", 40000, 443, tcpSYN)) {
		t.Fatal("egress SYN denied")
	}
	pin := filepath.Join(root, "links", name+"_from_pod")
	old := progID(t, d1.objs.FromPod)
	if got, ifindex := linkProgram(t, pin); got != old || ifindex != idx {
		t.Fatalf("pinned link runs program %d on %d, want %d on %d", got, ifindex, old, idx)
	}
	want, err := d1.Dump(name)
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	if err := d1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, _ := linkProgram(t, pin); got != old {
		t.Fatalf("after Close the link runs program %d, want %d still", got, old)
	}

	d2 := openTest(t, Config{PinRoot: root})
	if got, ifindex := linkProgram(t, pin); got != progID(t, d2.objs.FromPod) || got == old || ifindex != idx {
		t.Fatalf("after a second Open the link runs program %d on %d, want the new %d on %d", got, ifindex, progID(t, d2.objs.FromPod), idx)
	}
	got, err := d2.Dump(name)
	if err != nil {
		t.Fatalf("Dump after adoption: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Dump after adoption = %+v, want %+v", got, want)
	}
	runSteps(t, d2, idx, []step{
		{"adopted rule", Ingress, tcpPkt("10.2.0.9", podStr, 1, 80, tcpSYN), false, ReasonPolicy},
		{"adopted deny", Ingress, tcpPkt("10.2.0.9", podStr, 1, 81, tcpSYN), false, ReasonNoRule},
		{"adopted flow", Ingress, tcpPkt("10.9.0.1", podStr, 443, 40000, tcpSYN|tcpACK), false, ReasonReply},
	})
	// A read-only open (the CLI's) sees the same state and changes nothing.
	ro := openTest(t, Config{PinRoot: root, ReadOnly: true, ConntrackSize: 1 << 20})
	if got, err := ro.Dump(name); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("read-only Dump = %+v, %v; want %+v", got, err, want)
	}
	if v, err := ro.Check(ctx, name, Ingress, Flow{Peer: addr("10.2.0.9"), Protocol: tcp, Port: 80}); err != nil || v.Reason != ReasonPolicy {
		t.Errorf("read-only Check = %v, %v", v, err)
	}
	if err := ro.Program(ctx, rules); err == nil {
		t.Error("read-only Program succeeded")
	}
	if got, _ := linkProgram(t, pin); got != progID(t, d2.objs.FromPod) {
		t.Errorf("a read-only open moved the link to program %d", got)
	}
	if _, err := Open(ctx, Config{PinRoot: filepath.Join(root, "nothing-here"), ReadOnly: true}); err == nil {
		t.Error("read-only Open of an empty pin root succeeded")
	}

	// Reprogramming after adoption replaces the adopted version, and the old one goes.
	rules.Ingress.Entries = rules.Ingress.Entries[:1]
	if err := d2.Program(ctx, rules); err != nil {
		t.Fatalf("Program after adoption: %v", err)
	}
	runSteps(t, d2, idx, []step{{"narrowed", Ingress, udpPkt("10.2.3.4", podStr, 1, 53), false, ReasonNoRule}})

	// The veth of the second pod goes away without a CNI DEL; Reconcile drops its state.
	if l, err := netlink.LinkByIndex(int(goneIdx)); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := d2.Reconcile(ctx, []string{name}); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if _, err := d2.Dump(gone); !errors.Is(err, ErrNotFound) {
		t.Errorf("Dump of a reconciled pod: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(filepath.Join(root, "links", gone+"_to_pod")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("link pin of a reconciled pod: %v", err)
	}
	if _, err := d2.Dump(name); err != nil {
		t.Errorf("Dump of a kept pod: %v", err)
	}
	d2.mu.Lock()
	for vk := range d2.idx.cur {
		if vk.ifindex == goneIdx {
			t.Errorf("rules of the reconciled pod remain: %+v", vk)
		}
	}
	d2.mu.Unlock()
}

// TestRemoveBoundsState: add and remove pods, reprogram them, and check that pins, pod records and rule entries
// return to where they started.
func TestRemoveBoundsState(t *testing.T) {
	d := openTest(t, Config{})
	ctx := context.Background()
	before, entries := countFiles(d.cfg.PinRoot), d.ruleEntries()
	for range 20 {
		name, _ := dummyLink(t)
		for range 3 {
			if err := d.Program(ctx, testRules(name)); err != nil {
				t.Fatalf("Program: %v", err)
			}
		}
		if err := d.Remove(ctx, name); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if err := d.Remove(ctx, name); err != nil {
			t.Fatalf("second Remove: %v", err)
		}
	}
	d.reaper.Wait()
	pods, err := d.pods()
	if err != nil {
		t.Fatal(err)
	}
	if got := countFiles(d.cfg.PinRoot); got != before || len(pods) != 0 || d.ruleEntries() != entries {
		t.Errorf("after churn: %d pins (was %d), %d pods, %d rule entries (was %d)", got, before, len(pods), d.ruleEntries(), entries)
	}
	var k policyRuleKey
	var v policyRuleVal
	if it := d.objs.ApRules.Iterate(); it.Next(&k, &v) {
		t.Errorf("ap_rules still holds %+v", k)
	}
}

// TestClsactFallback attaches with clsact filters, adopts them on a second Open, and detaches on Remove.
func TestClsactFallback(t *testing.T) {
	privileged.Require(t, privileged.BPF, privileged.NetAdmin)
	ctx := context.Background()
	root := bpffs.PinRoot(t)
	name, idx := dummyLink(t)
	d1 := openTest(t, Config{PinRoot: root, Attach: AttachTC})
	if err := d1.Program(ctx, testRules(name)); err != nil {
		t.Fatalf("Program: %v", err)
	}
	filterProg := func() []int {
		t.Helper()
		var ids []int
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			fs, err := netlink.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: int(idx)}}, parent)
			if err != nil {
				t.Fatalf("listing filters: %v", err)
			}
			for _, f := range fs {
				if bf, ok := f.(*netlink.BpfFilter); ok {
					ids = append(ids, bf.Id)
				}
			}
		}
		return ids
	}
	first := filterProg()
	if len(first) != 2 || first[0] != int(progID(t, d1.objs.FromPod)) {
		t.Fatalf("filters run programs %v, want from_pod %d and to_pod", first, progID(t, d1.objs.FromPod))
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "links")); len(entries) != 0 {
		t.Errorf("clsact mode pinned links: %v", entries)
	}
	d1.Close()
	d2 := openTest(t, Config{PinRoot: root, Attach: AttachTC})
	if got := filterProg(); len(got) != 2 || got[0] != int(progID(t, d2.objs.FromPod)) {
		t.Fatalf("after adoption filters run %v, want %d first", got, progID(t, d2.objs.FromPod))
	}
	if err := d2.Remove(ctx, name); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if got := filterProg(); len(got) != 0 {
		t.Errorf("filters left after Remove: %v", got)
	}
}

// TestConntrackSweep: the sweep deletes expired flows and flows of removed pods, and keeps live ones.
func TestConntrackSweep(t *testing.T) {
	d := openTest(t, Config{})
	ctx := context.Background()
	name, idx := dummyLink(t)
	if err := d.Program(ctx, testRules(name)); err != nil {
		t.Fatalf("Program: %v", err)
	}
	for _, port := range []uint16{40000, 40001} {
		if !d.send(t, idx, Egress, tcpPkt(podStr, "10.9.0.1", port, 443, tcpSYN)) {
			t.Fatal("egress SYN denied")
		}
	}
	key := func(port uint16) policyCtKey {
		k := policyCtKey{Ifindex: idx, Dir: uint8(Egress), Family: 4, Proto: 6, Sport: bits.ReverseBytes16(port), Dport: bits.ReverseBytes16(443)}
		copy(k.Saddr[:], addr(podStr).AsSlice())
		copy(k.Daddr[:], addr("10.9.0.1").AsSlice())
		return k
	}
	var v policyCtVal
	if err := d.objs.ApCt.Lookup(key(40001), &v); err != nil {
		t.Fatalf("flow not tracked: %v", err)
	}
	v.ExpiresNs = monoNow() - 1 // idle past its timeout
	if err := d.objs.ApCt.Put(key(40001), v); err != nil {
		t.Fatal(err)
	}
	if err := d.sweep(ctx); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if err := d.objs.ApCt.Lookup(key(40000), &v); err != nil {
		t.Errorf("live flow swept: %v", err)
	}
	if err := d.objs.ApCt.Lookup(key(40001), &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("expired flow kept: %v", err)
	}
	runSteps(t, d, idx, []step{
		{"live reply", Ingress, tcpPkt("10.9.0.1", podStr, 443, 40000, tcpACK), false, ReasonReply},
		{"expired reply", Ingress, tcpPkt("10.9.0.1", podStr, 443, 40001, tcpACK), false, ReasonNoRule},
	})
	if d.ctEntries.Load() != 1 {
		t.Errorf("conntrack fill %d, want 1", d.ctEntries.Load())
	}
	// A removed pod's flows are no longer replies, even if a new pod gets the same ifindex, and the sweep
	// deletes them.
	if err := d.Remove(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := d.sweep(ctx); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if err := d.objs.ApCt.Lookup(key(40000), &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("flow of a removed pod kept: %v", err)
	}
}

// TestEvents: denials reach the ring buffer with their pod, allows only with EmitAllows, and the rate limit drops
// and counts what exceeds the bucket.
func TestEvents(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := openTest(t, Config{EventsPerSecond: 1, EventBurst: 3})
	name, idx := dummyLink(t)
	if err := d.Program(ctx, testRules(name)); err != nil {
		t.Fatalf("Program: %v", err)
	}
	events := d.Events(ctx)
	d.send(t, idx, Ingress, tcpPkt("10.2.0.9", podStr, 1, 80, tcpSYN)) // allowed: no event
	for i := range 10 {
		d.send(t, idx, Ingress, tcpPkt("192.0.2.7", podStr, uint16(1000+i), 22, tcpSYN))
	}
	for i := range 3 {
		var ev Event
		select {
		case ev = <-events:
		case <-time.After(30 * time.Second): // a hang guard, not a timing assertion
			t.Fatalf("event %d never came", i)
		}
		if ev.Verdict.Allowed || ev.Verdict.Reason != ReasonNoRule || ev.HostIf != name || ev.Namespace != "team" ||
			ev.Name != "web-0" || ev.Direction != Ingress || ev.Protocol != 6 ||
			ev.Src != netipAddrPort("192.0.2.7", uint16(1000+i)) || ev.Dst != netipAddrPort(podStr, 22) {
			t.Errorf("event %d = %+v", i, ev)
		}
	}
	stats := d.stats()
	// The bucket holds 3 and refills one a second: unless the ten sends took seven seconds, some were dropped.
	if sent, limited := stats[statEventsSent], stats[statEventsLimited]; sent < 3 || limited < 1 || sent+limited != 10 {
		t.Errorf("events sent %d, rate-limited %d; want 3 (a few more if the machine stalled) and the rest", sent, limited)
	}
	if stats[ReasonNoRule] != 10 || stats[ReasonPolicy] != 1 {
		t.Errorf("packet counters: %d denied, %d allowed", stats[ReasonNoRule], stats[ReasonPolicy])
	}
}

// TestProgramIdempotent: programming the same rules again writes nothing (the version and generation stay), and
// a change flips both directions to a new version.
func TestProgramIdempotent(t *testing.T) {
	d := openTest(t, Config{})
	ctx := context.Background()
	name, idx := dummyLink(t)
	rules := testRules(name)
	record := func() policyPod {
		t.Helper()
		var p policyPod
		if err := d.objs.ApPods.Lookup(idx, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if err := d.Program(ctx, rules); err != nil {
		t.Fatal(err)
	}
	first, entries := record(), d.ruleEntries()
	rules.Name = "renamed"
	if err := d.Program(ctx, rules); err != nil {
		t.Fatal(err)
	}
	if again := record(); again.Ver != first.Ver || again.Gen != first.Gen || cstring(again.Name[:]) != "renamed" || d.ruleEntries() != entries {
		t.Errorf("same rules: version %v gen %v name %q entries %d, want %v %v renamed %d", again.Ver, again.Gen, cstring(again.Name[:]), d.ruleEntries(), first.Ver, first.Gen, entries)
	}
	rules.Egress.Entries = nil
	if err := d.Program(ctx, rules); err != nil {
		t.Fatal(err)
	}
	if changed := record(); changed.Ver == first.Ver || changed.Gen == first.Gen {
		t.Errorf("changed rules kept version %v gen %v", changed.Ver, changed.Gen)
	}
}

// TestConntrackTCPState follows one TCP flow through its states and checks the timeout the programs stamp.
func TestConntrackTCPState(t *testing.T) {
	d := openTest(t, Config{})
	name, idx := dummyLink(t)
	if err := d.Program(context.Background(), testRules(name)); err != nil {
		t.Fatal(err)
	}
	k := policyCtKey{Ifindex: idx, Dir: uint8(Egress), Family: 4, Proto: 6, Sport: bits.ReverseBytes16(40000), Dport: bits.ReverseBytes16(443)}
	copy(k.Saddr[:], addr(podStr).AsSlice())
	copy(k.Daddr[:], addr("10.9.0.1").AsSlice())
	out := func(flags uint8) packet { return tcpPkt(podStr, "10.9.0.1", 40000, 443, flags) }
	in := func(flags uint8) packet { return tcpPkt("10.9.0.1", podStr, 443, 40000, flags) }
	const s = uint64(time.Second)
	for _, c := range []struct {
		name     string
		dir      Direction
		pkt      packet
		min, max uint64 // remaining lifetime
	}{
		{"syn", Egress, out(tcpSYN), 50 * s, 60 * s},
		{"syn-ack", Ingress, in(tcpSYN | tcpACK), 5 * 3600 * s, 6 * 3600 * s},
		{"fin from the pod", Egress, out(tcpFIN | tcpACK), 5 * 3600 * s, 6 * 3600 * s},
		{"fin from the peer", Ingress, in(tcpFIN | tcpACK), 5 * s, 10 * s},
		{"last ack", Egress, out(tcpACK), 5 * s, 10 * s},
		{"new syn on the closed tuple", Egress, out(tcpSYN), 50 * s, 60 * s},
		{"rst", Ingress, in(tcpRST), 5 * s, 10 * s},
	} {
		if !d.send(t, idx, c.dir, c.pkt) {
			t.Fatalf("%s: denied", c.name)
		}
		var v policyCtVal
		if err := d.objs.ApCt.Lookup(k, &v); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if left := v.ExpiresNs - monoNow(); left < c.min || left > c.max {
			t.Errorf("%s: expires in %v, want %v to %v", c.name, time.Duration(left), time.Duration(c.min), time.Duration(c.max))
		}
	}
}

// TestMetrics reads the collectors after programming a pod and sending packets.
func TestMetrics(t *testing.T) {
	d := openTest(t, Config{ConntrackSize: 2048})
	ctx := context.Background()
	name, idx := dummyLink(t)
	if err := d.Program(ctx, testRules(name)); err != nil {
		t.Fatal(err)
	}
	d.send(t, idx, Egress, tcpPkt(podStr, "10.9.0.1", 40000, 443, tcpSYN))
	d.send(t, idx, Egress, tcpPkt(podStr, "10.9.0.1", 40000, 80, tcpSYN))
	if err := d.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(d.Collectors()...)
	for _, c := range []struct {
		name   string
		labels string
		want   float64
	}{
		{"autonode_policy_pins", `kind="link"`, 2},
		{"autonode_policy_pins", `kind="map"`, 9},
		{"autonode_policy_pods", "", 1},
		{"autonode_policy_maps", "", 9},
		{"autonode_policy_conntrack_entries", "", 1},
		{"autonode_policy_conntrack_capacity", "", 2048},
		{"autonode_policy_conntrack_created_total", "", 1},
		{"autonode_policy_packets_total", `reason="policy",verdict="allow"`, 1},
		{"autonode_policy_packets_total", `reason="no-rule",verdict="deny"`, 1},
		{"autonode_policy_flow_events_total", `outcome="sent"`, 1},
	} {
		if got := gathered(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := gathered(t, reg, "autonode_policy_rule_entries", ""); got < 4 {
		t.Errorf("rule entries %v, want at least 4", got)
	}
}

// gathered returns the value of the metric name whose labels, formatted k="v" and sorted, equal labels.
func gathered(t *testing.T, reg *prometheus.Registry, name, labels string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
			}
			if strings.Join(ls, ",") != labels {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s{%s} not found", name, labels)
	return 0
}
