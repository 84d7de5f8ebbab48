package dns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ensureLink makes the dummy link name in the netns at nsPath ("" for the
// current one), sets it up and puts addr on it as a host route's worth. It
// adopts what exists, so it can run again after a restart. On kernels built
// without the dummy driver (CONFIG_DUMMY) it makes an ifb link instead: both
// just hold local addresses. It returns the link's type.
func ensureLink(nsPath, name string, addr netip.Addr) (string, error) {
	ns, err := openNetNS(nsPath)
	if err != nil {
		return "", err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", fmt.Errorf("netlink handle for link %s: %w", name, err)
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		if link, err = addLink(h, name); err != nil {
			return "", err
		}
	case err != nil:
		return "", fmt.Errorf("finding link %s: %w", name, err)
	case link.Type() != "dummy" && link.Type() != "ifb":
		return "", fmt.Errorf("link %s exists and is a %s, not a dummy or ifb link", name, link.Type())
	}
	if err := h.LinkSetUp(link); err != nil {
		return "", fmt.Errorf("setting link %s up: %w", name, err)
	}
	ipnet := &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(addr.BitLen(), addr.BitLen())}
	// AddrReplace, unlike AddrAdd, succeeds when the address is already there.
	if err := h.AddrReplace(link, &netlink.Addr{IPNet: ipnet}); err != nil {
		return "", fmt.Errorf("adding %s to link %s: %w", addr, name, err)
	}
	return link.Type(), nil
}

// addLink creates a dummy link, or an ifb link where the kernel has no
// dummy driver.
func addLink(h *netlink.Handle, name string) (netlink.Link, error) {
	var errs []error
	for _, l := range []netlink.Link{
		&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}},
		&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name}},
	} {
		err := h.LinkAdd(l)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("creating %s link %s: %w", l.Type(), name, err))
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

// listen binds UDP and TCP on the configured address, in Options.NetNS if
// set. With PortAny both take the port the kernel gives UDP, retrying when
// TCP finds it taken.
func (r *Resolver) listen() (net.PacketConn, net.Listener, error) {
	ns, err := openNetNS(r.opts.NetNS)
	if err != nil {
		return nil, nil, err
	}
	defer ns.Close()
	var (
		udp net.PacketConn
		tcp net.Listener
	)
	err = inNetNS(ns, func() error {
		port := max(r.opts.Port, 0)
		var err error
		for range 10 {
			addr := net.JoinHostPort(r.opts.Address.String(), strconv.Itoa(port))
			if udp, err = net.ListenPacket("udp", addr); err != nil {
				return fmt.Errorf("DNS listener on udp %s: %w", addr, err)
			}
			addr = udp.LocalAddr().String()
			if tcp, err = net.Listen("tcp", addr); err == nil {
				return nil
			}
			_ = udp.Close()
			if r.opts.Port != PortAny || !errors.Is(err, unix.EADDRINUSE) {
				break
			}
		}
		return fmt.Errorf("DNS listener on tcp %s: %w", net.JoinHostPort(r.opts.Address.String(), strconv.Itoa(port)), err)
	})
	if err != nil {
		return nil, nil, err
	}
	return udp, tcp, nil
}

func openNetNS(path string) (netns.NsHandle, error) {
	if path == "" {
		return netns.None(), nil
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return netns.None(), fmt.Errorf("opening netns %s: %w", path, err)
	}
	return ns, nil
}

// inNetNS runs fn with ns as the thread's network namespace (netns.None():
// stay put). Sockets fn opens stay in ns. A thread whose namespace cannot be
// restored stays locked, so the runtime retires it instead of reusing it.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering netns %s: %w", ns, err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("restoring the thread's netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}
