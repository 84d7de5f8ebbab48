package localnode

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/autonode/autonode/sandbox/netnsutil"
)

// listenIn opens a TCP listener inside ns.
func listenIn(ns netns.NsHandle, addr string) (net.Listener, error) {
	var ln net.Listener
	err := netnsutil.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listening on %s in the node netns: %w", addr, err)
	}
	return ln, nil
}

// setUpLoopback brings lo up in ns and gives it the extra addresses that the
// node's services answer on (the IMDS address).
func setUpLoopback(ns netns.NsHandle, addrs ...string) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in node netns: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("node netns lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("setting node netns lo up: %w", err)
	}
	for _, a := range addrs {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("address %s: %w", a, err)
		}
		if err := h.AddrAdd(lo, addr); err != nil {
			return fmt.Errorf("adding %s to node netns lo: %w", a, err)
		}
	}
	return nil
}

// primaryENI wires the node's primary ENI: eth0 in the node namespace with
// the ENI's MAC and address and a default route via the subnet's router,
// whose other end (the VPC router, the subnet's first host address) sits in
// a namespace of its own, so that nothing touches the host's links.
func primaryENI(node, vpc netns.NsHandle, mac string, addr netip.Addr, subnet netip.Prefix) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("primary ENI MAC %s: %w", mac, err)
	}
	router := subnet.Masked().Addr().Next()
	nh, err := netlink.NewHandleAt(node)
	if err != nil {
		return fmt.Errorf("netlink in node netns: %w", err)
	}
	defer nh.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "eth0", HardwareAddr: hw, MTU: 9001},
		PeerName:      "vpc0",
		PeerNamespace: netlink.NsFd(int(vpc)),
	}
	if err := nh.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating the primary ENI link: %w", err)
	}
	eth0, err := nh.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("primary ENI link: %w", err)
	}
	if err := nh.AddrAdd(eth0, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(addr, subnet.Bits()))}); err != nil {
		return fmt.Errorf("adding %s to the primary ENI: %w", addr, err)
	}
	if err := nh.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("setting the primary ENI up: %w", err)
	}
	if err := nh.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: router.AsSlice()}); err != nil {
		return fmt.Errorf("default route via %s: %w", router, err)
	}
	vh, err := netlink.NewHandleAt(vpc)
	if err != nil {
		return fmt.Errorf("netlink in vpc netns: %w", err)
	}
	defer vh.Close()
	for _, name := range []string{"lo", "vpc0"} {
		l, err := vh.LinkByName(name)
		if err != nil {
			return fmt.Errorf("vpc netns %s: %w", name, err)
		}
		if err := vh.LinkSetUp(l); err != nil {
			return fmt.Errorf("setting vpc netns %s up: %w", name, err)
		}
		if name == "vpc0" {
			if err := vh.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(router, subnet.Bits()))}); err != nil {
				return fmt.Errorf("adding %s to the VPC router: %w", router, err)
			}
		}
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
