package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestInstanceStoreValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*InstanceStore)
		field  string
		want   string
	}{
		{"filesystem", func(s *InstanceStore) { s.Filesystem = "zfs" }, "storage.instanceStore.filesystem", "xfs, ext4, btrfs"},
		{"chunk not a power of two", func(s *InstanceStore) { s.RAIDChunkKiB = 384 }, "storage.instanceStore.raidChunkKiB", "power of two"},
		{"chunk too small", func(s *InstanceStore) { s.RAIDChunkKiB = 2 }, "storage.instanceStore.raidChunkKiB", "from 4"},
		{"mount point relative", func(s *InstanceStore) { s.MountPoint = "mnt" }, "storage.instanceStore.mountPoint", "absolute"},
		{"mount point root", func(s *InstanceStore) { s.MountPoint = "/" }, "storage.instanceStore.mountPoint", "must not be /"},
		{"state path relative", func(s *InstanceStore) { s.StatePath = "state.json" }, "storage.instanceStore.statePath", "absolute"},
		{"sysfs relative", func(s *InstanceStore) { s.SysfsRoot = "sys" }, "storage.instanceStore.sysfsRoot", "absolute"},
		{"device relative", func(s *InstanceStore) { s.Devices = []string{"nvme1n1"} }, "storage.instanceStore.devices", "absolute"},
		{"device twice", func(s *InstanceStore) { s.Devices = []string{"/dev/nvme1n1", "/dev/nvme1n1"} }, "storage.instanceStore.devices", "twice"},
		{"bind relative", func(s *InstanceStore) { s.Binds = []InstanceStoreBind{{Path: "var/lib"}} }, "storage.instanceStore.binds", "clean absolute"},
		{"bind unclean", func(s *InstanceStore) { s.Binds = []InstanceStoreBind{{Path: "/var/lib/"}} }, "storage.instanceStore.binds", "clean absolute"},
		{"bind propagation", func(s *InstanceStore) { s.Binds = []InstanceStoreBind{{Path: "/var/lib", Propagation: "slave"}} }, "storage.instanceStore.binds", "private, rshared"},
		{"bind twice", func(s *InstanceStore) {
			s.Binds = []InstanceStoreBind{{Path: "/a"}, {Path: "/a", Propagation: "rshared"}}
		}, "storage.instanceStore.binds", "twice"},
		{"bind inside the mount point", func(s *InstanceStore) { s.Binds = []InstanceStoreBind{{Path: "/mnt/.ephemeral/x"}} }, "storage.instanceStore.binds", "overlap"},
		{"bind holding the mount point", func(s *InstanceStore) { s.Binds = []InstanceStoreBind{{Path: "/mnt"}} }, "storage.instanceStore.binds", "overlap"},
		{"marker relative", func(s *InstanceStore) { s.KubeletMarkers = []string{"kubeconfig"} }, "storage.instanceStore.kubeletMarkers", "absolute"},
		{"kubelet process", func(s *InstanceStore) { s.KubeletProcess = "" }, "storage.instanceStore.kubeletProcess", "process name"},
		{"verify interval", func(s *InstanceStore) { s.VerifyInterval.Duration = 0 }, "storage.instanceStore.verifyInterval", "above 0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c.Storage.InstanceStore)
			err := c.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want %s: …%s…", err, tt.field, tt.want)
			}
		})
	}
}

func TestInstanceStoreFromFile(t *testing.T) {
	p := writeFile(t, `storage:
  instanceStore:
    filesystem: btrfs
    devices: [/dev/nvme1n1, /dev/nvme2n1]
    binds:
    - path: /var/lib/kubelet
      propagation: rshared
    verifyInterval: 30s
`)
	c := Default()
	if err := c.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	is := c.Storage.InstanceStore
	want := DefaultInstanceStore()
	want.Filesystem = "btrfs"
	want.Devices = []string{"/dev/nvme1n1", "/dev/nvme2n1"}
	want.Binds = []InstanceStoreBind{{Path: "/var/lib/kubelet", Propagation: "rshared"}} // the list is replaced, not merged
	want.VerifyInterval.Duration = 30 * time.Second
	if !reflect.DeepEqual(is, want) {
		t.Errorf("instanceStore = %+v\nwant %+v", is, want)
	}
}

func TestParseInstanceStoreBind(t *testing.T) {
	tests := []struct {
		in   string
		want InstanceStoreBind
		err  bool
	}{
		{"/var/lib/containerd", InstanceStoreBind{Path: "/var/lib/containerd"}, false},
		{"/var/lib/kubelet:rshared", InstanceStoreBind{Path: "/var/lib/kubelet", Propagation: "rshared"}, false},
		{"/var/log/pods:private", InstanceStoreBind{Path: "/var/log/pods", Propagation: "private"}, false},
		{"/var/lib/kubelet:shared", InstanceStoreBind{}, true},
		{"relative", InstanceStoreBind{}, true},
		{"/", InstanceStoreBind{}, true},
		{"", InstanceStoreBind{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseInstanceStoreBind(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("ParseInstanceStoreBind(%q) = %+v, %v", tt.in, got, err)
			}
			if err == nil && tt.want.Propagation != "private" && got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

// TestValidateInstanceStoreOnly: `storage setup` checks its own section and
// nothing that may not exist yet at boot.
func TestValidateInstanceStoreOnly(t *testing.T) {
	c := Default()
	c.Kubernetes.Kubeconfig = "/nonexistent/kubeconfig"
	c.Log.Format = "xml"
	if err := c.ValidateInstanceStore(); err != nil {
		t.Errorf("ValidateInstanceStore() = %v, want nil: other sections are not its business", err)
	}
	if c.Validate() == nil {
		t.Error("Validate() passed a missing kubeconfig and a bad log format")
	}
	c.Storage.InstanceStore.Filesystem = "zfs"
	var fe *FieldError
	if err := c.ValidateInstanceStore(); !errors.As(err, &fe) || fe.Field != "storage.instanceStore.filesystem" {
		t.Errorf("ValidateInstanceStore() = %v, want a FieldError on storage.instanceStore.filesystem", err)
	}
}
