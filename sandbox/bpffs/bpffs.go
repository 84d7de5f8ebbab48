// Package bpffs makes sure a BPF filesystem is mounted and hands each test its
// own pin root under it.
//
// Tests pin maps and links from the root network namespace (`ip netns exec`
// remounts /sys, hiding bpffs), so every test gets a unique directory below
// DefaultPath and removes it when it ends; packages run in parallel never see
// each other's pins.
package bpffs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// DefaultPath is where Linux distributions mount the BPF filesystem.
const DefaultPath = "/sys/fs/bpf"

// IsMounted reports whether path is the root of, or lies inside, a BPF
// filesystem, judged by the statfs magic number.
func IsMounted(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return uint32(st.Type) == unix.BPF_FS_MAGIC, nil
}

// Ensure mounts a BPF filesystem at path (DefaultPath when empty) unless one is
// already there, creating the directory if needed. Mounting twice is harmless
// for the kernel but would hide earlier pins, hence the check.
func Ensure(path string) error {
	if path == "" {
		path = DefaultPath
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("creating bpffs mount point %s: %w", path, err)
	}
	ok, err := IsMounted(path)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	if err := unix.Mount("bpf", path, "bpf", 0, "mode=0700"); err != nil {
		// Another process may have mounted it between our check and our mount.
		if ok, err2 := IsMounted(path); err2 == nil && ok {
			return nil
		}
		return fmt.Errorf("mounting bpffs at %s: %w", path, err)
	}
	return nil
}

// PinRoot ensures bpffs is mounted at DefaultPath and returns a fresh directory
// under it, named after the test plus a random suffix, that is removed with all
// its pins when the test ends. It fails the test when bpffs cannot be used;
// gate callers with privileged.Require(tb, privileged.BPF).
func PinRoot(tb testing.TB) string {
	tb.Helper()
	if err := Ensure(DefaultPath); err != nil {
		tb.Fatalf("bpffs pin root: %v", err)
	}
	dir, err := mkUniqueDir(DefaultPath, tb.Name())
	if err != nil {
		tb.Fatalf("bpffs pin root: %v", err)
	}
	tb.Cleanup(func() {
		// Removing a pin drops the reference it holds; programs still
		// attached elsewhere keep their own.
		if err := os.RemoveAll(dir); err != nil {
			tb.Errorf("removing bpffs pin root %s: %v", dir, err)
		}
	})
	return dir
}

// mkUniqueDir creates parent/<sanitized name>-<random>. bpffs allows only
// directories and pins, and Mkdir fails on a clash, so uniqueness is checked
// by the kernel rather than assumed.
func mkUniqueDir(parent, name string) (string, error) {
	base := sanitize(name)
	for range 8 {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("random suffix: %w", err)
		}
		dir := filepath.Join(parent, "autonode-test-"+base+"-"+hex.EncodeToString(b[:]))
		err := os.Mkdir(dir, 0o700)
		if err == nil {
			return dir, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	return "", fmt.Errorf("no unique directory under %s for %q", parent, name)
}

// sanitize turns a test name (which may contain '/' and spaces) into one
// short path component.
func sanitize(name string) string {
	s := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, name)
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}
