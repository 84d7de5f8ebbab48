// Package locallink puts the link-local addresses that agent services
// answer on (Pod Identity's 169.254.170.23 and fd00:ec2::23, node-local DNS's
// 169.254.20.10) on a link of their own: a dummy link, or an ifb link on
// kernels built without the dummy driver. Both just hold local addresses.
package locallink

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Ensure makes the link name in the network namespace at nsPath ("": the
// current one), sets
// it up and puts each address on it as a host route's worth (/32, /128). It
// adopts what exists, so it can run again after a restart. typ "" means a
// dummy link, or an ifb link on kernels built without the dummy driver
// (CONFIG_DUMMY): both just hold local addresses. It returns the type used.
func Ensure(nsPath, name, typ string, addrs []netip.Addr) (string, error) {
	ns := netns.None()
	if nsPath != "" {
		var err error
		if ns, err = netns.GetFromPath(nsPath); err != nil {
			return "", fmt.Errorf("opening netns %s: %w", nsPath, err)
		}
		defer ns.Close()
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", fmt.Errorf("netlink handle for link %s: %w", name, err)
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		if link, err = addLink(h, name, typ); err != nil {
			return "", err
		}
	case err != nil:
		return "", fmt.Errorf("finding link %s: %w", name, err)
	case typ != "" && link.Type() != typ:
		return "", fmt.Errorf("link %s exists and is a %s, not a %s", name, link.Type(), typ)
	case link.Type() != "dummy" && link.Type() != "ifb":
		return "", fmt.Errorf("link %s exists and is a %s, not a dummy or ifb link", name, link.Type())
	}
	if err := h.LinkSetUp(link); err != nil {
		return "", fmt.Errorf("setting link %s up: %w", name, err)
	}
	for _, a := range addrs {
		prefix := netip.PrefixFrom(a, a.BitLen())
		addr := &netlink.Addr{
			IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())},
			// Without NODAD an IPv6 address stays tentative for a while
			// and cannot be bound; nobody else can hold it anyway.
			Flags: unix.IFA_F_NODAD,
		}
		if a.Is4() {
			addr.Flags = 0
		}
		if err := h.AddrReplace(link, addr); err != nil {
			return "", fmt.Errorf("adding %s to link %s: %w", prefix, name, err)
		}
	}
	return link.Type(), nil
}

// addLink creates the link; with no type asked for, a dummy, or an ifb
// where the kernel does not support dummy links.
func addLink(h *netlink.Handle, name, typ string) (netlink.Link, error) {
	types := []string{typ}
	if typ == "" {
		types = []string{"dummy", "ifb"}
	}
	var errs []error
	for _, t := range types {
		var l netlink.Link = &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if t == "ifb" {
			l = &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name}}
		}
		err := h.LinkAdd(l)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("creating %s link %s: %w", t, name, err))
			if errors.Is(err, unix.EOPNOTSUPP) {
				continue
			}
			return nil, errors.Join(errs...)
		}
		link, err := h.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("finding link %s after creating it: %w", name, err)
		}
		return link, nil
	}
	return nil, errors.Join(errs...)
}
