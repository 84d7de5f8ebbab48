// Package privileged gates tests that need the real kernel or the real control
// plane: Require probes each capability for real (by creating a netns, loading
// a BPF program, asking for a loop device, finding the binaries) and skips the
// test when one is missing, or fails it when CI=true, where a skip would hide
// lost coverage. Privileged tests always skip in -short mode, the fast unit tier.
package privileged

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/sandbox/bpffs"
	"github.com/autonode/autonode/sandbox/netnsutil"
)

// Capability is something a privileged test needs from the machine.
type Capability int

const (
	// Root: the effective user id is 0.
	Root Capability = iota
	// NetAdmin: the process can create network namespaces and veth pairs.
	NetAdmin
	// BPF: the kernel loads a trivial BPF program for us and bpffs is
	// mounted (or mountable) at /sys/fs/bpf.
	BPF
	// Loop: loop devices can be allocated through /dev/loop-control.
	Loop
	// APIServer: kube-apiserver and etcd binaries are in AssetsDir.
	APIServer
)

func (c Capability) String() string {
	switch c {
	case Root:
		return "Root"
	case NetAdmin:
		return "NetAdmin"
	case BPF:
		return "BPF"
	case Loop:
		return "Loop"
	case APIServer:
		return "APIServer"
	}
	return fmt.Sprintf("Capability(%d)", int(c))
}

// probes holds one memoized probe per capability. It is package-level only
// because sync.OnceValue needs somewhere to live: it is never reassigned, and
// each entry is effectively immutable after its first call, so every test in
// the process sees the same answer and each probe runs once.
var probes = map[Capability]func() error{
	Root:      sync.OnceValue(probeRoot),
	NetAdmin:  sync.OnceValue(probeNetAdmin),
	BPF:       sync.OnceValue(probeBPF),
	Loop:      sync.OnceValue(probeLoop),
	APIServer: sync.OnceValue(probeAPIServer),
}

// Require skips the test unless every capability in caps is present. With
// CI=true in the environment it fails instead, naming what is missing. In
// -short mode it always skips.
func Require(tb testing.TB, caps ...Capability) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("privileged test skipped in -short mode")
	}
	for _, c := range caps {
		probe, ok := probes[c]
		if !ok {
			tb.Fatalf("privileged: unknown capability %v", c)
		}
		if err := probe(); err != nil {
			Missing(tb, c.String(), err)
		}
	}
}

// Missing ends the test because something it needs is absent: a skip
// normally, a failure when CI=true. Use it for needs that Require does not
// probe, such as an optional binary.
func Missing(tb testing.TB, what string, reason error) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s unavailable (CI=true, so not skipping): %v", what, reason)
		return
	}
	tb.Skipf("%s unavailable: %v", what, reason)
}

// AssetsDir returns the folder holding the control-plane binaries:
// $KUBEBUILDER_ASSETS when set, otherwise the cache folder that
// hack/testenv.sh fills. It checks that kube-apiserver and etcd are there.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("finding the testenv cache folder: %w", err)
			}
			cache = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(cache, "autonode", "testenv", "k8s-v1.37.2-etcd-v3.7.3")
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if err := executable(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%w (build them with hack/testenv.sh or set KUBEBUILDER_ASSETS)", err)
		}
	}
	return dir, nil
}

// executable checks that path is a regular file with an execute bit.
func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("control-plane binary: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("control-plane binary %s is not an executable file", path)
	}
	return nil
}

func probeRoot() error {
	if uid := unix.Geteuid(); uid != 0 {
		return fmt.Errorf("effective uid is %d, not 0", uid)
	}
	return nil
}

// probeNetAdmin creates an anonymous netns and a veth pair inside it. The
// netns dies with its last file descriptor, taking the veth with it, so the
// probe leaves nothing behind.
func probeNetAdmin() error {
	ns, err := netnsutil.New()
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink handle in probe netns: %w", err)
	}
	defer h.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "probe0"}, PeerName: "probe1"}
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth probe0 in probe netns: %w", err)
	}
	return nil
}

// probeBPF loads "r0 = 0; exit" as a socket filter with the raw bpf(2)
// syscall, the cheapest program every BPF-capable kernel accepts, then makes
// sure bpffs is mounted so pins work.
func probeBPF() error {
	insns := [2]uint64{
		0x00000000000000b7, // BPF_ALU64|BPF_MOV|BPF_K: r0 = 0
		0x0000000000000095, // BPF_JMP|BPF_EXIT
	}
	license := []byte("GPL\x00")
	// The leading fields of union bpf_attr for BPF_PROG_LOAD; the kernel
	// zero-extends a shorter attr.
	attr := struct {
		progType    uint32
		insnCnt     uint32
		insns       uint64
		license     uint64
		logLevel    uint32
		logSize     uint32
		logBuf      uint64
		kernVersion uint32
		progFlags   uint32
	}{
		progType: unix.BPF_PROG_TYPE_SOCKET_FILTER,
		insnCnt:  uint32(len(insns)),
		insns:    uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(&insns)
	runtime.KeepAlive(license)
	if errno != 0 {
		return fmt.Errorf("loading a trivial socket filter with bpf(2): %w", errno)
	}
	unix.Close(int(fd))
	if err := bpffs.Ensure(bpffs.DefaultPath); err != nil {
		return err
	}
	return nil
}

// probeLoop asks the kernel for a free loop device, which allocates its node
// if needed but attaches nothing.
func probeLoop() error {
	f, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening loop control: %w", err)
	}
	defer f.Close()
	n, err := unix.IoctlRetInt(int(f.Fd()), unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return fmt.Errorf("LOOP_CTL_GET_FREE on /dev/loop-control: %w", err)
	}
	dev := fmt.Sprintf("/dev/loop%d", n)
	if _, err := os.Stat(dev); err != nil {
		return fmt.Errorf("free loop device: %w", err)
	}
	return nil
}

func probeAPIServer() error {
	_, err := AssetsDir()
	return err
}
