package localnode

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 keeps named namespaces, so that `ip netns exec`
// and `ip netns list` see ours.
const netnsDir = "/run/netns"

// createNetns makes a named network namespace without moving the caller
// into it: netns.NewNamed switches the calling thread, so it runs on a
// locked thread that is switched back.
func createNetns(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	if err != nil {
		return 0, fmt.Errorf("creating netns %s: %w", name, err)
	}
	if err := netns.Set(orig); err != nil {
		// This thread is in the wrong namespace: keep it locked so that the
		// runtime retires it rather than reusing it.
		runtime.LockOSThread()
		return 0, fmt.Errorf("returning from netns %s: %w", name, err)
	}
	return ns, nil
}

// deleteNetns closes and removes a named namespace; a missing one is fine.
func deleteNetns(ns netns.NsHandle, name string) error {
	if ns.IsOpen() {
		ns.Close()
	}
	path := filepath.Join(netnsDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmounting netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("removing netns %s: %w", path, err)
	}
	return nil
}

// inNetns runs fn on a thread switched into ns. Sockets created by fn stay
// in ns after it returns, which is how the sandbox serves inside the node's
// namespace from this process.
func inNetns(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("entering netns: %w", err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		runtime.LockOSThread() // see createNetns
		return fmt.Errorf("leaving netns: %w", err)
	}
	return fnErr
}

// listenIn opens a TCP listener inside ns.
func listenIn(ns netns.NsHandle, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNetns(ns, func() error {
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
