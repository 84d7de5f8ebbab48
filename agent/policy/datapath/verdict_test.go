package datapath

import (
	"context"
	"net/netip"
	"testing"

	"github.com/autonode/autonode/agent/policy/compute"
)

// step is one packet of a verdict table. send steps run the attached program (creating conntrack and fragment
// state, as a real packet would) and check only the verdict; the others run the side-effect-free twin and check
// the exact reason.
type step struct {
	name string
	dir  Direction
	pkt  packet
	send bool
	want Reason
}

func runSteps(t *testing.T, d *Datapath, ifindex uint32, steps []step) {
	t.Helper()
	for _, s := range steps {
		if s.send {
			if got := d.send(t, ifindex, s.dir, s.pkt); got != s.want.Allows() {
				t.Errorf("%s: sent %s packet allowed=%v, want %v (%v)", s.name, s.dir, got, s.want.Allows(), s.want)
			}
			continue
		}
		if got := d.verdict(t, ifindex, s.dir, s.pkt); got.Reason != s.want || got.Allowed != s.want.Allows() {
			t.Errorf("%s: %s verdict %v, want %v", s.name, s.dir, got, s.want)
		}
	}
}

const (
	icmp   compute.Protocol = 1
	tcp                     = compute.ProtocolTCP
	udp                     = compute.ProtocolUDP
	sctp                    = compute.ProtocolSCTP
	podStr                  = "10.1.0.5"
)

func tcpPkt(src, dst string, sport, dport uint16, flags uint8) packet {
	return packet{src: addr(src), dst: addr(dst), proto: 6, sport: sport, dport: dport, tcpFlags: flags}
}

func udpPkt(src, dst string, sport, dport uint16) packet {
	return packet{src: addr(src), dst: addr(dst), proto: 17, sport: sport, dport: dport}
}

func icmpPkt(src, dst string, typ, code uint8, id uint16) packet {
	proto := uint8(1)
	if addr(src).Is6() {
		proto = 58
	}
	return packet{src: addr(src), dst: addr(dst), proto: proto, icmpType: typ, icmpCode: code, icmpID: id}
}

// icmpError is an ICMP error from a router quoting the start of inner.
func icmpError(router, to string, typ, code uint8, inner packet) packet {
	b := inner.ipBytes()
	ihl := 20
	if inner.src.Is6() {
		ihl = 40
	}
	p := icmpPkt(router, to, typ, code, 0)
	p.payload = b[:min(len(b), ihl+8)]
	return p
}

// exceptPrefixes is an ipBlock 10.3.0.0/24 except 10.3.0.128/25 and 10.3.0.64/27, as compute emits it.
func exceptPrefixes(t *testing.T, proto compute.Protocol, port uint16) []compute.Entry {
	t.Helper()
	var out []compute.Entry
	for _, p := range compute.Subtract(netip.MustParsePrefix("10.3.0.0/24"),
		[]netip.Prefix{netip.MustParsePrefix("10.3.0.128/25"), netip.MustParsePrefix("10.3.0.64/27")}) {
		out = append(out, compute.Entry{CIDR: p, Protocol: proto, PortStart: port, PortEnd: port})
	}
	if len(out) != 2 { // 10.3.0.0/26 and 10.3.0.96/27
		t.Fatalf("Subtract gave %v", out)
	}
	return out
}

func TestVerdicts(t *testing.T) {
	d := openTest(t, Config{})
	ctx := context.Background()
	name, idx := dummyLink(t)
	rules := PodRules{HostIf: name, Namespace: "ns", Name: "pod", IP: addr(podStr),
		Ingress: compute.Direction{Isolated: true, Entries: append([]compute.Entry{
			entry("10.2.0.0/16", tcp, 80, 80),
			entry("10.2.3.4/32", tcp, 8080, 8090), // nested: also gets port 80 of the /16
			entry("10.4.0.0/24", sctp, 5000, 5000),
			entry("10.5.0.0/24", compute.ProtocolAny, 0, 0),
			entry("10.6.0.0/24", udp, 0, 0),
			entry("10.7.0.0/24", tcp, 1, 65535),
			entry("fd00::/64", tcp, 443, 443),
		}, exceptPrefixes(t, udp, 53)...)},
		Egress: compute.Direction{Isolated: true, Entries: []compute.Entry{
			entry("10.9.0.0/24", tcp, 443, 443),
			entry("10.9.1.0/24", udp, 53, 53),
			entry("10.9.2.0/24", udp, 9000, 9000),
			entry("10.9.3.0/24", compute.ProtocolAny, 0, 0),
			entry("fd09::/64", compute.ProtocolAny, 0, 0),
			entry("fd0b::/64", tcp, 443, 443),
		}},
	}
	if err := d.Program(ctx, rules); err != nil {
		t.Fatalf("Program: %v", err)
	}
	pod := podStr
	syn, synAck, ack := uint8(tcpSYN), uint8(tcpSYN|tcpACK), uint8(tcpACK)

	runSteps(t, d, idx, []step{
		// ipBlock and ports
		{"tcp 80 from the /16", Ingress, tcpPkt("10.2.9.9", pod, 5555, 80, syn), false, ReasonPolicy},
		{"tcp 81 from the /16", Ingress, tcpPkt("10.2.9.9", pod, 5555, 81, syn), false, ReasonNoRule},
		{"udp 80 from the /16", Ingress, udpPkt("10.2.9.9", pod, 5555, 80), false, ReasonNoRule},
		{"nested /32 inherits port 80", Ingress, tcpPkt("10.2.3.4", pod, 5555, 80, syn), false, ReasonPolicy},
		{"nested /32 own range start", Ingress, tcpPkt("10.2.3.4", pod, 5555, 8080, syn), false, ReasonPolicy},
		{"nested /32 own range end", Ingress, tcpPkt("10.2.3.4", pod, 5555, 8090, syn), false, ReasonPolicy},
		{"nested /32 past its range", Ingress, tcpPkt("10.2.3.4", pod, 5555, 8091, syn), false, ReasonNoRule},
		{"range is only the /32's", Ingress, tcpPkt("10.2.3.5", pod, 5555, 8085, syn), false, ReasonNoRule},
		{"endPort full range low", Ingress, tcpPkt("10.7.0.1", pod, 5555, 1, syn), false, ReasonPolicy},
		{"endPort full range high", Ingress, tcpPkt("10.7.0.1", pod, 5555, 65535, syn), false, ReasonPolicy},
		// except
		{"except: kept /26", Ingress, udpPkt("10.3.0.1", pod, 5555, 53), false, ReasonPolicy},
		{"except: kept /27", Ingress, udpPkt("10.3.0.100", pod, 5555, 53), false, ReasonPolicy},
		{"except: carved /27", Ingress, udpPkt("10.3.0.70", pod, 5555, 53), false, ReasonNoRule},
		{"except: carved /25", Ingress, udpPkt("10.3.0.200", pod, 5555, 53), false, ReasonNoRule},
		// SCTP, any protocol, all ports of a protocol
		{"sctp 5000", Ingress, packet{src: addr("10.4.0.1"), dst: addr(pod), proto: 132, sport: 1, dport: 5000}, false, ReasonPolicy},
		{"sctp 5001", Ingress, packet{src: addr("10.4.0.1"), dst: addr(pod), proto: 132, sport: 1, dport: 5001}, false, ReasonNoRule},
		{"tcp 5000 from the sctp block", Ingress, tcpPkt("10.4.0.1", pod, 1, 5000, syn), false, ReasonNoRule},
		{"any protocol: icmp", Ingress, icmpPkt("10.5.0.1", pod, 8, 0, 7), false, ReasonPolicy},
		{"any protocol: tcp", Ingress, tcpPkt("10.5.0.1", pod, 1, 9999, syn), false, ReasonPolicy},
		{"any protocol: gre", Ingress, packet{src: addr("10.5.0.1"), dst: addr(pod), proto: 47}, false, ReasonPolicy},
		{"icmp needs any protocol", Ingress, icmpPkt("10.2.9.9", pod, 8, 0, 7), false, ReasonNoRule},
		{"udp all ports low", Ingress, udpPkt("10.6.0.1", pod, 1, 1), false, ReasonPolicy},
		{"udp all ports high", Ingress, udpPkt("10.6.0.1", pod, 1, 65535), false, ReasonPolicy},
		{"udp all ports, not tcp", Ingress, tcpPkt("10.6.0.1", pod, 1, 1, syn), false, ReasonNoRule},
		{"outside every block", Ingress, tcpPkt("192.168.1.1", pod, 1, 80, syn), false, ReasonNoRule},
		// IPv6 rules
		{"v6 tcp 443", Ingress, tcpPkt("fd00::1", "fd00::5", 1, 443, syn), false, ReasonPolicy},
		{"v6 tcp 444", Ingress, tcpPkt("fd00::1", "fd00::5", 1, 444, syn), false, ReasonNoRule},
		{"v6 other prefix", Ingress, tcpPkt("fd01::1", "fd00::5", 1, 443, syn), false, ReasonNoRule},
		{"v6 neighbor solicitation", Ingress, icmpPkt("fe80::1", "ff02::1:ff00:5", 135, 0, 0), false, ReasonND},
		// egress
		{"egress tcp 443", Egress, tcpPkt(pod, "10.9.0.1", 40000, 443, syn), false, ReasonPolicy},
		{"egress tcp 80", Egress, tcpPkt(pod, "10.9.0.1", 40000, 80, syn), false, ReasonNoRule},
		{"egress to an ingress peer", Egress, tcpPkt(pod, "10.2.9.9", 40000, 80, syn), false, ReasonNoRule},

		// conntrack: replies of allowed flows pass, in both directions, for TCP, UDP and ICMP echo
		{"reply before any request", Ingress, tcpPkt("10.9.0.1", pod, 443, 40000, synAck), false, ReasonNoRule},
		{"egress SYN", Egress, tcpPkt(pod, "10.9.0.1", 40000, 443, syn), true, ReasonPolicy},
		{"its SYN-ACK", Ingress, tcpPkt("10.9.0.1", pod, 443, 40000, synAck), false, ReasonReply},
		{"SYN-ACK sent", Ingress, tcpPkt("10.9.0.1", pod, 443, 40000, synAck), true, ReasonReply},
		{"other source port", Ingress, tcpPkt("10.9.0.1", pod, 443, 40001, ack), false, ReasonNoRule},
		{"reply is not a new flow the other way", Ingress, tcpPkt("10.9.0.1", pod, 40000, 443, syn), false, ReasonNoRule},
		{"ingress SYN", Ingress, tcpPkt("10.2.9.9", pod, 5555, 80, syn), true, ReasonPolicy},
		{"server reply", Egress, tcpPkt(pod, "10.2.9.9", 80, 5555, synAck), false, ReasonReply},
		{"server reply, other port", Egress, tcpPkt(pod, "10.2.9.9", 81, 5555, synAck), false, ReasonNoRule},
		{"udp query", Egress, udpPkt(pod, "10.9.1.1", 40000, 53), true, ReasonPolicy},
		{"udp answer", Ingress, udpPkt("10.9.1.1", pod, 53, 40000), false, ReasonReply},
		{"echo request", Egress, icmpPkt(pod, "10.9.3.1", 8, 0, 99), true, ReasonPolicy},
		{"echo reply", Ingress, icmpPkt("10.9.3.1", pod, 0, 0, 99), false, ReasonReply},
		{"echo reply, other id", Ingress, icmpPkt("10.9.3.1", pod, 0, 0, 98), false, ReasonNoRule},
		{"echo request is never a reply", Ingress, icmpPkt("10.9.3.1", pod, 8, 0, 99), false, ReasonNoRule},

		// ICMP errors about tracked flows, from a router the rules do not name
		{"frag needed for the pod's flow", Ingress, icmpError("192.0.2.1", pod, 3, 4, tcpPkt(pod, "10.9.0.1", 40000, 443, ack)), false, ReasonICMPError},
		{"port unreachable for the udp query", Ingress, icmpError("10.9.1.1", pod, 3, 3, udpPkt(pod, "10.9.1.1", 40000, 53)), false, ReasonICMPError},
		{"time exceeded for the echo", Ingress, icmpError("192.0.2.1", pod, 11, 0, icmpPkt(pod, "10.9.3.1", 8, 0, 99)), false, ReasonICMPError},
		{"frag needed for the pod's reply", Ingress, icmpError("192.0.2.1", pod, 3, 4, tcpPkt(pod, "10.2.9.9", 80, 5555, ack)), false, ReasonICMPError},
		{"frag needed for an untracked flow", Ingress, icmpError("192.0.2.1", pod, 3, 4, tcpPkt(pod, "10.9.0.1", 40000, 444, ack)), false, ReasonNoRule},
		{"error about an error", Ingress, icmpError("192.0.2.1", pod, 3, 4, icmpError(pod, "10.9.0.1", 3, 3, udpPkt("10.9.0.1", pod, 1, 2))), false, ReasonNoRule},
		{"v6 echo request", Egress, icmpPkt("fd00::5", "fd09::1", 128, 0, 3), true, ReasonPolicy},
		{"v6 echo reply", Ingress, icmpPkt("fd09::1", "fd00::5", 129, 0, 3), false, ReasonReply},
		{"v6 udp", Egress, udpPkt("fd00::5", "fd09::1", 40000, 53), true, ReasonPolicy},
		{"v6 udp answer", Ingress, udpPkt("fd09::1", "fd00::5", 53, 40000), false, ReasonReply},
		{"v6 packet too big", Ingress, icmpError("fd0a::1", "fd00::5", 2, 0, udpPkt("fd00::5", "fd09::1", 40000, 53)), false, ReasonICMPError},
		{"v6 packet too big, untracked", Ingress, icmpError("fd0a::1", "fd00::5", 2, 0, udpPkt("fd00::5", "fd09::1", 40001, 53)), false, ReasonNoRule},
		{"egress error for a flow to the pod", Egress, icmpError(pod, "10.2.9.9", 3, 3, tcpPkt("10.2.9.9", pod, 5555, 80, syn)), false, ReasonICMPError},

		// fragments: later fragments follow their first
		{"first fragment", Egress, packet{src: addr(pod), dst: addr("10.9.2.1"), proto: 17, sport: 1, dport: 9000, ipID: 77, moreFrags: true}, true, ReasonPolicy},
		{"later fragment", Egress, packet{src: addr(pod), dst: addr("10.9.2.1"), proto: 17, ipID: 77, fragOffset: 185, payload: make([]byte, 64)}, false, ReasonFragment},
		{"last fragment", Egress, packet{src: addr(pod), dst: addr("10.9.2.1"), proto: 17, ipID: 77, fragOffset: 370, payload: make([]byte, 8)}, false, ReasonFragment},
		{"later fragment, other id", Egress, packet{src: addr(pod), dst: addr("10.9.2.1"), proto: 17, ipID: 78, fragOffset: 185}, false, ReasonFragUnknown},
		{"denied first fragment", Egress, packet{src: addr(pod), dst: addr("10.9.2.1"), proto: 17, sport: 1, dport: 9001, ipID: 79, moreFrags: true}, true, ReasonNoRule},
		{"its later fragment", Egress, packet{src: addr(pod), dst: addr("10.9.2.1"), proto: 17, ipID: 79, fragOffset: 185}, false, ReasonFragUnknown},
		{"later fragment, other direction", Ingress, packet{src: addr("10.9.2.1"), dst: addr(pod), proto: 17, ipID: 77, fragOffset: 185}, false, ReasonFragUnknown},
		{"v6 first fragment", Egress, packet{src: addr("fd00::5"), dst: addr("fd09::1"), proto: 17, sport: 1, dport: 9000, ipID: 77, moreFrags: true}, true, ReasonPolicy},
		{"v6 later fragment", Egress, packet{src: addr("fd00::5"), dst: addr("fd09::1"), proto: 17, ipID: 77, fragOffset: 185, payload: make([]byte, 64)}, false, ReasonFragment},
		{"v6 later fragment, other id", Egress, packet{src: addr("fd00::5"), dst: addr("fd09::1"), proto: 17, ipID: 78, fragOffset: 185}, false, ReasonFragUnknown},
		{"v6 first fragment: ports after the fragment header", Egress, packet{src: addr("fd00::5"), dst: addr("fd0b::1"), proto: 6, sport: 1, dport: 443, ipID: 79, moreFrags: true}, false, ReasonPolicy},
		{"v6 first fragment: other port", Egress, packet{src: addr("fd00::5"), dst: addr("fd0b::1"), proto: 6, sport: 1, dport: 444, ipID: 79, moreFrags: true}, false, ReasonNoRule},
	})

	// Non-IP and malformed packets, built by hand.
	arp := append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06}, make([]byte, 28)...)
	bad := tcpPkt("10.2.9.9", pod, 1, 80, syn).bytes()
	bad[14] = 0x65 // IPv4 ethertype, version 6
	short := tcpPkt("10.2.9.9", pod, 1, 80, syn).bytes()
	short[14] = 0x44 // header length 16 bytes
	for _, c := range []struct {
		name string
		b    []byte
		want Reason
	}{{"arp", arp, ReasonNotIP}, {"bad version", bad, ReasonMalformed}, {"short header", short, ReasonMalformed}} {
		v, err := runProgram(d.objs.CheckToPod, idx, c.b)
		if err != nil || v.Reason != c.want {
			t.Errorf("%s: %v %v, want %v", c.name, v, err, c.want)
		}
	}

	// Node addresses pass both ways, whatever the rules; and stop passing once removed.
	node := []netip.Addr{addr("192.0.2.10"), addr("fd00:ec2::10")}
	if err := d.SetNodeAddresses(ctx, node); err != nil {
		t.Fatalf("SetNodeAddresses: %v", err)
	}
	runSteps(t, d, idx, []step{
		{"kubelet probe", Ingress, tcpPkt("192.0.2.10", pod, 33333, 8080, syn), false, ReasonNode},
		{"to the node", Egress, udpPkt(pod, "192.0.2.10", 40000, 53), false, ReasonNode},
		{"v6 node", Ingress, tcpPkt("fd00:ec2::10", "fd00::5", 1, 1, syn), false, ReasonNode},
		{"not a node", Ingress, tcpPkt("192.0.2.11", pod, 33333, 8080, syn), false, ReasonNoRule},
	})
	if err := d.SetNodeAddresses(ctx, node[1:]); err != nil {
		t.Fatalf("SetNodeAddresses: %v", err)
	}
	runSteps(t, d, idx, []step{
		{"former node address", Ingress, tcpPkt("192.0.2.10", pod, 33333, 8080, syn), false, ReasonNoRule},
		{"remaining node address", Ingress, tcpPkt("fd00:ec2::10", "fd00::5", 1, 1, syn), false, ReasonNode},
	})

	// Isolation per direction: unisolated allows everything, isolated without entries nothing; replies of tracked
	// flows pass a deny-all direction.
	rules.Ingress = compute.Direction{Isolated: true}
	rules.Egress = compute.Direction{}
	if err := d.Program(ctx, rules); err != nil {
		t.Fatalf("Program: %v", err)
	}
	runSteps(t, d, idx, []step{
		{"deny-all ingress", Ingress, tcpPkt("10.2.9.9", pod, 5556, 80, syn), false, ReasonNoRule},
		{"deny-all ingress icmp", Ingress, icmpPkt("10.5.0.1", pod, 8, 0, 1), false, ReasonNoRule},
		{"reply through deny-all ingress", Ingress, tcpPkt("10.9.0.1", pod, 443, 40000, ack), false, ReasonReply},
		{"unisolated egress tcp", Egress, tcpPkt(pod, "203.0.113.1", 1, 1, syn), false, ReasonPolicy},
		{"unisolated egress icmp", Egress, icmpPkt(pod, "203.0.113.1", 8, 0, 1), false, ReasonPolicy},
		{"unisolated egress v6", Egress, udpPkt("fd00::5", "2001:db8::1", 1, 1), false, ReasonPolicy},
	})
	rules.Ingress = compute.Direction{}
	rules.Egress = compute.Direction{Isolated: true}
	if err := d.Program(ctx, rules); err != nil {
		t.Fatalf("Program: %v", err)
	}
	runSteps(t, d, idx, []step{
		{"unisolated ingress", Ingress, tcpPkt("203.0.113.1", pod, 1, 1, syn), false, ReasonPolicy},
		{"deny-all egress", Egress, tcpPkt(pod, "10.9.0.1", 40001, 443, syn), false, ReasonNoRule},
		// a narrowed policy cuts the forward direction of open flows at once
		{"open flow, forward", Egress, tcpPkt(pod, "10.9.0.1", 40000, 443, ack), false, ReasonNoRule},
	})

	// An unprogrammed veth denies.
	if err := d.Remove(ctx, name); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	runSteps(t, d, idx, []step{{"removed pod", Ingress, tcpPkt("10.2.9.9", pod, 5555, 80, syn), false, ReasonNoPod}})
}
