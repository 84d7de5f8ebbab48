package nodeconfig

import (
	"context"
	"encoding/json"
	"math"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/pelletier/go-toml/v2"
)

func TestContainerd(t *testing.T) {
	in := ContainerdInputs{SandboxImage: "localhost/pause:3.10", CNIBinDir: "/opt/cni/bin", CNIConfDir: "/etc/cni/net.d", BaseRuntimeSpec: "/etc/containerd/base.json"}
	out, err := Containerd(in)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Version int `toml:"version"`
		Plugins struct {
			Images struct {
				Snapshotter  string            `toml:"snapshotter"`
				PinnedImages map[string]string `toml:"pinned_images"`
			} `toml:"io.containerd.cri.v1.images"`
			Runtime struct {
				CNI struct {
					BinDirs []string `toml:"bin_dirs"`
					ConfDir string   `toml:"conf_dir"`
				} `toml:"cni"`
				Containerd struct {
					Default  string `toml:"default_runtime_name"`
					Runtimes map[string]struct {
						Type     string `toml:"runtime_type"`
						BaseSpec string `toml:"base_runtime_spec"`
					} `toml:"runtimes"`
				} `toml:"containerd"`
			} `toml:"io.containerd.cri.v1.runtime"`
		} `toml:"plugins"`
	}
	if err := toml.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("config does not parse: %v\n%s", err, out)
	}
	p := cfg.Plugins
	runc := p.Runtime.Containerd.Runtimes["runc"]
	if cfg.Version != 3 || p.Images.Snapshotter != "overlayfs" || p.Images.PinnedImages["sandbox"] != in.SandboxImage ||
		len(p.Runtime.CNI.BinDirs) != 1 || p.Runtime.CNI.BinDirs[0] != in.CNIBinDir || p.Runtime.CNI.ConfDir != in.CNIConfDir ||
		p.Runtime.Containerd.Default != "runc" || runc.Type != "io.containerd.runc.v2" || runc.BaseSpec != in.BaseRuntimeSpec {
		t.Errorf("config lost a setting: %+v\n%s", cfg, out)
	}
	in.SandboxImage = ""
	if _, err := Containerd(in); err == nil {
		t.Error("Containerd without a sandbox image succeeded")
	}
}

func TestBaseRuntimeSpecUnlimitsMemlock(t *testing.T) {
	out, err := BaseRuntimeSpec(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(out, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Process == nil || spec.Linux == nil || len(spec.Mounts) == 0 {
		t.Fatalf("not containerd's default Linux spec: %s", out)
	}
	found := false
	for _, r := range spec.Process.Rlimits {
		if r.Type == "RLIMIT_MEMLOCK" {
			found = r.Hard == math.MaxUint64 && r.Soft == math.MaxUint64
		}
	}
	if !found {
		t.Errorf("RLIMIT_MEMLOCK not unlimited: %+v", spec.Process.Rlimits)
	}
}
