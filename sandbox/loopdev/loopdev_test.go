package loopdev_test

import (
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/sandbox/loopdev"
	"github.com/autonode/autonode/sandbox/privileged"
)

func size(t *testing.T, dev string) int64 {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n))); errno != 0 {
		t.Fatalf("BLKGETSIZE64 %s: %v", dev, errno)
	}
	return int64(n)
}

// backing returns the file the kernel says backs dev, or "" once detached.
func backing(t *testing.T, dev string) string {
	t.Helper()
	b, err := os.ReadFile("/sys/block/" + strings.TrimPrefix(dev, "/dev/") + "/loop/backing_file")
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestPrivilegedLifecycle(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.Loop)
	d := loopdev.New(t, 1<<20)
	if got := backing(t, d.Path); got != d.File {
		t.Fatalf("%s is backed by %q, want %s", d.Path, got, d.File)
	}
	if got := size(t, d.Path); got != 1<<20 {
		t.Errorf("size %d, want 1 MiB", got)
	}
	if err := os.Truncate(d.File, 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.SetCapacity(); err != nil {
		t.Fatal(err)
	}
	if got := size(t, d.Path); got != 2<<20 {
		t.Errorf("size after SetCapacity %d, want 2 MiB", got)
	}
	path, file := d.Path, d.File
	if err := d.Detach(); err != nil {
		t.Fatal(err)
	}
	if got := backing(t, path); got == file {
		t.Errorf("%s still backed by %s after Detach", path, file)
	}
	if err := d.Detach(); err != nil {
		t.Errorf("second Detach: %v", err)
	}
}

func TestAttachMissingFile(t *testing.T) {
	if _, err := loopdev.Attach(t.TempDir() + "/none.img"); err == nil || !strings.Contains(err.Error(), "none.img") {
		t.Errorf("Attach(missing) = %v, want an error naming the file", err)
	}
}
