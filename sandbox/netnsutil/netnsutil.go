// Package netnsutil creates, enters and removes network namespaces without
// leaking a namespace switch to other goroutines. Every switch happens on a
// locked OS thread of a goroutine of its own; a thread whose namespace cannot
// be restored stays locked, so the runtime retires it instead of reusing it.
package netnsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RunDir is where named namespaces are bind-mounted, as iproute2 expects, so
// that `ip netns list` and `ip netns exec` see them.
const RunDir = "/run/netns"

// Do runs fn with ns as the current network namespace. Sockets that fn opens
// stay in ns after Do returns; goroutines that fn starts do not run in ns.
func Do(ns netns.NsHandle, fn func() error) error {
	return onThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("entering netns %s: %w", ns, err)
		}
		return fn()
	})
}

// NewNamed creates the namespace RunDir/name and returns a handle to it; the
// caller stays where it was.
func NewNamed(name string) (netns.NsHandle, error) {
	if err := sharedRunDir(); err != nil {
		return netns.None(), err
	}
	ns := netns.None()
	err := onThread(func() error {
		var err error
		ns, err = netns.NewNamed(name)
		if err != nil {
			// NewNamed leaves its mount point behind when the mount fails.
			_ = os.Remove(filepath.Join(RunDir, name))
			return fmt.Errorf("creating netns %s: %w", name, err)
		}
		return nil
	})
	return ns, err
}

// sharedRunDir makes RunDir a shared mount, as `ip netns add` does, so that
// namespaces created later also appear in mount namespaces copied earlier
// (an agent started with `ip netns exec` sees pods created after it).
func sharedRunDir() error {
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", RunDir, err)
	}
	err := unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet: bind it onto itself
		if err = unix.Mount(RunDir, RunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return fmt.Errorf("making %s a shared mount: %w", RunDir, err)
	}
	return nil
}

// New creates an anonymous namespace; it lives as long as the handle is open.
func New() (netns.NsHandle, error) {
	ns := netns.None()
	err := onThread(func() error {
		var err error
		ns, err = netns.New()
		if err != nil {
			return fmt.Errorf("creating netns: %w", err)
		}
		return nil
	})
	return ns, err
}

// DeleteNamed unmounts and removes RunDir/name. A namespace that is already
// gone is not an error.
func DeleteNamed(name string) error {
	path := filepath.Join(RunDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmounting netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing netns %s: %w", path, err)
	}
	return nil
}

// onThread runs fn on a locked OS thread and restores the thread's network
// namespace afterwards.
func onThread(fn func() error) error {
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
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("restoring the thread's netns: %w", err))
			return // still locked: the runtime retires this thread
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}
