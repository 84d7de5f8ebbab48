package bpffs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/sandbox/bpffs"
	"github.com/autonode/autonode/sandbox/privileged"
)

func TestPrivilegedEnsureMountsAndIsIdempotent(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.BPF)

	// A private mount point, so this test never touches the shared one.
	dir := filepath.Join(t.TempDir(), "bpf")
	for i := range 2 { // the second call must see the mount and do nothing
		if err := bpffs.Ensure(dir); err != nil {
			t.Fatalf("Ensure(%s) call %d: %v", dir, i+1, err)
		}
	}
	t.Cleanup(func() {
		// One mount only: if Ensure had mounted twice, the directory would
		// still be bpffs after this unmount.
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
		if ok, err := bpffs.IsMounted(dir); err != nil || ok {
			t.Errorf("after one unmount IsMounted(%s) = %v, %v; want false (Ensure mounted twice?)", dir, ok, err)
		}
	})
	ok, err := bpffs.IsMounted(dir)
	if err != nil || !ok {
		t.Fatalf("IsMounted(%s) = %v, %v; want true", dir, ok, err)
	}
}

func TestIsMountedOnOtherFilesystem(t *testing.T) {
	ok, err := bpffs.IsMounted(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Error("a temp dir reported as bpffs")
	}
	if _, err := bpffs.IsMounted(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("IsMounted on a missing path: want an error")
	}
}

func TestPrivilegedPinRoot(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.BPF)

	var roots []string
	t.Run("inner", func(t *testing.T) {
		for range 2 {
			root := bpffs.PinRoot(t)
			roots = append(roots, root)
			if filepath.Dir(root) != bpffs.DefaultPath {
				t.Errorf("pin root %s is not directly under %s", root, bpffs.DefaultPath)
			}
			if !strings.Contains(filepath.Base(root), "TestPrivilegedPinRoot_inner") {
				t.Errorf("pin root %s does not name the test", root)
			}
			if ok, err := bpffs.IsMounted(root); err != nil || !ok {
				t.Errorf("IsMounted(%s) = %v, %v; want true", root, ok, err)
			}
			// Sub-directories are what pinning code creates.
			if err := os.Mkdir(filepath.Join(root, "maps"), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if roots[0] == roots[1] {
			t.Errorf("two pin roots in one test are both %s", roots[0])
		}
	})
	for _, root := range roots {
		if _, err := os.Stat(root); !os.IsNotExist(err) {
			t.Errorf("pin root %s still there after cleanup (stat: %v)", root, err)
		}
	}
}
