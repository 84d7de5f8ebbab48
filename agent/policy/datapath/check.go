package datapath

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/cilium/ebpf"
)

// skbContext is the head of struct __sk_buff, through cb[], which BPF_PROG_TEST_RUN takes as the program's context.
// Only ifindex (the device the program pretends to run on) and cb (where the check programs put their reason) may
// be non-zero.
type skbContext struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority uint32
	IngressIfindex, Ifindex, TCIndex                                                      uint32
	Cb                                                                                    [5]uint32
}

// Check evaluates f for the pod on hostIf with BPF_PROG_TEST_RUN: it crafts the packet (a TCP SYN, a UDP or SCTP
// datagram, an ICMP echo request) and runs a twin of the attached program that shares its maps but writes nothing,
// so checking a flow neither creates conntrack state nor emits an event. A peer of the other address family than
// the pod's gets the unspecified address as the pod's end.
func (d *Datapath) Check(ctx context.Context, hostIf string, dir Direction, f Flow) (Verdict, error) {
	if err := ctx.Err(); err != nil {
		return Verdict{}, err
	}
	idx, p, err := d.podByName(hostIf)
	if err != nil {
		return Verdict{}, err
	}
	pkt, err := flowPacket(podIP(p), dir, f)
	if err != nil {
		return Verdict{}, fmt.Errorf("host veth %s: %w", hostIf, err)
	}
	prog := d.objs.CheckToPod
	if dir == Egress {
		prog = d.objs.CheckFromPod
	}
	v, err := runProgram(prog, idx, pkt.bytes())
	if err != nil {
		return Verdict{}, fmt.Errorf("host veth %s: %w", hostIf, err)
	}
	return v, nil
}

// flowPacket builds the first packet of f as the veth would see it.
func flowPacket(pod netip.Addr, dir Direction, f Flow) (packet, error) {
	if !f.Peer.IsValid() {
		return packet{}, fmt.Errorf("flow peer %v is invalid", f.Peer)
	}
	peer := f.Peer.Unmap()
	if !pod.IsValid() || pod.Is4() != peer.Is4() {
		pod = netip.IPv4Unspecified()
		if peer.Is6() {
			pod = netip.IPv6Unspecified()
		}
	}
	p := packet{src: pod, dst: peer, proto: uint8(f.Protocol), sport: 40000, dport: f.Port, tcpFlags: tcpSYN}
	if dir == Ingress {
		p.src, p.dst = peer, pod
	}
	if f.Protocol == ProtocolICMP {
		p.icmpType, p.icmpID, p.dport = 8, 4242, 0
		if peer.Is6() {
			p.proto, p.icmpType = 58, 128
		}
	}
	return p, nil
}

// runProgram runs prog once over pkt as if on ifindex. The check programs leave their reason in cb[0]; for the
// attached programs only the verdict is known, and the reason is left zero.
func runProgram(prog *ebpf.Program, ifindex uint32, pkt []byte) (Verdict, error) {
	in := skbContext{Ifindex: ifindex}
	// The kernel copies out the whole __sk_buff and fails with ENOSPC on a shorter buffer; its size grows with
	// kernel versions, so give it room.
	out := make([]byte, 1024)
	ret, err := prog.Run(&ebpf.RunOptions{Data: pkt, Context: in, ContextOut: out})
	if err != nil {
		return Verdict{}, fmt.Errorf("BPF_PROG_TEST_RUN on ifindex %d: %w", ifindex, err)
	}
	cb0 := binary.NativeEndian.Uint32(out[unsafe.Offsetof(in.Cb):])
	v := Verdict{Allowed: int32(ret) != tcActShot, Reason: Reason(cb0)}
	if v.Reason != 0 && v.Reason.Allows() != v.Allowed {
		return Verdict{}, fmt.Errorf("program returned %d with reason %v", int32(ret), v.Reason)
	}
	return v, nil
}

const tcActShot = 2

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// packet is a test or check packet: Ethernet, IPv4 or IPv6, and a minimal L4 header.
type packet struct {
	src, dst           netip.Addr
	proto              uint8
	sport, dport       uint16
	tcpFlags           uint8
	icmpType, icmpCode uint8
	icmpID             uint16
	ipID               uint16 // IPv4 identification, or the IPv6 fragment header's
	fragOffset         uint16 // in 8-byte units; non-zero means no L4 header
	moreFrags          bool
	payload            []byte // after the L4 header; for ICMP errors, the quoted datagram
}

func (p packet) bytes() []byte {
	eth := []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00}
	if p.src.Is6() {
		eth[12], eth[13] = 0x86, 0xdd
	}
	return append(eth, p.ipBytes()...)
}

// ipBytes is the packet from its IP header on.
func (p packet) ipBytes() []byte {
	l4 := p.l4()
	if p.src.Is4() {
		h := make([]byte, 20, 20+len(l4))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(h[4:], p.ipID)
		frag := p.fragOffset & 0x1fff
		if p.moreFrags {
			frag |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:], frag)
		h[8], h[9] = 64, p.proto
		s, d := p.src.As4(), p.dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		binary.BigEndian.PutUint16(h[10:], checksum(h))
		return append(h, l4...)
	}
	h := make([]byte, 40, 48+len(l4))
	h[0] = 0x60
	h[6], h[7] = p.proto, 64
	s, d := p.src.As16(), p.dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	if p.fragOffset != 0 || p.moreFrags {
		fh := make([]byte, 8)
		fh[0] = p.proto
		fo := p.fragOffset << 3
		if p.moreFrags {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], uint32(p.ipID))
		h[6] = 44
		h = append(h, fh...)
	}
	binary.BigEndian.PutUint16(h[4:], uint16(len(h)-40+len(l4)))
	return append(h, l4...)
}

func (p packet) l4() []byte {
	if p.fragOffset != 0 {
		return p.payload
	}
	var h []byte
	switch p.proto {
	case 6:
		h = make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], p.sport)
		binary.BigEndian.PutUint16(h[2:], p.dport)
		h[12], h[13] = 0x50, p.tcpFlags
		binary.BigEndian.PutUint16(h[14:], 65535)
	case 17:
		h = make([]byte, 8)
		binary.BigEndian.PutUint16(h[0:], p.sport)
		binary.BigEndian.PutUint16(h[2:], p.dport)
		binary.BigEndian.PutUint16(h[4:], uint16(8+len(p.payload)))
	case 132:
		h = make([]byte, 12)
		binary.BigEndian.PutUint16(h[0:], p.sport)
		binary.BigEndian.PutUint16(h[2:], p.dport)
	case 1, 58:
		h = make([]byte, 8)
		h[0], h[1] = p.icmpType, p.icmpCode
		binary.BigEndian.PutUint16(h[4:], p.icmpID)
	}
	return append(h, p.payload...)
}

// checksum is the Internet checksum of b.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
