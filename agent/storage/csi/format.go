package csi

import (
	"slices"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The volume-context keys through which the upstream EBS controller passes
// a StorageClass's file-system parameters (blockSize, inodeSize, ...) to
// the node, lower-cased. They apply only when a blank volume is formatted.
const (
	blockSizeKey       = "blocksize"
	inodeSizeKey       = "inodesize"
	bytesPerInodeKey   = "bytesperinode"
	numberOfInodesKey  = "numberofinodes"
	ext4BigAllocKey    = "ext4bigalloc"
	ext4ClusterSizeKey = "ext4clustersize"
)

// formatOptions turns the volume context's file-system parameters into mkfs
// arguments, with the upstream driver's meaning. A malformed value, or one
// that fsType does not have, is INVALID_ARGUMENT rather than a surprise.
func formatOptions(fsType string, volumeContext map[string]string) ([]string, error) {
	xfs, ext4 := fsType == "xfs", fsType == "ext4"
	var args []string
	for _, p := range []struct {
		key     string
		applies bool
		arg     func(v string) []string
	}{
		{blockSizeKey, true, func(v string) []string {
			if xfs {
				return []string{"-b", "size=" + v}
			}
			return []string{"-b", v}
		}},
		{inodeSizeKey, true, func(v string) []string {
			if xfs {
				return []string{"-i", "size=" + v}
			}
			return []string{"-I", v}
		}},
		{bytesPerInodeKey, !xfs, func(v string) []string { return []string{"-i", v} }},
		{numberOfInodesKey, !xfs, func(v string) []string { return []string{"-N", v} }},
		{ext4ClusterSizeKey, ext4, func(v string) []string { return []string{"-C", v} }},
	} {
		v, ok := volumeContext[p.key]
		if !ok {
			continue
		}
		if !p.applies {
			return nil, status.Errorf(codes.InvalidArgument, "volume context %s does not apply to %s", p.key, fsType)
		}
		if n, err := strconv.ParseUint(v, 10, 32); err != nil || n == 0 {
			return nil, status.Errorf(codes.InvalidArgument, "volume context %s=%q: want a positive whole number", p.key, v)
		}
		args = append(args, p.arg(v)...)
	}
	switch v, ok := volumeContext[ext4BigAllocKey]; {
	case !ok || v == "false":
	case v != "true":
		return nil, status.Errorf(codes.InvalidArgument, "volume context %s=%q: want true or false", ext4BigAllocKey, v)
	case !ext4:
		return nil, status.Errorf(codes.InvalidArgument, "volume context %s does not apply to %s", ext4BigAllocKey, fsType)
	default:
		args = append(args, "-O", "bigalloc")
	}
	return args, nil
}

// stageMountOptions are the capability's mount flags, once each, plus
// nouuid for xfs: a volume and its clone or restored snapshot share a file
// system UUID, and xfs refuses to mount the second without it.
func stageMountOptions(fsType string, flags []string) []string {
	var opts []string
	for _, f := range flags {
		if !slices.Contains(opts, f) {
			opts = append(opts, f)
		}
	}
	if fsType == "xfs" && !slices.Contains(opts, "nouuid") {
		opts = append(opts, "nouuid")
	}
	return opts
}
