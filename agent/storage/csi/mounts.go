package csi

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// mountAt returns the topmost mount at path, or nil when path is not a
// mount point (or does not exist).
func mountAt(path string) (*mountinfo.Info, error) {
	// The mount table lists paths with symlinks resolved.
	real, err := filepath.EvalSymlinks(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", path, err)
	}
	mounts, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(real))
	if err != nil {
		return nil, fmt.Errorf("reading the mount table for %s: %w", path, err)
	}
	if len(mounts) == 0 {
		return nil, nil
	}
	return mounts[len(mounts)-1], nil // later entries cover earlier ones
}

// mountOfDevice says whether m is a file system on the block device node
// device.
func mountOfDevice(m *mountinfo.Info, device string) (bool, error) {
	rdev, err := deviceNumber(device)
	if err != nil {
		return false, err
	}
	return unix.Major(rdev) == uint32(m.Major) && unix.Minor(rdev) == uint32(m.Minor), nil
}

// sameDeviceNode says whether path is a node of the same block device as
// device: a raw block volume's target, bound from the device node.
func sameDeviceNode(path, device string) (bool, error) {
	want, err := deviceNumber(device)
	if err != nil {
		return false, err
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == want, nil
}

func deviceNumber(device string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(device, &st); err != nil {
		return 0, fmt.Errorf("stat device %s: %w", device, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, fmt.Errorf("%s is not a block device", device)
	}
	return st.Rdev, nil
}

// mountReadOnly reads the per-mount options of a mountinfo entry.
func mountReadOnly(options string) bool {
	return slices.Contains(strings.Split(options, ","), "ro")
}

// deviceSize is a block device's size in bytes (BLKGETSIZE64).
func deviceSize(device string) (int64, error) {
	f, err := os.Open(device)
	if err != nil {
		return 0, fmt.Errorf("opening device %s: %w", device, err)
	}
	defer func() { _ = f.Close() }()
	conn, err := f.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("device %s: %w", device, err)
	}
	var size uint64
	var ioctlErr error
	if err := conn.Control(func(fd uintptr) {
		size, ioctlErr = ioctlBlockSize(int(fd))
	}); err != nil {
		return 0, fmt.Errorf("device %s: %w", device, err)
	}
	if ioctlErr != nil {
		return 0, fmt.Errorf("BLKGETSIZE64 on %s: %w", device, ioctlErr)
	}
	return int64(size), nil
}

// firstNonZero returns the offset of the first non-zero byte among the first
// n bytes of device (fewer when the device is smaller), or -1.
func firstNonZero(device string, n int64) (int64, error) {
	f, err := os.Open(device)
	if err != nil {
		return 0, fmt.Errorf("opening device %s: %w", device, err)
	}
	defer func() { _ = f.Close() }()
	buf := make([]byte, 64<<10)
	var off int64
	for off < n {
		k, err := f.ReadAt(buf[:min(int64(len(buf)), n-off)], off)
		if i := slices.IndexFunc(buf[:k], func(b byte) bool { return b != 0 }); i >= 0 {
			return off + int64(i), nil
		}
		off += int64(k)
		if errors.Is(err, io.EOF) {
			return -1, nil
		}
		if err != nil {
			return 0, fmt.Errorf("reading device %s: %w", device, err)
		}
	}
	return -1, nil
}

// fsUsage is a mounted file system's capacity and use.
type fsUsage struct {
	totalBytes, availableBytes, usedBytes int64
	totalInodes, freeInodes, usedInodes   int64
}

// fsStats reads the usage of the file system mounted at path. Available is
// what an unprivileged writer may still use; used counts the root reserve
// as free, as df does.
func fsStats(path string) (fsUsage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fsUsage{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := st.Bsize
	return fsUsage{
		totalBytes:     int64(st.Blocks) * bs,
		availableBytes: int64(st.Bavail) * bs,
		usedBytes:      int64(st.Blocks-st.Bfree) * bs,
		totalInodes:    int64(st.Files),
		freeInodes:     int64(st.Ffree),
		usedInodes:     int64(st.Files - st.Ffree),
	}, nil
}

func ioctlBlockSize(fd int) (uint64, error) {
	var size uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); errno != 0 {
		return 0, errno
	}
	return size, nil
}
