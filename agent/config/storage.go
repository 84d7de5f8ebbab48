package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Storage configures the node's local storage: the instance-store disks
// (docs/storage.md). Other storage sections sit beside InstanceStore.
type Storage struct {
	// InstanceStore configures the instance-store NVMe disks that hold
	// container images, pod ephemeral storage and pod logs.
	InstanceStore InstanceStore `json:"instanceStore"`
	// CSI configures the EBS CSI node service (csi.go).
	CSI CSI `json:"csi"`
}

// InstanceStore configures `autonode-agent storage setup`, which runs once
// before containerd and the kubelet, and the daemon's verification of what
// it set up.
type InstanceStore struct {
	// Enabled sets up the instance store when the node has one, and
	// verifies it from the daemon. Default is true.
	Enabled bool `json:"enabled"`
	// Devices lists the disks to use instead of discovering the NVMe
	// devices whose model is "Amazon EC2 NVMe Instance Storage".
	Devices []string `json:"devices,omitempty"`
	// SysfsRoot is where sysfs is mounted; discovery reads
	// block/nvme*/device/model there. Default is /sys.
	SysfsRoot string `json:"sysfsRoot"`
	// Filesystem is xfs (default) or ext4, over mdadm RAID0 when there are
	// two disks or more, or btrfs, which joins the disks itself (data and
	// metadata RAID0) without mdadm.
	Filesystem string `json:"filesystem"`
	// RAIDChunkKiB is the mdadm RAID0 chunk size in KiB, also the
	// filesystem's stripe unit. Default is 256, XFS's largest log stripe
	// unit.
	RAIDChunkKiB int `json:"raidChunkKiB"`
	// MountPoint is where the array or disk is mounted. Default is
	// /mnt/.ephemeral.
	MountPoint string `json:"mountPoint"`
	// Binds are the folders bind-mounted from the mount point. Default is
	// /var/lib/containerd, /var/lib/kubelet (rshared) and /var/log/pods.
	Binds []InstanceStoreBind `json:"binds,omitempty"`
	// StatePath records what setup did. Default is
	// /var/lib/autonode/instance-store.json.
	StatePath string `json:"statePath"`
	// KubeletMarkers are paths whose existence means the kubelet has
	// started; setup then only verifies. Default is none: a running
	// process named KubeletProcess is the default signal.
	KubeletMarkers []string `json:"kubeletMarkers,omitempty"`
	// KubeletProcess is the kubelet's process name (comm) in /proc; a
	// running one means setup only verifies. "-" turns the check off.
	// Default is kubelet.
	KubeletProcess string `json:"kubeletProcess"`
	// VerifyInterval is how often the daemon re-checks the mounts. Default
	// is 1m.
	VerifyInterval metav1.Duration `json:"verifyInterval"`
}

// InstanceStoreBind is one folder bind-mounted onto the instance store.
type InstanceStoreBind struct {
	// Path is the folder, e.g. /var/lib/kubelet.
	Path string `json:"path"`
	// Propagation is private (default) or rshared, which the kubelet's
	// folder needs so that volume mounts reach containers.
	Propagation string `json:"propagation,omitempty"`
}

// ParseInstanceStoreBind parses PATH or PATH:rshared, the flag form of a
// bind.
func ParseInstanceStoreBind(s string) (InstanceStoreBind, error) {
	path, prop, _ := strings.Cut(s, ":")
	b := InstanceStoreBind{Path: path, Propagation: prop}
	if err := b.validate(); err != nil {
		return InstanceStoreBind{}, fmt.Errorf("bind %q: %w", s, err)
	}
	return b, nil
}

func (b InstanceStoreBind) String() string {
	if b.Propagation == "" || b.Propagation == "private" {
		return b.Path
	}
	return b.Path + ":" + b.Propagation
}

func (b InstanceStoreBind) validate() error {
	if !filepath.IsAbs(b.Path) || filepath.Clean(b.Path) != b.Path || b.Path == "/" {
		return fmt.Errorf("path %q must be a clean absolute path other than /", b.Path)
	}
	if !slices.Contains(bindPropagations(), b.Propagation) {
		return fmt.Errorf("propagation %q must be one of: %s", b.Propagation, strings.Join(bindPropagations()[1:], ", "))
	}
	return nil
}

func bindPropagations() []string { return []string{"", "private", "rshared"} }

func instanceStoreFilesystems() []string { return []string{"xfs", "ext4", "btrfs"} }

// DefaultInstanceStore returns the instance-store defaults.
func DefaultInstanceStore() InstanceStore {
	return InstanceStore{
		Enabled:      true,
		SysfsRoot:    "/sys",
		Filesystem:   "xfs",
		RAIDChunkKiB: 256,
		MountPoint:   "/mnt/.ephemeral",
		Binds: []InstanceStoreBind{
			{Path: "/var/lib/containerd"},
			{Path: "/var/lib/kubelet", Propagation: "rshared"},
			{Path: "/var/log/pods"},
		},
		StatePath:      "/var/lib/autonode/instance-store.json",
		KubeletProcess: "kubelet",
		VerifyInterval: metav1.Duration{Duration: time.Minute},
	}
}

// ValidateInstanceStore checks only the storage.instanceStore section, and
// returns all problems at once, each a *FieldError. It is Validate for
// `storage setup`, which runs at boot before the files that other sections
// name (the kubeconfig, for one) need exist, and must not fail on them.
func (c Config) ValidateInstanceStore() error {
	var errs []error
	validateStorage(c.Storage, func(field, flag, value, want string) {
		errs = append(errs, &FieldError{Field: field, Flag: flag, Value: value, Want: want})
	})
	return errors.Join(errs...)
}

// validateStorage appends a FieldError for each bad storage value.
func validateStorage(s Storage, bad func(field, flag, value, want string)) {
	is := s.InstanceStore
	const p = "storage.instanceStore."
	if !slices.Contains(instanceStoreFilesystems(), is.Filesystem) {
		bad(p+"filesystem", "", is.Filesystem, "must be one of: "+strings.Join(instanceStoreFilesystems(), ", "))
	}
	// mdadm takes chunks of at least 4 KiB in powers of two.
	if c := is.RAIDChunkKiB; c < 4 || c > 1<<20 || c&(c-1) != 0 {
		bad(p+"raidChunkKiB", "", strconv.Itoa(c), "must be a power of two from 4 to 1048576")
	}
	for _, f := range []struct{ field, value string }{
		{"sysfsRoot", is.SysfsRoot}, {"mountPoint", is.MountPoint}, {"statePath", is.StatePath},
	} {
		if !filepath.IsAbs(f.value) {
			bad(p+f.field, "", f.value, "must be an absolute path")
		}
	}
	if is.MountPoint == "/" {
		bad(p+"mountPoint", "", is.MountPoint, "must not be /")
	}
	for _, d := range is.Devices {
		if !filepath.IsAbs(d) {
			bad(p+"devices", "", d, "must be absolute device paths")
		}
	}
	if d := slices.Compact(slices.Sorted(slices.Values(is.Devices))); len(d) != len(is.Devices) {
		bad(p+"devices", "", strings.Join(is.Devices, ","), "must not name a device twice")
	}
	seen := map[string]bool{}
	for _, b := range is.Binds {
		if err := b.validate(); err != nil {
			bad(p+"binds", "", b.String(), err.Error())
		}
		if seen[b.Path] {
			bad(p+"binds", "", b.Path, "must not name a folder twice")
		}
		seen[b.Path] = true
		if b.Path == is.MountPoint || strings.HasPrefix(b.Path, is.MountPoint+"/") || strings.HasPrefix(is.MountPoint, b.Path+"/") {
			bad(p+"binds", "", b.Path, "must not overlap the mount point "+is.MountPoint)
		}
	}
	for _, m := range is.KubeletMarkers {
		if !filepath.IsAbs(m) {
			bad(p+"kubeletMarkers", "", m, "must be absolute paths")
		}
	}
	if is.KubeletProcess == "" || strings.Contains(is.KubeletProcess, "/") {
		bad(p+"kubeletProcess", "", is.KubeletProcess, `must be a process name, or "-" for no check`)
	}
	if d := is.VerifyInterval.Duration; d <= 0 || d > time.Hour {
		bad(p+"verifyInterval", "", d.String(), "must be a duration above 0s and at most 1h0m0s")
	}
}
