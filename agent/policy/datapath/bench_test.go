package datapath

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/autonode/autonode/agent/policy/compute"
	"github.com/autonode/autonode/sandbox/netnspod"
	"github.com/autonode/autonode/sandbox/privileged"
)

// benchRules is the 1,000-rule policy of the benchmark: 999 other /32 peers, each with its own TCP port, and the
// peer under test last.
func benchRules(peer netip.Addr, port uint16) []compute.Entry {
	var out []compute.Entry
	for i := range 999 {
		out = append(out, compute.Entry{CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)}), 32),
			Protocol: compute.ProtocolTCP, PortStart: uint16(10000 + i), PortEnd: uint16(10000 + i)})
	}
	return append(out, compute.Entry{CIDR: netip.PrefixFrom(peer, 32), Protocol: compute.ProtocolTCP, PortStart: port, PortEnd: port})
}

// vethBench is a client pod and a server pod with one open TCP connection between them, and the ways to filter it.
type vethBench struct {
	d      *Datapath
	a, b   *netnspod.Pod
	rr     net.Conn // to b's echo server
	stream net.Conn // to b's discard server
}

const benchPort = 7000

func newVethBench(t *testing.B) *vethBench {
	privileged.Require(t, privileged.BPF, privileged.NetAdmin)
	v := &vethBench{d: openTest(t, Config{Logger: slog.New(slog.DiscardHandler)})}
	v.a, v.b = twoPods(t)
	echoServer(t, v.b, benchPort)
	var ln net.Listener
	if err := v.b.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(v.b.Addr, benchPort+1).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	for i, c := range []*net.Conn{&v.rr, &v.stream} {
		if err := v.a.Do(func() (err error) {
			*c, err = net.Dial("tcp4", netip.AddrPortFrom(v.b.Addr, uint16(benchPort+i)).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { (*c).Close() })
	}
	return v
}

// none removes every filter.
func (v *vethBench) none(b *testing.B) {
	for _, p := range []*netnspod.Pod{v.a, v.b} {
		if err := v.d.Remove(context.Background(), p.HostVeth); err != nil {
			b.Fatal(err)
		}
	}
}

// bpf programs both pods: a may reach b's two ports (and 999 other peers), b accepts a on them (and 999 other
// peers); both are isolated both ways, so every packet is checked and replies pass through conntrack.
func (v *vethBench) bpf(b *testing.B) {
	ctx := context.Background()
	aRules := append(benchRules(v.b.Addr, benchPort), compute.Entry{CIDR: netip.PrefixFrom(v.b.Addr, 32), Protocol: compute.ProtocolTCP, PortStart: benchPort + 1, PortEnd: benchPort + 1})
	bRules := append(benchRules(v.a.Addr, benchPort), compute.Entry{CIDR: netip.PrefixFrom(v.a.Addr, 32), Protocol: compute.ProtocolTCP, PortStart: benchPort + 1, PortEnd: benchPort + 1})
	for _, r := range []PodRules{
		{HostIf: v.a.HostVeth, Namespace: "bench", Name: "a", IP: v.a.Addr,
			Ingress: compute.Direction{Isolated: true, Entries: benchRules(netip.MustParseAddr("10.101.0.1"), 1)},
			Egress:  compute.Direction{Isolated: true, Entries: aRules}},
		{HostIf: v.b.HostVeth, Namespace: "bench", Name: "b", IP: v.b.Addr,
			Ingress: compute.Direction{Isolated: true, Entries: bRules},
			Egress:  compute.Direction{Isolated: true, Entries: benchRules(netip.MustParseAddr("10.101.0.1"), 1)}},
	} {
		if err := v.d.Program(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

// iptables installs the same policy as iptables rules (Debian's iptables, nf_tables backend) in chains of its
// own, jumped to from FORWARD for the two veths only, with the usual conntrack ESTABLISHED accept first. It
// returns the function that removes them.
func (v *vethBench) iptables(b *testing.B) func() {
	var id [4]byte
	_, _ = rand.Read(id[:])
	chain := "ANBENCH-" + strings.ToUpper(hex.EncodeToString(id[:]))
	var rules strings.Builder
	fmt.Fprintf(&rules, "*filter\n:%s-A - [0:0]\n:%s-B - [0:0]\n", chain, chain)
	// a's egress: packets arriving from a's veth; b's ingress: packets leaving to b's veth.
	for _, c := range []struct {
		name, match string
		peer        netip.Addr
		dir         string
	}{{chain + "-A", "-i " + v.a.HostVeth, v.b.Addr, "-d"}, {chain + "-B", "-o " + v.b.HostVeth, v.a.Addr, "-s"}} {
		fmt.Fprintf(&rules, "-A FORWARD %s -j %s\n", c.match, c.name)
		fmt.Fprintf(&rules, "-A %s -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n", c.name)
		for _, e := range benchRules(c.peer, benchPort) {
			fmt.Fprintf(&rules, "-A %s %s %s -p tcp --dport %d -j ACCEPT\n", c.name, c.dir, e.CIDR, e.PortStart)
		}
		fmt.Fprintf(&rules, "-A %s %s %s/32 -p tcp --dport %d -j ACCEPT\n", c.name, c.dir, c.peer, benchPort+1)
		fmt.Fprintf(&rules, "-A %s -j DROP\n", c.name)
	}
	rules.WriteString("COMMIT\n")
	cmd := exec.Command("iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(rules.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("iptables-restore: %v: %s", err, out)
	}
	return func() {
		for _, c := range []struct{ name, match string }{{chain + "-A", "-i " + v.a.HostVeth}, {chain + "-B", "-o " + v.b.HostVeth}} {
			for _, args := range [][]string{
				append(append([]string{"-D", "FORWARD"}, strings.Fields(c.match)...), "-j", c.name),
				{"-F", c.name}, {"-X", c.name},
			} {
				if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
					b.Errorf("iptables %v: %v: %s", args, err, out)
				}
			}
		}
	}
}

func rrLoop(b *testing.B, c net.Conn) {
	buf := []byte{1}
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func streamLoop(b *testing.B, c net.Conn) {
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVeth measures TCP across a veth pair between two netns pods, request/response (one byte each way per
// op) and throughput (64 KiB writes), in three set-ups measured in the same run: no filter, the 1,000-rule policy
// in the BPF programs on both veths, and the same rules in iptables (nf_tables backend). Pairs for benchratio:
// bpf-vs-none (autonode: BPF, baseline: no filter) and bpf-vs-iptables (autonode: BPF, baseline: iptables).
func BenchmarkVeth(b *testing.B) {
	v := newVethBench(b)
	for _, w := range []struct {
		name string
		conn net.Conn
		loop func(*testing.B, net.Conn)
	}{{"rr", v.rr, rrLoop}, {"stream", v.stream, streamLoop}} {
		b.Run(w.name+"/bpf-vs-none/baseline", func(b *testing.B) { v.none(b); w.loop(b, w.conn) })
		b.Run(w.name+"/bpf-vs-none/autonode", func(b *testing.B) { v.bpf(b); w.loop(b, w.conn); v.none(b) })
		b.Run(w.name+"/bpf-vs-iptables/baseline", func(b *testing.B) {
			v.none(b)
			undo := v.iptables(b)
			defer undo()
			w.loop(b, w.conn)
		})
		b.Run(w.name+"/bpf-vs-iptables/autonode", func(b *testing.B) { v.bpf(b); w.loop(b, w.conn); v.none(b) })
	}
}

// BenchmarkProgram times one run of the programs on one packet with BPF_PROG_TEST_RUN (the kernel's own clock,
// over b.N repeats), on a pod with the 1,000-rule policy in both directions: the cost per packet, without the rest
// of the stack around it.
func BenchmarkProgram(b *testing.B) {
	privileged.Require(b, privileged.BPF, privileged.NetAdmin)
	d := openTest(b, Config{Logger: slog.New(slog.DiscardHandler)})
	name, idx := dummyLink(b)
	peer := netip.MustParseAddr("10.9.0.1")
	if err := d.Program(context.Background(), PodRules{HostIf: name, IP: addr(podStr),
		Ingress: compute.Direction{Isolated: true, Entries: benchRules(peer, 80)},
		Egress:  compute.Direction{Isolated: true, Entries: benchRules(peer, 443)}}); err != nil {
		b.Fatal(err)
	}
	if _, err := runProgram(d.objs.FromPod, idx, tcpPkt(podStr, "10.9.0.1", 40000, 443, tcpSYN).bytes()); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		prog *ebpf.Program
		pkt  packet
	}{
		{"new-flow-allowed", d.objs.CheckFromPod, tcpPkt(podStr, "10.9.0.1", 40001, 443, tcpSYN)},
		{"new-flow-denied", d.objs.CheckFromPod, tcpPkt(podStr, "10.9.0.1", 40001, 444, tcpSYN)},
		{"established-forward", d.objs.FromPod, tcpPkt(podStr, "10.9.0.1", 40000, 443, tcpACK)},
		{"established-reply", d.objs.ToPod, tcpPkt("10.9.0.1", podStr, 443, 40000, tcpACK)},
	} {
		b.Run(c.name, func(b *testing.B) {
			pkt := c.pkt.bytes()
			_, per, err := c.prog.Benchmark(pkt, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/packet")
		})
	}
}

// BenchmarkConntrackSweep times one sweep of a full default-size connection tracker (512K live flows, none to
// delete): the cost Run pays every GCInterval.
func BenchmarkConntrackSweep(b *testing.B) {
	privileged.Require(b, privileged.BPF, privileged.NetAdmin)
	d := openTest(b, Config{ConntrackSize: DefaultConntrackSize, Logger: slog.New(slog.DiscardHandler)})
	name, idx := dummyLink(b)
	if err := d.Program(context.Background(), testRules(name)); err != nil {
		b.Fatal(err)
	}
	var pod policyPod
	if err := d.objs.ApPods.Lookup(idx, &pod); err != nil {
		b.Fatal(err)
	}
	keys := make([]policyCtKey, DefaultConntrackSize)
	vals := make([]policyCtVal, DefaultConntrackSize)
	for i := range keys {
		keys[i] = policyCtKey{Ifindex: idx, Family: 4, Proto: 6, Sport: uint16(i), Dport: uint16(i >> 16)}
		vals[i] = policyCtVal{Cookie: pod.Cookie, ExpiresNs: monoNow() + uint64(3600e9)}
	}
	if _, err := d.objs.ApCt.BatchUpdate(keys, vals, nil); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if err := d.sweep(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// An LRU map starts evicting a little before it is full (its free lists are per CPU).
	if got := d.ctEntries.Load(); got < DefaultConntrackSize*99/100 {
		b.Fatalf("sweep counted %d flows, want about %d", got, DefaultConntrackSize)
	}
}
