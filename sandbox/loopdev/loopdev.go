// Package loopdev attaches loop devices over sparse files, which the
// privileged storage tests use as instance-store disks and EBS volumes.
//
// A device is attached with LO_FLAGS_AUTOCLEAR and held open by its Device:
// the kernel detaches it once Detach lets go and no mount uses it any more,
// and also when the test process dies before its cleanup, so a failed run
// leaks no loop devices.
package loopdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Device is an attached loop device.
type Device struct {
	// Path is the device node, /dev/loopN.
	Path string
	// File is the backing file.
	File string
	f    *os.File
}

// attachAttempts bounds the retries when another process takes the free
// device between LOOP_CTL_GET_FREE and LOOP_CONFIGURE: packages run their
// tests in parallel, and each takes loop devices.
const attachAttempts = 50

// Attach attaches file to a free loop device.
func Attach(file string) (*Device, error) {
	img, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening backing file: %w", err)
	}
	// The kernel keeps its own reference to the file once configured.
	defer img.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening loop control: %w", err)
	}
	defer ctl.Close()
	for range attachAttempts {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("LOOP_CTL_GET_FREE for %s: %w", file, err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			time.Sleep(10 * time.Millisecond) // devtmpfs has not made the node yet
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("opening %s for %s: %w", path, file, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(img.Fd()), Info: unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}}
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], file)
		if err := unix.IoctlLoopConfigure(int(f.Fd()), &cfg); err != nil {
			f.Close()
			if errors.Is(err, unix.EBUSY) {
				continue
			}
			return nil, fmt.Errorf("LOOP_CONFIGURE %s over %s: %w", path, file, err)
		}
		return &Device{Path: path, File: file, f: f}, nil
	}
	return nil, fmt.Errorf("attaching %s: no free loop device after %d attempts", file, attachAttempts)
}

// Detach detaches the device, at once when nothing uses it, otherwise when
// its last user (a mount) lets go.
func (d *Device) Detach() error {
	if d.f == nil {
		return nil
	}
	// The kernel only marks a device in use as autoclear (which ours is
	// already) and detaches it on its last close; ENXIO means it is
	// detached already.
	err := unix.IoctlSetInt(int(d.f.Fd()), unix.LOOP_CLR_FD, 0)
	if errors.Is(err, unix.ENXIO) {
		err = nil
	}
	if cerr := d.f.Close(); err == nil {
		err = cerr
	}
	d.f = nil
	if err != nil {
		return fmt.Errorf("detaching %s: %w", d.Path, err)
	}
	return nil
}

// SetCapacity makes the device take the backing file's current size, as
// the kernel does when an attached EBS volume is modified.
func (d *Device) SetCapacity() error {
	if err := unix.IoctlSetInt(int(d.f.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("LOOP_SET_CAPACITY %s: %w", d.Path, err)
	}
	return nil
}

// New attaches a loop device over a new sparse file of size bytes in the
// test's temporary folder, and detaches it when the test ends. Register
// mount cleanups after calling it, so that they run first.
func New(tb testing.TB, size int64) *Device {
	tb.Helper()
	file := filepath.Join(tb.TempDir(), "disk.img")
	f, err := os.Create(file)
	if err != nil {
		tb.Fatal(err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatal(err)
	}
	d, err := Attach(file)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := d.Detach(); err != nil {
			tb.Error(err)
		}
	})
	return d
}
