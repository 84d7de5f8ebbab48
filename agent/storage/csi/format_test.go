package csi

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestFormatOptions(t *testing.T) {
	tests := []struct {
		name    string
		fsType  string
		context map[string]string
		want    string // the mkfs arguments, space-joined
		code    codes.Code
	}{
		{"none", "ext4", nil, "", codes.OK},
		{"other keys are not ours", "ext4", map[string]string{"type": "gp3", "csi.storage.k8s.io/pv/name": "pv-1"}, "", codes.OK},
		{"ext4 sizes", "ext4", map[string]string{blockSizeKey: "1024", inodeSizeKey: "512", bytesPerInodeKey: "8192", numberOfInodesKey: "1000"},
			"-b 1024 -I 512 -i 8192 -N 1000", codes.OK},
		{"xfs sizes", "xfs", map[string]string{blockSizeKey: "4096", inodeSizeKey: "1024"}, "-b size=4096 -i size=1024", codes.OK},
		{"ext4 bigalloc", "ext4", map[string]string{ext4BigAllocKey: "true", ext4ClusterSizeKey: "65536"}, "-C 65536 -O bigalloc", codes.OK},
		{"bigalloc off", "ext4", map[string]string{ext4BigAllocKey: "false"}, "", codes.OK},
		{"ext3 block size", "ext3", map[string]string{blockSizeKey: "2048"}, "-b 2048", codes.OK},
		{"bytes per inode on xfs", "xfs", map[string]string{bytesPerInodeKey: "8192"}, "", codes.InvalidArgument},
		{"inode count on xfs", "xfs", map[string]string{numberOfInodesKey: "100"}, "", codes.InvalidArgument},
		{"bigalloc on ext3", "ext3", map[string]string{ext4BigAllocKey: "true"}, "", codes.InvalidArgument},
		{"cluster size on xfs", "xfs", map[string]string{ext4ClusterSizeKey: "65536"}, "", codes.InvalidArgument},
		{"bigalloc maybe", "ext4", map[string]string{ext4BigAllocKey: "yes"}, "", codes.InvalidArgument},
		{"not a number", "ext4", map[string]string{blockSizeKey: "4k"}, "", codes.InvalidArgument},
		{"zero", "ext4", map[string]string{inodeSizeKey: "0"}, "", codes.InvalidArgument},
		{"negative", "ext4", map[string]string{blockSizeKey: "-1024"}, "", codes.InvalidArgument},
		{"an option smuggled in", "ext4", map[string]string{blockSizeKey: "1024 -O ^has_journal"}, "", codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := formatOptions(tt.fsType, tt.context)
			if status.Code(err) != tt.code {
				t.Fatalf("formatOptions: %v, want code %s", err, tt.code)
			}
			if err == nil && strings.Join(got, " ") != tt.want {
				t.Errorf("formatOptions = %q, want %q", strings.Join(got, " "), tt.want)
			}
		})
	}
}

func TestStageMountOptions(t *testing.T) {
	tests := []struct {
		fsType string
		flags  []string
		want   string
	}{
		{"ext4", nil, ""},
		{"ext4", []string{"noatime", "noatime", "discard"}, "noatime,discard"},
		{"xfs", nil, "nouuid"},
		{"xfs", []string{"nouuid", "noatime"}, "nouuid,noatime"},
	}
	for _, tt := range tests {
		if got := strings.Join(stageMountOptions(tt.fsType, tt.flags), ","); got != tt.want {
			t.Errorf("stageMountOptions(%s, %v) = %s, want %s", tt.fsType, tt.flags, got, tt.want)
		}
	}
}
