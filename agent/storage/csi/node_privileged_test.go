package csi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"github.com/autonode/autonode/sandbox/loopdev"
	"github.com/autonode/autonode/sandbox/privileged"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
	// volumeSize suits both file systems: mkfs.xfs wants at least 300 MiB.
	volumeSize = 512 * mib
)

// volumePaths are a staging folder and two publish targets, unmounted when
// the test ends whatever happened.
type volumePaths struct{ staging, target, roTarget string }

func newVolumePaths(t *testing.T) volumePaths {
	t.Helper()
	dir := t.TempDir()
	p := volumePaths{
		staging:  filepath.Join(dir, "globalmount"),
		target:   filepath.Join(dir, "pods", "a", "mount"),
		roTarget: filepath.Join(dir, "pods", "b", "mount"),
	}
	unmountOnCleanup(t, p.target, p.roTarget, p.staging)
	return p
}

func (h *harness) stage(t *testing.T, volID, staging string, vc *csi.VolumeCapability) error {
	t.Helper()
	_, err := h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: volID, StagingTargetPath: staging, VolumeCapability: vc})
	return err
}

func (h *harness) publish(t *testing.T, volID, staging, target string, vc *csi.VolumeCapability, readOnly bool) error {
	t.Helper()
	_, err := h.node.NodePublishVolume(t.Context(), &csi.NodePublishVolumeRequest{
		VolumeId: volID, StagingTargetPath: staging, TargetPath: target, VolumeCapability: vc, Readonly: readOnly,
	})
	return err
}

func (h *harness) unpublish(t *testing.T, volID, target string) error {
	t.Helper()
	_, err := h.node.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: volID, TargetPath: target})
	return err
}

func (h *harness) unstage(t *testing.T, volID, staging string) error {
	t.Helper()
	_, err := h.node.NodeUnstageVolume(t.Context(), &csi.NodeUnstageVolumeRequest{VolumeId: volID, StagingTargetPath: staging})
	return err
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func mounted(t *testing.T, path string) bool {
	t.Helper()
	m, err := mountAt(path)
	if err != nil {
		t.Fatal(err)
	}
	return m != nil
}

// TestPrivilegedFileSystemLifecycle stages a blank volume (formatting it),
// publishes it read-write and read-only, repeats every call, reads stats,
// then tears everything down twice and stages again as after a reboot: the
// data is still there, with no second format.
func TestPrivilegedFileSystemLifecycle(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.Loop)
	for _, fsType := range []string{"ext4", "xfs"} {
		t.Run(fsType, func(t *testing.T) {
			h := startDriver(t, Options{})
			loop := loopdev.New(t, volumeSize)
			const volID = "vol-0123456789abcdef0"
			h.locator.add(volID, loop.Path)
			p := newVolumePaths(t)
			vc := mountCap(fsType, rwo, "noatime")

			for i := range 2 {
				must(t, "stage", h.stage(t, volID, p.staging, vc))
				if got := blkidType(t, loop.Path); got != fsType {
					t.Fatalf("after stage %d the device holds %q, want %s", i, got, fsType)
				}
			}
			m, err := mountAt(p.staging)
			if err != nil || m == nil {
				t.Fatalf("staging path not mounted: %v", err)
			}
			if ok, _ := mountOfDevice(m, loop.Path); !ok || m.FSType != fsType || !strings.Contains(m.Options, "noatime") {
				t.Errorf("staging mount %+v: want %s on %s with noatime", m, fsType, loop.Path)
			}

			for range 2 {
				must(t, "publish", h.publish(t, volID, p.staging, p.target, vc, false))
				must(t, "publish read-only", h.publish(t, volID, p.staging, p.roTarget, vc, true))
			}
			data := []byte("written through the pod's mount\n")
			must(t, "write", os.WriteFile(filepath.Join(p.target, "data"), data, 0o600))
			if got, err := os.ReadFile(filepath.Join(p.roTarget, "data")); err != nil || !bytes.Equal(got, data) {
				t.Errorf("read through the read-only mount: %q, %v", got, err)
			}
			if err := os.WriteFile(filepath.Join(p.roTarget, "other"), data, 0o600); !errors.Is(err, unix.EROFS) {
				t.Errorf("write through the read-only mount: %v, want EROFS", err)
			}
			// The same target asked for again read-only is a conflict.
			wantCode(t, h.publish(t, volID, p.staging, p.target, vc, true), codes.AlreadyExists)

			stats, err := h.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: volID, VolumePath: p.target})
			must(t, "stats", err)
			checkFSStats(t, stats, volumeSize)
			wantCode(t, func() error {
				_, err := h.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: volID, VolumePath: filepath.Dir(p.staging)})
				return err
			}(), codes.NotFound)

			for range 2 {
				must(t, "unpublish", h.unpublish(t, volID, p.target))
				must(t, "unpublish read-only", h.unpublish(t, volID, p.roTarget))
				must(t, "unstage", h.unstage(t, volID, p.staging))
			}
			for _, path := range []string{p.target, p.roTarget} {
				if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("target %s still there after unpublish: %v", path, err)
				}
			}
			if mounted(t, p.staging) {
				t.Errorf("staging path still mounted after unstage")
			}

			// As after a reboot: the same volume again keeps its data.
			must(t, "stage again", h.stage(t, volID, p.staging, vc))
			must(t, "publish again", h.publish(t, volID, p.staging, p.target, vc, false))
			if got, err := os.ReadFile(filepath.Join(p.target, "data")); err != nil || !bytes.Equal(got, data) {
				t.Errorf("data after staging again: %q, %v; the volume was formatted twice?", got, err)
			}
			must(t, "unpublish", h.unpublish(t, volID, p.target))
			must(t, "unstage", h.unstage(t, volID, p.staging))
		})
	}
}

func checkFSStats(t *testing.T, stats *csi.NodeGetVolumeStatsResponse, size int64) {
	t.Helper()
	var bytesSeen, inodesSeen bool
	for _, u := range stats.GetUsage() {
		if u.GetTotal() <= 0 || u.GetUsed() < 0 || u.GetAvailable() <= 0 || u.GetAvailable() > u.GetTotal() {
			t.Errorf("implausible usage %v", u)
		}
		switch u.GetUnit() {
		case csi.VolumeUsage_BYTES:
			bytesSeen = true
			// File-system overhead takes some, but not most, of the device.
			if u.GetTotal() > size || u.GetTotal() < size*8/10 {
				t.Errorf("total bytes %d for a %d-byte device", u.GetTotal(), size)
			}
		case csi.VolumeUsage_INODES:
			inodesSeen = true
			if u.GetUsed() < 1 {
				t.Errorf("inodes used %d: the root folder alone uses one", u.GetUsed())
			}
		}
	}
	if !bytesSeen || !inodesSeen {
		t.Errorf("stats %v: want bytes and inodes", stats)
	}
}

// TestPrivilegedBlockVolume publishes a raw block volume: the target is a
// file with the device bound onto it, so that what is written there lands
// on the device.
func TestPrivilegedBlockVolume(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.Loop)
	h := startDriver(t, Options{})
	loop := loopdev.New(t, 64*mib)
	const volID = "vol-0b10c000000000000"
	h.locator.add(volID, loop.Path)
	p := newVolumePaths(t)
	vc := blockCap(rwo)

	for range 2 {
		must(t, "stage", h.stage(t, volID, p.staging, vc))
		must(t, "publish", h.publish(t, volID, p.staging, p.target, vc, false))
		must(t, "publish read-only", h.publish(t, volID, p.staging, p.roTarget, vc, true))
	}
	if mounted(t, p.staging) {
		t.Error("a block volume was mounted at the staging path")
	}
	if got := blkidType(t, loop.Path); got != "" {
		t.Errorf("a block volume was formatted: %s", got)
	}
	m, err := mountAt(p.roTarget)
	if err != nil || m == nil || !mountReadOnly(m.Options) {
		t.Errorf("read-only block target: mount %+v, %v", m, err)
	}

	data := []byte("raw bytes from the pod")
	f, err := os.OpenFile(p.target, os.O_WRONLY, 0)
	must(t, "open target", err)
	_, err = f.WriteAt(data, 4096)
	must(t, "write target", err)
	must(t, "sync", f.Sync())
	must(t, "close", f.Close())
	dev, err := os.Open(loop.Path)
	must(t, "open device", err)
	got := make([]byte, len(data))
	_, err = dev.ReadAt(got, 4096)
	_ = dev.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("device holds %q, %v; want what was written through the target", got, err)
	}

	stats, err := h.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: volID, VolumePath: p.target})
	must(t, "stats", err)
	if u := stats.GetUsage(); len(u) != 1 || u[0].GetUnit() != csi.VolumeUsage_BYTES || u[0].GetTotal() != 64*mib {
		t.Errorf("block stats %v, want total %d bytes", u, 64*mib)
	}
	grow(t, loop, 128*mib)
	exp, err := h.node.NodeExpandVolume(t.Context(), &csi.NodeExpandVolumeRequest{VolumeId: volID, VolumePath: p.target,
		VolumeCapability: vc, CapacityRange: &csi.CapacityRange{RequiredBytes: 128 * mib}})
	must(t, "expand", err)
	if exp.GetCapacityBytes() != 128*mib {
		t.Errorf("expand = %d bytes, want %d", exp.GetCapacityBytes(), 128*mib)
	}

	for range 2 {
		must(t, "unpublish", h.unpublish(t, volID, p.target))
		must(t, "unpublish read-only", h.unpublish(t, volID, p.roTarget))
		must(t, "unstage", h.unstage(t, volID, p.staging))
	}
	for _, path := range []string{p.target, p.roTarget} {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("target file %s still there after unpublish: %v", path, err)
		}
	}
}

// TestPrivilegedExpand grows the device under a published volume, as an
// EBS volume modification does, and expects the file system to follow.
func TestPrivilegedExpand(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.Loop)
	for _, fsType := range []string{"ext4", "xfs"} {
		t.Run(fsType, func(t *testing.T) {
			h := startDriver(t, Options{})
			loop := loopdev.New(t, volumeSize)
			const volID = "vol-0e0000000000000e1"
			h.locator.add(volID, loop.Path)
			p := newVolumePaths(t)
			vc := mountCap(fsType, rwo)
			must(t, "stage", h.stage(t, volID, p.staging, vc))
			must(t, "publish", h.publish(t, volID, p.staging, p.target, vc, false))
			before := statfsBytes(t, p.target)

			expand := func(required int64) (*csi.NodeExpandVolumeResponse, error) {
				return h.node.NodeExpandVolume(t.Context(), &csi.NodeExpandVolumeRequest{
					VolumeId: volID, VolumePath: p.target, CapacityRange: &csi.CapacityRange{RequiredBytes: required},
				})
			}
			// The device has not grown yet: the kubelet must retry.
			_, err := expand(gib)
			wantCode(t, err, codes.FailedPrecondition)

			grow(t, loop, gib)
			// resize2fs grows a mounted ext4 through an ioctl that needs
			// CAP_SYS_RESOURCE, which some sandboxes (this project's
			// included) drop even for root. There the call must fail
			// clearly and leave the volume as it was.
			if capErr := requireCapability(unix.CAP_SYS_RESOURCE); fsType == "ext4" && capErr != nil {
				t.Logf("ext4 growth not verifiable here (%v); checking the failure instead", capErr)
				_, err := expand(gib)
				wantCode(t, err, codes.Internal)
				if !strings.Contains(err.Error(), volID) || !strings.Contains(err.Error(), "resize2fs") {
					t.Errorf("error %q names neither the volume nor resize2fs", err)
				}
				if got := statfsBytes(t, p.target); got != before {
					t.Errorf("file system size changed from %d to %d after a failed resize", before, got)
				}
				must(t, "unpublish", h.unpublish(t, volID, p.target))
				must(t, "unstage", h.unstage(t, volID, p.staging))
				return
			}
			for range 2 {
				resp, err := expand(gib)
				must(t, "expand", err)
				if resp.GetCapacityBytes() != gib {
					t.Errorf("capacity %d, want %d", resp.GetCapacityBytes(), gib)
				}
			}
			after := statfsBytes(t, p.target)
			if after < before+400*mib {
				t.Errorf("file system grew from %d to %d bytes on a device grown by 512 MiB", before, after)
			}
			stats, err := h.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: volID, VolumePath: p.target})
			must(t, "stats", err)
			checkFSStats(t, stats, gib)
			must(t, "unpublish", h.unpublish(t, volID, p.target))
			must(t, "unstage", h.unstage(t, volID, p.staging))
		})
	}
}

// requireCapability reports whether the process holds capability c.
func requireCapability(c int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	if data[c/32].Effective&(1<<(uint(c)%32)) == 0 {
		return fmt.Errorf("capability %d is not in the effective set", c)
	}
	return nil
}

func statfsBytes(t *testing.T, path string) int64 {
	t.Helper()
	u, err := fsStats(path)
	must(t, "statfs", err)
	return u.totalBytes
}

// TestPrivilegedRefusesForeignData never formats or mounts a device that
// holds something other than the requested file system.
func TestPrivilegedRefusesForeignData(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.Loop)
	tests := []struct {
		name    string
		prepare func(t *testing.T, device string)
		vc      *csi.VolumeCapability
		code    codes.Code
		msg     string
		keeps   string // what blkid must still report
	}{
		{"xfs where ext4 is asked for", func(t *testing.T, d string) { mkfs(t, "xfs", d) }, mountCap("ext4", rwo),
			codes.FailedPrecondition, "holds a xfs file system, not the requested ext4", "xfs"},
		{"ext4 where xfs is asked for", func(t *testing.T, d string) { mkfs(t, "ext4", d) }, mountCap("xfs", rwo),
			codes.FailedPrecondition, "holds a ext4 file system, not the requested xfs", "ext4"},
		{"a partition table", writeMBR, mountCap("ext4", rwo),
			codes.FailedPrecondition, "holds a partition table", "dos"},
		{"data blkid does not know", func(t *testing.T, d string) { writeAt(t, d, 8192, []byte("precious bytes")) }, mountCap("ext4", rwo),
			codes.FailedPrecondition, "holds data that blkid does not recognise (a non-zero byte at offset 8192)", ""},
		{"blank and read-only", func(*testing.T, string) {}, mountCap("ext4", csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY),
			codes.FailedPrecondition, "blank and its access mode is read-only", ""},
	}
	h := startDriver(t, Options{})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loop := loopdev.New(t, volumeSize)
			tt.prepare(t, loop.Path)
			before := head(t, loop.Path)
			volID := "vol-0f0000000000000f" + string(rune('0'+i))
			h.locator.add(volID, loop.Path)
			p := newVolumePaths(t)
			err := h.stage(t, volID, p.staging, tt.vc)
			wantCode(t, err, tt.code)
			if !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), volID) {
				t.Errorf("error %q does not say %q about %s", err, tt.msg, volID)
			}
			if got := blkidType(t, loop.Path); got != tt.keeps {
				t.Errorf("device now holds %q, want %q untouched", got, tt.keeps)
			}
			if !bytes.Equal(head(t, loop.Path), before) {
				t.Error("the device's first MiB changed")
			}
			if mounted(t, p.staging) {
				t.Error("the refused device was mounted")
			}
		})
	}
}

// writeMBR writes a DOS partition table with one Linux partition.
func writeMBR(t *testing.T, device string) {
	t.Helper()
	mbr := make([]byte, 512)
	entry := mbr[446:462]
	entry[4] = 0x83                              // Linux
	copy(entry[8:12], []byte{0x00, 0x08, 0, 0})  // first LBA 2048
	copy(entry[12:16], []byte{0x00, 0x00, 1, 0}) // 65536 sectors
	mbr[510], mbr[511] = 0x55, 0xaa
	writeAt(t, device, 0, mbr)
}

// head reads a device's first MiB, where every signature sits.
func head(t *testing.T, device string) []byte {
	t.Helper()
	f, err := os.Open(device)
	must(t, "open", err)
	defer func() { _ = f.Close() }()
	b := make([]byte, 1<<20)
	_, err = f.ReadAt(b, 0)
	must(t, "read", err)
	return b
}

func writeAt(t *testing.T, device string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(device, os.O_WRONLY, 0)
	must(t, "open", err)
	_, err = f.WriteAt(data, off)
	must(t, "write", err)
	must(t, "sync", f.Sync())
	must(t, "close", f.Close())
}

// TestPrivilegedConflicts covers paths that already hold something else.
func TestPrivilegedConflicts(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.Loop)
	h := startDriver(t, Options{})
	a, b := loopdev.New(t, 64*mib), loopdev.New(t, 64*mib)
	const volA, volB = "vol-0a000000000000000", "vol-0b000000000000000"
	h.locator.add(volA, a.Path)
	h.locator.add(volB, b.Path)
	p := newVolumePaths(t)
	vc := mountCap("ext4", rwo)
	must(t, "stage a", h.stage(t, volA, p.staging, vc))
	must(t, "publish a", h.publish(t, volA, p.staging, p.target, vc, false))

	wantCode(t, h.stage(t, volB, p.staging, vc), codes.AlreadyExists)
	wantCode(t, h.stage(t, volA, p.staging, mountCap("xfs", rwo)), codes.AlreadyExists)
	_, err := h.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: volB, VolumePath: p.target})
	wantCode(t, err, codes.NotFound)
	_, err = h.node.NodeExpandVolume(t.Context(), &csi.NodeExpandVolumeRequest{VolumeId: volB, VolumePath: p.target})
	wantCode(t, err, codes.NotFound)
	// A block publish onto a target that holds a file system.
	wantCode(t, h.publish(t, volB, p.staging, p.target, blockCap(rwo), false), codes.AlreadyExists)

	// The volume detached under the driver: stats say so.
	h.locator.remove(volA)
	_, err = h.node.NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: volA, VolumePath: p.target})
	wantCode(t, err, codes.NotFound)
	// Teardown needs no device.
	must(t, "unpublish", h.unpublish(t, volA, p.target))
	must(t, "unstage", h.unstage(t, volA, p.staging))
}

// verifyingLocator also identifies the device again before it is mounted,
// as the EBS locator does; verify says what it finds.
type verifyingLocator struct {
	*fixtureLocator
	verify func(volumeID, device string) error
}

func (l verifyingLocator) Verify(_ context.Context, volumeID, device string) error {
	return l.verify(volumeID, device)
}

// TestPrivilegedVerifiesBeforeFormatting: when the device found by volume id
// identifies as another volume by the time it would be formatted (detached
// and its name reused), nothing is formatted or mounted.
func TestPrivilegedVerifiesBeforeFormatting(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.Loop)
	const volID = "vol-0c0000000000000c1"
	var verified []string
	loc := verifyingLocator{fixtureLocator: newFixtureLocator(), verify: func(v, d string) error {
		verified = append(verified, v+"@"+d)
		return fmt.Errorf("device %s is not EBS volume %s: it holds vol-0d0000000000000d1", d, v)
	}}
	h := startDriver(t, Options{Locator: loc})
	loop := loopdev.New(t, 64*mib)
	loc.add(volID, loop.Path)
	p := newVolumePaths(t)

	err := h.stage(t, volID, p.staging, mountCap("ext4", rwo))
	wantCode(t, err, codes.Aborted)
	if !strings.Contains(err.Error(), "vol-0d0000000000000d1") {
		t.Errorf("error %q does not carry the verification's reason", err)
	}
	if got := blkidType(t, loop.Path); got != "" || mounted(t, p.staging) {
		t.Errorf("device formatted (%q) or mounted after a failed verification", got)
	}
	if len(verified) != 1 || verified[0] != volID+"@"+loop.Path {
		t.Errorf("verified %v, want %s at %s once", verified, volID, loop.Path)
	}
}

// TestPrivilegedFormatParameters formats blank volumes with the
// StorageClass parameters the upstream controller passes in the volume
// context, and reads the result back from the file system.
func TestPrivilegedFormatParameters(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.Loop)
	h := startDriver(t, Options{})
	tests := []struct {
		name    string
		fsType  string
		context map[string]string
		inspect []string // command printing the file system's parameters
		want    []string // lines it must print
	}{
		{"ext4 sizes", "ext4", map[string]string{blockSizeKey: "1024", inodeSizeKey: "512"},
			[]string{"dumpe2fs", "-h"}, []string{"Block size:               1024", "Inode size:	          512"}},
		{"ext4 bigalloc", "ext4", map[string]string{ext4BigAllocKey: "true", ext4ClusterSizeKey: "65536"},
			[]string{"dumpe2fs", "-h"}, []string{"Cluster size:             65536"}},
		{"xfs inode size", "xfs", map[string]string{inodeSizeKey: "1024"},
			[]string{"xfs_db", "-r", "-c", "sb 0", "-c", "p inodesize"}, []string{"inodesize = 1024"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loop := loopdev.New(t, volumeSize)
			volID := fmt.Sprintf("vol-0f000000000000a%02d", i)
			h.locator.add(volID, loop.Path)
			p := newVolumePaths(t)
			_, err := h.node.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: volID, StagingTargetPath: p.staging,
				VolumeCapability: mountCap(tt.fsType, rwo), VolumeContext: tt.context})
			must(t, "stage", err)
			out, err := exec.Command(tt.inspect[0], append(tt.inspect[1:], loop.Path)...).CombinedOutput()
			must(t, tt.inspect[0], err)
			for _, line := range tt.want {
				if !strings.Contains(string(out), line) {
					t.Errorf("%s does not print %q:\n%s", tt.inspect[0], line, out)
				}
			}
			must(t, "unstage", h.unstage(t, volID, p.staging))
		})
	}
}

// TestPrivilegedXFSClone stages an xfs volume and a byte-for-byte copy of
// it, as a volume and one restored from its snapshot, at the same time:
// they share a file-system UUID, which xfs refuses without nouuid.
func TestPrivilegedXFSClone(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.Loop)
	h := startDriver(t, Options{})
	orig := loopdev.New(t, volumeSize)
	mkfs(t, "xfs", orig.Path)
	cloneFile := filepath.Join(t.TempDir(), "clone.img")
	if out, err := exec.Command("cp", "--sparse=always", orig.File, cloneFile).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	clone := attachLoopFile(t, cloneFile)
	const a, b = "vol-0a0000000000000c0", "vol-0b0000000000000c0"
	h.locator.add(a, orig.Path)
	h.locator.add(b, clone.Path)
	pa, pb := newVolumePaths(t), newVolumePaths(t)
	must(t, "stage the volume", h.stage(t, a, pa.staging, mountCap("xfs", rwo)))
	must(t, "stage its clone", h.stage(t, b, pb.staging, mountCap("xfs", rwo)))
	must(t, "unstage", h.unstage(t, a, pa.staging))
	must(t, "unstage", h.unstage(t, b, pb.staging))
}
