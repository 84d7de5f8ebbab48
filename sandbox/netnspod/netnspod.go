// Package netnspod makes network-namespace "pods" for networking tests: a named
// netns (visible to `ip netns`) holding eth0, one end of a veth pair whose
// other end stays in the caller's namespace, as a CNI plugin would leave it.
//
// Every name carries a random id, so tests in packages that run in parallel
// never collide, and everything New creates is removed in tb.Cleanup, even
// when the test fails. Code runs inside a pod through Do, in-process, rather
// than with `ip netns exec`, which remounts /sys and hides bpffs.
package netnspod

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/sandbox/netnsutil"
)

// RunDir is where pod namespaces are bind-mounted.
const RunDir = netnsutil.RunDir

// PodVeth is the name of the pod end of the veth pair inside the pod netns.
const PodVeth = "eth0"

// Gateway is the link-local next hop a routed pod uses, as in the VPC CNI:
// the pod sends everything to it, and a static neighbor entry resolves it to
// the host veth's MAC, so the host side needs no address.
func Gateway() netip.Addr { return netip.AddrFrom4([4]byte{169, 254, 1, 1}) }

// Options configures New.
type Options struct {
	// Prefix starts the netns name, for humans reading `ip netns`.
	// Default is "autonode".
	Prefix string
	// Addr, when valid, is routed to the pod through the host right away;
	// see RouteViaHost. The zero value leaves eth0 without an address.
	Addr netip.Addr
}

// Pod is a network namespace with eth0 linked to the caller's namespace.
type Pod struct {
	// Name of the netns; it is bind-mounted at RunDir/Name.
	Name string
	// NS is an open handle on the pod netns, valid until the test ends.
	NS netns.NsHandle
	// HostVeth is the host end of the veth pair, in the caller's netns.
	HostVeth string
	// PodVeth is the pod end, always PodVeth ("eth0"), inside NS.
	PodVeth string
	// Addr is the pod's address once RouteViaHost has run.
	Addr netip.Addr
}

// New creates a pod: a named netns, a veth pair with its pod end moved in as
// eth0, and both ends plus the pod's loopback up. Anything created is removed
// when the test ends. It fails the test on error; gate callers with
// privileged.Require(tb, privileged.NetAdmin).
func New(tb testing.TB, opts Options) *Pod {
	tb.Helper()
	prefix := opts.Prefix
	if prefix == "" {
		prefix = "autonode"
	}
	var id [5]byte
	if _, err := rand.Read(id[:]); err != nil {
		tb.Fatalf("netnspod: random id: %v", err)
	}
	hexID := hex.EncodeToString(id[:])
	p := &Pod{
		Name:     prefix + "-" + hexID,
		NS:       netns.None(),
		HostVeth: "anp" + hexID, // 13 bytes, within IFNAMSIZ-1
		PodVeth:  PodVeth,
	}

	// Registered first: remove copes with whatever part exists, so a
	// failure half-way through leaves nothing behind.
	tb.Cleanup(func() {
		if err := p.remove(); err != nil {
			tb.Errorf("netnspod: removing pod %s: %v", p.Name, err)
		}
	})
	ns, err := netnsutil.NewNamed(p.Name)
	p.NS = ns
	if err != nil {
		tb.Fatalf("netnspod: %v", err)
	}

	if err := p.setup(); err != nil {
		tb.Fatalf("netnspod: pod %s: %v", p.Name, err)
	}
	if opts.Addr.IsValid() {
		if err := p.RouteViaHost(opts.Addr); err != nil {
			tb.Fatalf("netnspod: %v", err)
		}
	}
	return p
}

// setup creates the veth pair straight into the pod netns, so the name eth0
// never exists in the caller's namespace, and brings the links up.
func (p *Pod) setup() error {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: p.HostVeth},
		PeerName:      p.PodVeth,
		PeerNamespace: netlink.NsFd(int(p.NS)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s/%s: %w", p.HostVeth, p.PodVeth, err)
	}
	host, err := netlink.LinkByName(p.HostVeth)
	if err != nil {
		return fmt.Errorf("finding host veth %s: %w", p.HostVeth, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("setting host veth %s up: %w", p.HostVeth, err)
	}
	h, err := netlink.NewHandleAt(p.NS)
	if err != nil {
		return fmt.Errorf("netlink handle in netns %s: %w", p.Name, err)
	}
	defer h.Close()
	for _, name := range []string{"lo", p.PodVeth} {
		link, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("finding %s in netns %s: %w", name, p.Name, err)
		}
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("setting %s up in netns %s: %w", name, p.Name, err)
		}
	}
	return nil
}

// RouteViaHost gives the pod addr and connects it through the host the way
// the VPC CNI does, so that routed pods reach each other and the host:
//
//   - in the pod: addr/32 on eth0, a link route to Gateway, a default route
//     via Gateway and a permanent neighbor entry mapping Gateway to the host
//     veth's MAC;
//   - on the host: a /32 route to addr over the host veth, a permanent
//     neighbor entry for the pod's MAC (no ARP, so the host needs no address
//     on the veth), and IPv4 forwarding on the host veth only. Forwarding is
//     decided by the input device, so the machine-wide ip_forward stays as
//     it was.
//
// Host routes and neighbors go away with the host veth. Addresses must be
// unique across concurrently running tests, since the host routes share the
// caller's main table: RandomAddr picks one.
func (p *Pod) RouteViaHost(addr netip.Addr) error {
	if !addr.Is4() {
		return fmt.Errorf("pod %s: address %s is not IPv4", p.Name, addr)
	}
	host, err := netlink.LinkByName(p.HostVeth)
	if err != nil {
		return fmt.Errorf("finding host veth %s: %w", p.HostVeth, err)
	}
	h, err := netlink.NewHandleAt(p.NS)
	if err != nil {
		return fmt.Errorf("netlink handle in netns %s: %w", p.Name, err)
	}
	defer h.Close()
	eth0, err := h.LinkByName(p.PodVeth)
	if err != nil {
		return fmt.Errorf("finding %s in netns %s: %w", p.PodVeth, p.Name, err)
	}

	podIP, gw := net.IP(addr.AsSlice()), net.IP(Gateway().AsSlice())
	if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: hostNet(podIP)}); err != nil {
		return fmt.Errorf("adding %s to %s in netns %s: %w", addr, p.PodVeth, p.Name, err)
	}
	podSide := []struct {
		what string
		do   func() error
	}{
		{"link route to gateway", func() error {
			return h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: hostNet(gw), Scope: netlink.SCOPE_LINK})
		}},
		{"default route", func() error {
			return h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gw})
		}},
		{"gateway neighbor", func() error {
			return h.NeighAdd(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, Family: unix.AF_INET,
				State: netlink.NUD_PERMANENT, IP: gw, HardwareAddr: host.Attrs().HardwareAddr})
		}},
	}
	for _, step := range podSide {
		if err := step.do(); err != nil {
			return fmt.Errorf("pod %s: %s on %s: %w", p.Name, step.what, p.PodVeth, err)
		}
	}

	if err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: host.Attrs().Index, Family: unix.AF_INET,
		State: netlink.NUD_PERMANENT, IP: podIP, HardwareAddr: eth0.Attrs().HardwareAddr}); err != nil {
		return fmt.Errorf("pod %s: neighbor %s on host veth %s: %w", p.Name, addr, p.HostVeth, err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: hostNet(podIP), Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("pod %s: route to %s via host veth %s: %w", p.Name, addr, p.HostVeth, err)
	}
	fwd := filepath.Join("/proc/sys/net/ipv4/conf", p.HostVeth, "forwarding")
	if err := os.WriteFile(fwd, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("pod %s: enabling forwarding on %s: %w", p.Name, p.HostVeth, err)
	}
	p.Addr = addr
	return nil
}

// Do runs fn with the pod's netns as the current one, on a locked OS thread
// of a goroutine of its own, and returns fn's error. Sockets fn opens stay in
// the pod netns after Do returns. Goroutines that fn starts do not run in the
// pod netns, and fn must not call tb.FailNow (it is not the test goroutine).
func (p *Pod) Do(fn func() error) error {
	if err := netnsutil.Do(p.NS, fn); err != nil {
		return fmt.Errorf("pod %s: %w", p.Name, err)
	}
	return nil
}

// remove deletes the host veth (its peer goes with it), then the netns mount
// and file. Deleting the veth first makes it disappear at once instead of
// when the kernel gets round to tearing down the namespace.
func (p *Pod) remove() error {
	var errs []error
	if link, err := netlink.LinkByName(p.HostVeth); err == nil {
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("deleting host veth %s: %w", p.HostVeth, err))
		}
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		errs = append(errs, fmt.Errorf("finding host veth %s: %w", p.HostVeth, err))
	}
	if p.NS.IsOpen() {
		if err := p.NS.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing netns %s: %w", p.Name, err))
		}
	}
	if err := netnsutil.DeleteNamed(p.Name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// RandomAddr returns a random address in 198.18.0.0/15 (RFC 2544, reserved
// for benchmarks and never routed), for pods whose host routes must not clash
// with those of tests running in parallel.
func RandomAddr() netip.Addr {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	n := binary.BigEndian.Uint32(b[:])&0x1ffff | 0xc6120000
	if n&0xff == 0 || n&0xff == 0xff {
		n ^= 1 // avoid .0 and .255, which confuse humans reading routes
	}
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func hostNet(ip net.IP) *net.IPNet {
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}
}
