package nodeconfig

import (
	"context"
	"encoding/json"
	"fmt"
	"math"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/pelletier/go-toml/v2"
)

// ContainerdInputs are the containerd settings autonode owns.
type ContainerdInputs struct {
	// Snapshotter is the CRI snapshotter; default overlayfs.
	Snapshotter string
	// SandboxImage is the pause image the CRI pins.
	SandboxImage string
	// CNIBinDir holds autonode-cni (and the reference plugins it chains);
	// CNIConfDir holds the conflist naming it.
	CNIBinDir, CNIConfDir string
	// BaseRuntimeSpec is the path of the file BaseRuntimeSpec's output is
	// written to; containers start from it.
	BaseRuntimeSpec string
}

// Containerd returns a containerd 2.x config (version 3) for the CRI: the
// snapshotter, the pinned sandbox image, the CNI folders, and runc with the
// base runtime spec. containerd's root stays at its default
// (/var/lib/containerd); the instance store reaches it by a bind mount.
func Containerd(in ContainerdInputs) ([]byte, error) {
	if in.Snapshotter == "" {
		in.Snapshotter = "overlayfs"
	}
	for name, v := range map[string]string{"sandbox image": in.SandboxImage, "CNI bin dir": in.CNIBinDir, "CNI conf dir": in.CNIConfDir, "base runtime spec": in.BaseRuntimeSpec} {
		if v == "" {
			return nil, fmt.Errorf("containerd config: %s is required", name)
		}
	}
	type table = map[string]any
	cfg := table{
		"version": 3,
		"plugins": table{
			"io.containerd.cri.v1.images": table{
				"snapshotter":   in.Snapshotter,
				"pinned_images": table{"sandbox": in.SandboxImage},
			},
			"io.containerd.cri.v1.runtime": table{
				"cni": table{"bin_dirs": []string{in.CNIBinDir}, "conf_dir": in.CNIConfDir},
				"containerd": table{
					"default_runtime_name": "runc",
					"runtimes": table{"runc": table{
						"runtime_type":      "io.containerd.runc.v2",
						"base_runtime_spec": in.BaseRuntimeSpec,
						"options":           table{"SystemdCgroup": true},
					}},
				},
			},
		},
	}
	out, err := toml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("containerd config: %w", err)
	}
	return out, nil
}

// BaseRuntimeSpec returns containerd's default OCI spec for Linux with
// RLIMIT_MEMLOCK unlimited, which EFA's userspace needs to register memory
// with the device.
func BaseRuntimeSpec(ctx context.Context) ([]byte, error) {
	ctx = namespaces.WithNamespace(ctx, "k8s.io")
	unlimited := uint64(math.MaxUint64)
	spec, err := oci.GenerateSpecWithPlatform(ctx, nil, "linux", &containers.Container{ID: "base"},
		oci.WithRlimit(&specs.POSIXRlimit{Type: "RLIMIT_MEMLOCK", Hard: unlimited, Soft: unlimited}))
	if err != nil {
		return nil, fmt.Errorf("base runtime spec: %w", err)
	}
	return json.MarshalIndent(spec, "", "  ")
}
