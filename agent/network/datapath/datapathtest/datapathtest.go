// Package datapathtest builds a small VPC out of network namespaces for the
// datapath and CNI tests: a "node" netns that plays the host, whose ENIs are
// veths to a "vpc" netns that plays the VPC router and, on a dummy link, a
// host outside the VPC. Pods are further namespaces. Every name and address
// is random per call and everything is removed in tb.Cleanup.
//
//	pod netns ── veth ──┐
//	                    node netns: eni0 (primary, subnet0 .10) ── vpc0 (.1) ┐ vpc netns
//	                               eni1 (secondary, subnet1 .10) ── vpc1 (.1) ┘ lo: Outside/32
package datapathtest

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/sandbox/netnsutil"
)

// NS is a named network namespace made for a test.
type NS struct {
	Name   string
	Path   string
	Handle netns.NsHandle
}

// Do runs fn inside the namespace.
func (n *NS) Do(fn func() error) error {
	if err := netnsutil.Do(n.Handle, fn); err != nil {
		return fmt.Errorf("netns %s: %w", n.Name, err)
	}
	return nil
}

// Netlink returns a netlink handle in the namespace, closed at cleanup.
func (n *NS) Netlink(tb testing.TB) *netlink.Handle {
	tb.Helper()
	h, err := netlink.NewHandleAt(n.Handle)
	if err != nil {
		tb.Fatalf("netlink handle in %s: %v", n.Name, err)
	}
	tb.Cleanup(h.Close)
	return h
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewNS makes a named netns with lo up.
func NewNS(tb testing.TB, prefix string) *NS {
	tb.Helper()
	n := &NS{Name: prefix + "-" + randHex(5)}
	n.Path = filepath.Join(netnsutil.RunDir, n.Name)
	h, err := netnsutil.NewNamed(n.Name)
	n.Handle = h
	tb.Cleanup(func() {
		if n.Handle.IsOpen() {
			n.Handle.Close()
		}
		if err := netnsutil.DeleteNamed(n.Name); err != nil {
			tb.Errorf("removing netns %s: %v", n.Name, err)
		}
	})
	if err != nil {
		tb.Fatalf("%v", err)
	}
	nl := n.Netlink(tb)
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		tb.Fatalf("setting lo up in %s: %v", n.Name, err)
	}
	return n
}

// ENI is one of the node's ENIs: a veth from the node to the vpc netns.
type ENI struct {
	Link    string // in the node netns
	MAC     string
	Subnet  netip.Prefix
	Addr    netip.Addr // the node's address on it
	Gateway netip.Addr // the subnet's first host, on the vpc side
	Table   int        // 0 for the primary ENI
}

// Node is the test VPC.
type Node struct {
	*NS
	VPC *NS
	// VPCCIDR holds both subnets; PodPrefix is the part of subnet0 left
	// to pods (.64/26), SecondaryPodPrefix the same in subnet1.
	VPCCIDR            netip.Prefix
	Primary, Secondary ENI
	PodPrefix          netip.Prefix
	SecondaryPodPrefix netip.Prefix
	// Outside is an address in the vpc netns outside VPCCIDR.
	Outside netip.Addr
}

// NewNode builds the node, the vpc netns and both ENIs.
func NewNode(tb testing.TB) *Node {
	tb.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	// A random /23 inside 198.18.0.0/15 (RFC 2544).
	base := binary.BigEndian.Uint32(b[:])&0x1fe00 | 0xc6120000
	vpc := netip.PrefixFrom(u32Addr(base), 23)
	n := &Node{NS: NewNS(tb, "an-node"), VPC: NewNS(tb, "an-vpc"), VPCCIDR: vpc}
	_, _ = rand.Read(b[:])
	n.Outside = u32Addr(0xc6336400 | uint32(b[0])%250 + 2) // 198.51.100.0/24 (TEST-NET-2)

	nodeNL, vpcNL := n.Netlink(tb), n.VPC.Netlink(tb)
	for i, eni := range []*ENI{&n.Primary, &n.Secondary} {
		subnet := netip.PrefixFrom(u32Addr(base+uint32(i)<<8), 24)
		*eni = ENI{Link: fmt.Sprintf("eni%d", i), Subnet: subnet, Addr: u32Addr(base + uint32(i)<<8 + 10),
			Gateway: u32Addr(base + uint32(i)<<8 + 1), Table: i * 2}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: eni.Link, MTU: 9001}, PeerName: fmt.Sprintf("vpc%d", i),
			PeerNamespace: netlink.NsFd(int(n.VPC.Handle))}
		if err := nodeNL.LinkAdd(veth); err != nil {
			tb.Fatalf("creating ENI %s: %v", eni.Link, err)
		}
		link, err := nodeNL.LinkByName(eni.Link)
		if err != nil {
			tb.Fatalf("finding ENI %s: %v", eni.Link, err)
		}
		eni.MAC = link.Attrs().HardwareAddr.String()
		peer, err := vpcNL.LinkByName(veth.PeerName)
		if err != nil {
			tb.Fatalf("finding %s: %v", veth.PeerName, err)
		}
		must(tb, vpcNL.AddrAdd(peer, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(eni.Gateway, 24))}), "address on vpc side")
		must(tb, vpcNL.LinkSetUp(peer), "vpc side up")
		if i == 0 {
			// Only the primary ENI is configured by "the OS"; the
			// datapath finds and fills secondary ones.
			must(tb, nodeNL.AddrAdd(link, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(eni.Addr, 24))}), "primary address")
			must(tb, nodeNL.LinkSetUp(link), "primary up")
			must(tb, nodeNL.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: eni.Gateway.AsSlice()}), "node default route")
		} else {
			must(tb, nodeNL.AddrAdd(link, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(eni.Addr, 24))}), "secondary address")
		}
	}
	n.PodPrefix = netip.PrefixFrom(u32Addr(base+64), 26)
	n.SecondaryPodPrefix = netip.PrefixFrom(u32Addr(base+256+64), 26)
	// The VPC fabric knows where every pod address lives.
	vpc0, err := vpcNL.LinkByName("vpc0")
	must(tb, err, "finding vpc0")
	vpc1, err := vpcNL.LinkByName("vpc1")
	must(tb, err, "finding vpc1")
	must(tb, vpcNL.RouteAdd(&netlink.Route{LinkIndex: vpc0.Attrs().Index, Dst: prefixNet(n.PodPrefix), Gw: n.Primary.Addr.AsSlice()}), "vpc route to pods")
	must(tb, vpcNL.RouteAdd(&netlink.Route{LinkIndex: vpc1.Attrs().Index, Dst: prefixNet(n.SecondaryPodPrefix), Gw: n.Secondary.Addr.AsSlice()}), "vpc route to secondary pods")
	// This kernel has no dummy links: the outside host lives on lo.
	lo, err := vpcNL.LinkByName("lo")
	must(tb, err, "finding lo")
	must(tb, vpcNL.AddrAdd(lo, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(n.Outside, 32))}), "outside address")
	if err := n.VPC.Do(func() error { return writeSysctl("net/ipv4/ip_forward", "1") }); err != nil {
		tb.Fatalf("%v", err)
	}
	return n
}

func writeSysctl(key, v string) error {
	return osWriteFile(filepath.Join("/proc/sys", key), v)
}

// NewPod makes an empty pod netns (lo up), as a runtime would before ADD.
func (n *Node) NewPod(tb testing.TB) *NS {
	tb.Helper()
	return NewNS(tb, "an-pod")
}

func must(tb testing.TB, err error, what string) {
	tb.Helper()
	if err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

func u32Addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// ServeEcho listens on TCP and UDP at addr (port 0 picks one; the same port
// for both) inside ns, and answers each connection or datagram with the
// source address it saw. It returns the bound address.
func ServeEcho(tb testing.TB, ns *NS, addr netip.Addr, port uint16) netip.AddrPort {
	tb.Helper()
	var (
		ln net.Listener
		pc net.PacketConn
	)
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(addr, port).String())
		if err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", netip.AddrPortFrom(addr, uint16(ln.Addr().(*net.TCPAddr).Port)).String())
		return err
	})
	if err != nil {
		tb.Fatalf("echo server at %s: %v", addr, err)
	}
	tb.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, c.RemoteAddr().String())
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(from.String()), from)
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// SourceSeen connects from inside ns to an echo server over proto ("tcp4"
// or "udp4") and returns the source address the server saw.
func SourceSeen(ns *NS, proto string, to netip.AddrPort) (netip.Addr, error) {
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = net.DialTimeout(proto, to.String(), 5*time.Second)
		return err
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("dialing %s %s: %w", proto, to, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	var n int
	if strings.HasPrefix(proto, "udp") {
		// UDP may lose the first datagram while neighbours resolve: retry.
		for range 10 {
			if _, err = c.Write([]byte("hi")); err != nil {
				break
			}
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if n, err = c.Read(buf); err == nil {
				break
			}
		}
	} else {
		n, err = readAll(c, buf)
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("reading from %s %s: %w", proto, to, err)
	}
	ap, err := netip.ParseAddrPort(string(buf[:n]))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("echo from %s: %w", to, err)
	}
	return ap.Addr(), nil
}

func readAll(c net.Conn, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Leftovers counts what pods may leave in the node netns: veths, routes in
// the main table to addresses in pods, and rules at the given priorities.
func (n *Node) Leftovers(tb testing.TB, pods netip.Prefix, priorities ...int) (veths, routes, rules int) {
	tb.Helper()
	nl := n.Netlink(tb)
	links, err := nl.LinkList()
	must(tb, err, "listing links")
	for _, l := range links {
		if l.Type() == "veth" && !strings.HasPrefix(l.Attrs().Name, "eni") {
			veths++
		}
	}
	rs, err := nl.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	must(tb, err, "listing routes")
	for _, r := range rs {
		if r.Dst != nil {
			if a, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok && pods.Contains(a) {
				if ones, _ := r.Dst.Mask.Size(); ones == 32 {
					routes++
				}
			}
		}
	}
	rl, err := nl.RuleList(unix.AF_INET)
	must(tb, err, "listing rules")
	for _, r := range rl {
		for _, p := range priorities {
			if r.Priority == p {
				rules++
			}
		}
	}
	return veths, routes, rules
}

func osWriteFile(path, v string) error { return os.WriteFile(path, []byte(v), 0o644) }
