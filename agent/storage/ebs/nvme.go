package ebs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrNotNVMe says a device does not take NVMe admin commands.
var ErrNotNVMe = errors.New("not an NVMe device")

// NVMe issues admin commands to NVMe block devices through the kernel's
// NVME_IOCTL_ADMIN_CMD, as nvme-cli and amazon-ec2-utils' ebsnvme do. It
// needs CAP_SYS_ADMIN. The zero value is ready to use.
type NVMe struct{}

// IdentifyController returns the 4096-byte Identify Controller data of the
// device at path (admin opcode 06h, CNS 01h).
func (NVMe) IdentifyController(ctx context.Context, path string) ([]byte, error) {
	return adminCommand(ctx, path, adminCmd{
		opcode: nvmeAdminIdentify,
		cdw10:  nvmeIdentifyCNSController,
	}, IdentifySize)
}

// StatsLogPage returns the EBS statistics log page of the device at path
// (admin opcode 02h, log 0xD0, namespace 1, as ebsnvme and nvme-cli ask).
func (NVMe) StatsLogPage(ctx context.Context, path string) ([]byte, error) {
	// NUMD counts dwords, zero-based; its low 16 bits go in CDW10[31:16].
	const numd = StatsLogPageSize/4 - 1
	return adminCommand(ctx, path, adminCmd{
		opcode: nvmeAdminGetLogPage,
		nsid:   1,
		cdw10:  StatsLogPageID | numd<<16,
	}, StatsLogPageSize)
}

const (
	nvmeAdminGetLogPage       = 0x02
	nvmeAdminIdentify         = 0x06
	nvmeIdentifyCNSController = 1
	// defaultCommandTimeout bounds a command when ctx has no deadline.
	defaultCommandTimeout = 10 * time.Second
)

// adminCmd is struct nvme_passthru_cmd (alias nvme_admin_cmd) of
// <linux/nvme_ioctl.h>: 72 bytes, laid out with Go's natural alignment
// exactly as the C compiler lays out the C struct.
type adminCmd struct {
	opcode      uint8
	flags       uint8
	rsvd1       uint16
	nsid        uint32
	cdw2        uint32
	cdw3        uint32
	metadata    uint64
	addr        uint64
	metadataLen uint32
	dataLen     uint32
	cdw10       uint32
	cdw11       uint32
	cdw12       uint32
	cdw13       uint32
	cdw14       uint32
	cdw15       uint32
	timeoutMs   uint32
	result      uint32
}

// nvmeIoctlAdminCmd is _IOWR('N', 0x41, struct nvme_admin_cmd), 0xC0484E41.
const nvmeIoctlAdminCmd = 3<<30 | unsafe.Sizeof(adminCmd{})<<16 | 'N'<<8 | 0x41

type adminResult struct {
	data []byte
	err  error
}

// adminCommand runs one admin command that reads size bytes. The ioctl
// cannot be interrupted, so it runs on its own goroutine: a cancelled ctx
// returns at once, and the kernel's command timeout (set from ctx's
// deadline) ends the ioctl itself.
func adminCommand(ctx context.Context, path string, cmd adminCmd, size int) ([]byte, error) {
	timeout := defaultCommandTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	cmd.timeoutMs = uint32(min(timeout, defaultCommandTimeout).Milliseconds())
	done := make(chan adminResult, 1)
	go func() {
		data, err := adminIoctl(path, cmd, size)
		done <- adminResult{data, err}
	}()
	select {
	case r := <-done:
		return r.data, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("NVMe admin command %#02x on %s: %w", cmd.opcode, path, ctx.Err())
	}
}

func adminIoctl(path string, cmd adminCmd, size int) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err // *PathError names the device
	}
	defer f.Close()
	buf := make([]byte, size)
	// The kernel writes into buf through an address stored as an integer,
	// which Go's rules for unsafe.Pointer do not cover: pin it.
	var pin runtime.Pinner
	pin.Pin(&buf[0])
	defer pin.Unpin()
	cmd.addr = uint64(uintptr(unsafe.Pointer(&buf[0])))
	cmd.dataLen = uint32(size)
	conn, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var status uintptr
	var errno unix.Errno
	if err := conn.Control(func(fd uintptr) {
		status, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, nvmeIoctlAdminCmd, uintptr(unsafe.Pointer(&cmd)))
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case errno == unix.ENOTTY || errno == unix.EINVAL:
		// Files and character devices answer ENOTTY, the loop driver
		// EINVAL. The NVMe driver answers our two commands on a namespace
		// without EINVAL: admin passthrough skips the nsid check, and we
		// set no flags.
		return nil, fmt.Errorf("%s: %w (NVME_IOCTL_ADMIN_CMD: %w)", path, ErrNotNVMe, errno)
	case errno != 0:
		return nil, fmt.Errorf("%s: NVMe admin command %#02x: %w", path, cmd.opcode, errno)
	case status != 0:
		// A positive return is the NVMe completion status field.
		return nil, fmt.Errorf("%s: NVMe admin command %#02x failed with status %#x", path, cmd.opcode, status)
	}
	return buf, nil
}
