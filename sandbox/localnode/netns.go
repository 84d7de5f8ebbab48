package localnode

import (
	"fmt"
	"net"

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
