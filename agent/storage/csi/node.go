package csi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// node is the CSI Node service.
type node struct {
	csi.UnimplementedNodeServer
	d *Driver
}

// defaultFSType is the file system of a blank volume whose capability names
// none, as in the upstream driver and the kubelet.
const defaultFSType = "ext4"

// supportedFSTypes are the file systems the driver creates and mounts.
func supportedFSTypes() []string { return []string{"ext2", "ext3", "ext4", "xfs"} }

// partitionsFormat is what mount-utils' GetDiskFormat reports for a device
// that carries a partition table.
const partitionsFormat = "unknown data, probably partitions"

// blankProbeBytes is how much of a device without a known signature must
// read as zeros before it is formatted: every file system, partition table
// and RAID or LVM label that Linux knows puts something there.
const blankProbeBytes = 1 << 20

// volumeCap is a checked VolumeCapability.
type volumeCap struct {
	block    bool
	fsType   string   // mount volumes only
	flags    []string // mount volumes only
	readOnly bool     // the access mode allows no writer
}

// parseCapability checks a capability against what an EBS volume on one
// node supports: one node reading or writing, or, for io2 Multi-Attach,
// raw block shared by several nodes.
func parseCapability(c *csi.VolumeCapability) (volumeCap, error) {
	var vc volumeCap
	if c == nil {
		return vc, status.Error(codes.InvalidArgument, "volume_capability is missing")
	}
	switch c.GetAccessType().(type) {
	case *csi.VolumeCapability_Block:
		vc.block = true
	case *csi.VolumeCapability_Mount:
		m := c.GetMount()
		vc.fsType = m.GetFsType()
		if vc.fsType == "" {
			vc.fsType = defaultFSType
		}
		if !slices.Contains(supportedFSTypes(), vc.fsType) {
			return vc, status.Errorf(codes.InvalidArgument, "fs_type %q is not supported; use one of %v", vc.fsType, supportedFSTypes())
		}
		if m.GetVolumeMountGroup() != "" {
			return vc, status.Error(codes.InvalidArgument, "volume_mount_group is not supported (no VOLUME_MOUNT_GROUP capability)")
		}
		vc.flags = m.GetMountFlags()
	default:
		return vc, status.Error(codes.InvalidArgument, "volume_capability has no access type (block or mount)")
	}
	switch mode := c.GetAccessMode().GetMode(); mode {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER:
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:
		vc.readOnly = true
	case csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		if !vc.block {
			return vc, status.Error(codes.FailedPrecondition, "access mode MULTI_NODE_MULTI_WRITER needs a raw block volume: EBS Multi-Attach shares no file system")
		}
	case csi.VolumeCapability_AccessMode_UNKNOWN:
		return vc, status.Error(codes.InvalidArgument, "volume_capability has no access mode")
	default:
		return vc, status.Errorf(codes.FailedPrecondition, "access mode %s is not supported", mode)
	}
	return vc, nil
}

// deviceVerifier is what a VolumeLocator may also offer: identifying a
// device again right before it is formatted and mounted, since a detach and
// reattach can give its name to another volume in between.
type deviceVerifier interface {
	Verify(ctx context.Context, volumeID, devicePath string) error
}

// locate finds the device of volumeID.
func (d *Driver) locate(ctx context.Context, volumeID string) (string, error) {
	dev, err := d.opts.Locator.Locate(ctx, volumeID)
	switch {
	case err == nil:
		return dev, nil
	case ctx.Err() != nil:
		return "", status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, fs.ErrNotExist):
		return "", status.Errorf(codes.NotFound, "volume %s is not attached to this node: %v", volumeID, err)
	}
	return "", status.Errorf(codes.Internal, "finding the device of volume %s: %v", volumeID, err)
}

func required(field, value string) error {
	if value == "" {
		return status.Errorf(codes.InvalidArgument, "%s is missing", field)
	}
	return nil
}

func requiredPath(field, value string) error {
	if err := required(field, value); err != nil {
		return err
	}
	if !filepath.IsAbs(value) {
		return status.Errorf(codes.InvalidArgument, "%s %q is not an absolute path", field, value)
	}
	return nil
}

// NodeStageVolume mounts the volume's device at the staging path,
// formatting it first only when it is blank. A device that holds another
// file system, or a partition table, is refused and left as it is. Raw
// block volumes need no staging: publishing binds the device itself.
func (s *node) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	volID, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	if err := required("volume_id", volID); err != nil {
		return nil, err
	}
	if err := requiredPath("staging_target_path", staging); err != nil {
		return nil, err
	}
	vc, err := parseCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	var mkfsArgs []string
	if !vc.block {
		if mkfsArgs, err = formatOptions(vc.fsType, req.GetVolumeContext()); err != nil {
			return nil, err
		}
	}
	release, err := s.d.inflight.acquire(volID)
	if err != nil {
		return nil, err
	}
	defer release()

	device, err := s.d.locate(ctx, volID)
	if err != nil {
		return nil, err
	}
	if vc.block {
		return &csi.NodeStageVolumeResponse{}, nil
	}
	if m, err := mountAt(staging); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", volID, err)
	} else if m != nil {
		same, err := mountOfDevice(m, device)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", volID, err)
		}
		if !same {
			return nil, status.Errorf(codes.AlreadyExists, "staging path %s of volume %s already holds another device (%d:%d, %s), not %s",
				staging, volID, m.Major, m.Minor, m.Source, device)
		}
		if !compatibleFS(m.FSType, vc.fsType) {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s is staged at %s as %s, not the requested %s", volID, staging, m.FSType, vc.fsType)
		}
		return &csi.NodeStageVolumeResponse{}, nil // staged by an earlier call
	}

	existing, err := s.d.mounter.GetDiskFormat(device)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: probing device %s for a file system: %v", volID, device, err)
	}
	switch {
	case existing == partitionsFormat:
		return nil, status.Errorf(codes.FailedPrecondition,
			"volume %s (device %s) holds a partition table, not a %s file system: refusing to format or mount it", volID, device, vc.fsType)
	case existing != "" && !compatibleFS(existing, vc.fsType):
		return nil, status.Errorf(codes.FailedPrecondition,
			"volume %s (device %s) holds a %s file system, not the requested %s: refusing to format or mount it", volID, device, existing, vc.fsType)
	case existing == "" && vc.readOnly:
		return nil, status.Errorf(codes.FailedPrecondition,
			"volume %s (device %s) is blank and its access mode is read-only: there is nothing to mount", volID, device)
	case existing == "":
		// blkid knows most signatures, not all: a new EBS volume reads as
		// zeros, so anything else at its start is data to keep.
		off, err := firstNonZero(device, blankProbeBytes)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", volID, err)
		}
		if off >= 0 {
			return nil, status.Errorf(codes.FailedPrecondition,
				"volume %s (device %s) holds data that blkid does not recognise (a non-zero byte at offset %d), not a blank volume: refusing to format it", volID, device, off)
		}
	}
	if existing == "" {
		// Only a blank volume is formatted: mounting an existing file
		// system needs no mkfs.
		if err := checkTools(formatTools(vc.fsType)...); err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s: %v", volID, err)
		}
	}
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: creating staging path: %v", volID, err)
	}
	if v, ok := s.d.opts.Locator.(deviceVerifier); ok {
		if err := v.Verify(ctx, volID, device); err != nil {
			return nil, status.Errorf(codes.Aborted, "volume %s: device %s changed before it was mounted: %v", volID, device, err)
		}
	}
	options := stageMountOptions(vc.fsType, vc.flags)
	if vc.readOnly {
		options = append(options, "ro")
	}
	if existing == "" {
		s.d.log.Info("formatting blank volume", "volume", volID, "device", device, "fsType", vc.fsType, "mkfsArgs", mkfsArgs)
	}
	if err := s.d.mounter.FormatAndMountSensitiveWithFormatOptions(device, staging, vc.fsType, options, nil, mkfsArgs); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: mounting device %s at %s: %v", volID, device, staging, err)
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// compatibleFS says whether a device holding file system have can be
// mounted as want: the same type, or an older ext under ext4, whose driver
// mounts ext2 and ext3.
func compatibleFS(have, want string) bool {
	return have == want || (want == "ext4" && (have == "ext2" || have == "ext3"))
}

// NodeUnstageVolume unmounts the staging path. It succeeds when nothing is
// mounted there, so that a repeated call is harmless. The folder itself
// belongs to the kubelet and stays.
func (s *node) NodeUnstageVolume(_ context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	volID, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	if err := required("volume_id", volID); err != nil {
		return nil, err
	}
	if err := requiredPath("staging_target_path", staging); err != nil {
		return nil, err
	}
	release, err := s.d.inflight.acquire(volID)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.d.unmountAll(staging); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", volID, err)
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume bind-mounts the staged file system at the target
// folder, or the volume's device node onto a target file for raw block,
// read-only when asked.
func (s *node) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	volID, target, staging := req.GetVolumeId(), req.GetTargetPath(), req.GetStagingTargetPath()
	if err := required("volume_id", volID); err != nil {
		return nil, err
	}
	if err := requiredPath("target_path", target); err != nil {
		return nil, err
	}
	vc, err := parseCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	if err := requiredPath("staging_target_path", staging); err != nil {
		return nil, err // this driver stages (STAGE_UNSTAGE_VOLUME)
	}
	release, err := s.d.inflight.acquire(volID + " at " + target)
	if err != nil {
		return nil, err
	}
	defer release()
	readOnly := req.GetReadonly() || vc.readOnly
	if vc.block {
		device, err := s.d.locate(ctx, volID)
		if err != nil {
			return nil, err
		}
		return &csi.NodePublishVolumeResponse{}, s.d.publishBlock(volID, device, target, readOnly)
	}
	return &csi.NodePublishVolumeResponse{}, s.d.publishMount(volID, staging, target, readOnly, vc.flags)
}

func (d *Driver) publishMount(volID, staging, target string, readOnly bool, flags []string) error {
	src, err := mountAt(staging)
	if err != nil {
		return status.Errorf(codes.Internal, "volume %s: %v", volID, err)
	}
	if src == nil {
		return status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s", volID, staging)
	}
	if m, err := mountAt(target); err != nil {
		return status.Errorf(codes.Internal, "volume %s: %v", volID, err)
	} else if m != nil {
		if m.Major != src.Major || m.Minor != src.Minor {
			return status.Errorf(codes.AlreadyExists, "target path %s already holds another file system (%d:%d), not volume %s", target, m.Major, m.Minor, volID)
		}
		if mountReadOnly(m.Options) != readOnly {
			return status.Errorf(codes.AlreadyExists, "volume %s is published at %s with read-only %t, not %t", volID, target, mountReadOnly(m.Options), readOnly)
		}
		return nil // published by an earlier call
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return status.Errorf(codes.Internal, "volume %s: creating target path: %v", volID, err)
	}
	if err := d.mounter.Mount(staging, target, "", bindOptions(readOnly, flags)); err != nil {
		return status.Errorf(codes.Internal, "volume %s: bind-mounting %s at %s: %v", volID, staging, target, err)
	}
	return nil
}

func (d *Driver) publishBlock(volID, device, target string, readOnly bool) error {
	if m, err := mountAt(target); err != nil {
		return status.Errorf(codes.Internal, "volume %s: %v", volID, err)
	} else if m != nil {
		same, err := sameDeviceNode(target, device)
		if err != nil {
			return status.Errorf(codes.Internal, "volume %s: %v", volID, err)
		}
		if !same {
			return status.Errorf(codes.AlreadyExists, "target path %s already holds another mount, not device %s of volume %s", target, device, volID)
		}
		if mountReadOnly(m.Options) != readOnly {
			return status.Errorf(codes.AlreadyExists, "volume %s is published at %s with read-only %t, not %t", volID, target, mountReadOnly(m.Options), readOnly)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return status.Errorf(codes.Internal, "volume %s: creating the target's folder: %v", volID, err)
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o640)
	if err != nil {
		return status.Errorf(codes.Internal, "volume %s: creating target file %s: %v", volID, target, err)
	}
	_ = f.Close()
	if err := d.mounter.Mount(device, target, "", bindOptions(readOnly, nil)); err != nil {
		return status.Errorf(codes.Internal, "volume %s: bind-mounting device %s at %s: %v", volID, device, target, err)
	}
	return nil
}

func bindOptions(readOnly bool, flags []string) []string {
	opts := append([]string{"bind"}, flags...)
	if readOnly {
		opts = append(opts, "ro")
	}
	return opts
}

// NodeUnpublishVolume unmounts the target and removes it, as the spec asks
// of whoever created it. A target that is gone already is success.
func (s *node) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	volID, target := req.GetVolumeId(), req.GetTargetPath()
	if err := required("volume_id", volID); err != nil {
		return nil, err
	}
	if err := requiredPath("target_path", target); err != nil {
		return nil, err
	}
	release, err := s.d.inflight.acquire(volID + " at " + target)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.d.unmountAll(target); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", volID, err)
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "volume %s: removing target path: %v", volID, err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetInfo names the node by its instance id, which the controller
// attaches volumes to, and places it in its zone.
func (s *node) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	segments := map[string]string{ZoneTopologyKey: s.d.opts.Zone}
	if s.d.opts.DriverName == DefaultDriverName {
		segments[legacyEBSZoneTopologyKey] = s.d.opts.Zone
	}
	return &csi.NodeGetInfoResponse{
		NodeId:             s.d.opts.NodeID,
		MaxVolumesPerNode:  s.d.volumeLimit(),
		AccessibleTopology: &csi.Topology{Segments: segments},
	}, nil
}

func (s *node) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, t := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: t}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// NodeGetVolumeStats reports bytes and inodes of a mounted volume, or the
// size of a raw block one. The path must hold that volume's device.
func (s *node) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	volID, path := req.GetVolumeId(), req.GetVolumePath()
	if err := required("volume_id", volID); err != nil {
		return nil, err
	}
	if err := required("volume_path", path); err != nil {
		return nil, err
	}
	v, err := s.d.volumeAt(ctx, volID, path)
	if err != nil {
		return nil, err
	}
	if v.block {
		size, err := deviceSize(path)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", volID, err)
		}
		return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: size}}}, nil
	}
	st, err := fsStats(path)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", volID, err)
	}
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: st.totalBytes, Available: st.availableBytes, Used: st.usedBytes},
		{Unit: csi.VolumeUsage_INODES, Total: st.totalInodes, Available: st.freeInodes, Used: st.usedInodes},
	}}, nil
}

// NodeExpandVolume grows the file system on a volume whose device has
// grown (resize2fs, xfs_growfs). A raw block volume has nothing to grow. It
// fails while the device is still smaller than required_bytes, so that the
// kubelet retries instead of recording a size the volume does not have.
func (s *node) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	volID, path := req.GetVolumeId(), req.GetVolumePath()
	if err := required("volume_id", volID); err != nil {
		return nil, err
	}
	if err := required("volume_path", path); err != nil {
		return nil, err
	}
	if c := req.GetVolumeCapability(); c != nil {
		if _, err := parseCapability(c); err != nil {
			return nil, err
		}
	}
	release, err := s.d.inflight.acquire(volID)
	if err != nil {
		return nil, err
	}
	defer release()
	v, err := s.d.volumeAt(ctx, volID, path)
	if err != nil {
		return nil, err
	}
	size, err := deviceSize(v.device)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", volID, err)
	}
	if want := req.GetCapacityRange().GetRequiredBytes(); size < want {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s: device %s has %d bytes, fewer than the %d requested: the volume has not grown on this node yet", volID, v.device, size, want)
	}
	if v.block {
		return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
	}
	if err := checkTools(resizeTools(v.fsType)...); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s: %v", volID, err)
	}
	if _, err := s.d.resizer.Resize(v.device, path); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: growing the %s file system on %s: %v", volID, v.fsType, v.device, err)
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
}

// publishedVolume is a volume found at a path.
type publishedVolume struct {
	device string
	block  bool   // path is the device node, bound onto a file
	fsType string // file-system volumes only
}

// volumeAt checks that path holds volID's device, mounted or bound, and
// returns NotFound when it does not.
func (d *Driver) volumeAt(ctx context.Context, volID, path string) (publishedVolume, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return publishedVolume{}, status.Errorf(codes.NotFound, "volume path %s of volume %s does not exist", path, volID)
	} else if err != nil {
		return publishedVolume{}, status.Errorf(codes.Internal, "volume %s: %v", volID, err)
	}
	device, err := d.locate(ctx, volID)
	if err != nil {
		return publishedVolume{}, err
	}
	v := publishedVolume{device: device}
	if fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0 {
		same, err := sameDeviceNode(path, device)
		if err != nil {
			return v, status.Errorf(codes.Internal, "volume %s: %v", volID, err)
		}
		if !same {
			return v, status.Errorf(codes.NotFound, "%s is not the device %s of volume %s", path, device, volID)
		}
		v.block = true
		return v, nil
	}
	m, err := mountAt(path)
	if err != nil {
		return v, status.Errorf(codes.Internal, "volume %s: %v", volID, err)
	}
	if m == nil {
		return v, status.Errorf(codes.NotFound, "volume %s is not mounted at %s", volID, path)
	}
	same, err := mountOfDevice(m, device)
	if err != nil {
		return v, status.Errorf(codes.Internal, "volume %s: %v", volID, err)
	}
	if !same {
		return v, status.Errorf(codes.NotFound, "%s holds device %d:%d, not the device %s of volume %s", path, m.Major, m.Minor, device, volID)
	}
	v.fsType = m.FSType
	return v, nil
}

// unmountAll unmounts path until nothing is mounted there; an earlier
// failed call may have stacked mounts.
func (d *Driver) unmountAll(path string) error {
	for range 16 {
		m, err := mountAt(path)
		if err != nil || m == nil {
			return err
		}
		if err := d.mounter.Unmount(path); err != nil {
			return fmt.Errorf("unmounting %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmounting %s: still mounted after 16 unmounts", path)
}
