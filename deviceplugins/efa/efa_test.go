package efa

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/autonode/autonode/deviceplugins"
	"github.com/autonode/autonode/deviceplugins/plugintest"
)

// rdmaDev is one RDMA device in a fake sysfs tree.
type rdmaDev struct {
	pci    string // PCI address, e.g. 0000:10:1c.0
	ibdev  string
	uverbs int
	numa   string
	driver string
}

// p4d is a p4d.24xlarge: four EFA devices, two per NUMA node.
func p4d() []rdmaDev {
	return []rdmaDev{
		{"0000:10:1c.0", "rdmap16s28", 0, "0", "efa"},
		{"0000:20:1c.0", "rdmap32s28", 1, "0", "efa"},
		{"0000:90:1c.0", "rdmap144s28", 2, "1", "efa"},
		{"0000:a0:1c.0", "rdmap160s28", 3, "1", "efa"},
	}
}

// c5n is a c5n.18xlarge: one EFA device under the kernel's older name.
func c5n() []rdmaDev {
	return []rdmaDev{{"0000:00:06.0", "efa_0", 0, "-1", "efa"}}
}

// fakeSysfs lays devs out as the kernel does: the RDMA device inside its PCI
// function, reached through class/infiniband and device symlinks, the
// driver a symlink into bus/pci/drivers.
func fakeSysfs(t *testing.T, devs []rdmaDev) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range devs {
		bus := "pci0000:" + d.pci[5:7]
		pciDir := filepath.Join(root, "devices", bus, d.pci)
		ibDir := filepath.Join(pciDir, "infiniband", d.ibdev)
		mkdir(t, filepath.Join(root, "bus", "pci", "drivers", d.driver))
		symlink(t, "../../../bus/pci/drivers/"+d.driver, filepath.Join(pciDir, "driver"))
		writeFile(t, filepath.Join(pciDir, "numa_node"), d.numa+"\n")
		writeFile(t, filepath.Join(pciDir, "infiniband_verbs", fmt.Sprintf("uverbs%d", d.uverbs), "ibdev"), d.ibdev+"\n")
		writeFile(t, filepath.Join(pciDir, "infiniband_verbs", fmt.Sprintf("uverbs%d", d.uverbs), "dev"), fmt.Sprintf("231:%d\n", 192+d.uverbs))
		symlink(t, "../../../"+d.pci, filepath.Join(ibDir, "device"))
		writeFile(t, filepath.Join(ibDir, "ports", "1", "state"), "4: ACTIVE\n")
		for _, c := range []string{"tx_bytes", "rx_bytes", "rx_drops", "rdma_read_resp_bytes", "retrans_timeout_events", "unresponsive_remote_events"} {
			writeFile(t, filepath.Join(ibDir, "ports", "1", "hw_counters", c), "0\n")
		}
		for _, c := range []string{"submitted_cmds", "cmds_err", "no_completion_cmds"} {
			writeFile(t, filepath.Join(ibDir, "hw_counters", c), "0\n")
		}
		symlink(t, filepath.Join("..", "..", "devices", bus, d.pci, "infiniband", d.ibdev), filepath.Join(root, "class", "infiniband", d.ibdev))
	}
	return root
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	mkdir(t, filepath.Dir(path))
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	mkdir(t, filepath.Dir(link))
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func counterPath(root, ibdev, name string) string {
	return filepath.Join(root, "class", "infiniband", ibdev, "ports", "1", "hw_counters", name)
}

func TestDiscovery(t *testing.T) {
	mlx := rdmaDev{"0000:50:00.0", "mlx5_0", 4, "0", "mlx5_core"}
	tests := []struct {
		name  string
		devs  []rdmaDev
		ids   []string
		numas []int
	}{
		{"p4d.24xlarge", p4d(), []string{"0000:10:1c.0", "0000:20:1c.0", "0000:90:1c.0", "0000:a0:1c.0"}, []int{0, 0, 1, 1}},
		{"c5n.18xlarge", c5n(), []string{"0000:00:06.0"}, []int{-1}},
		{"other drivers ignored", append(c5n(), mlx), []string{"0000:00:06.0"}, []int{-1}},
		{"no rdma devices", nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(Options{SysfsRoot: fakeSysfs(t, tt.devs), PollInterval: time.Millisecond})
			ds := <-plugintest.StartBackend(t, b)
			var ids []string
			var numas []int
			for _, d := range ds {
				ids, numas = append(ids, d.ID), append(numas, d.NUMANode)
				if !d.Healthy {
					t.Errorf("%s unhealthy at start: %s", d.ID, d.Reason)
				}
			}
			if !slices.Equal(ids, tt.ids) || !slices.Equal(numas, tt.numas) {
				t.Errorf("ids %v numa %v, want %v %v", ids, numas, tt.ids, tt.numas)
			}
		})
	}
}

func TestAllocate(t *testing.T) {
	tests := []struct {
		name  string
		devs  []rdmaDev
		ids   []string
		nodes []string
		err   string
	}{
		{"one of four", p4d(), []string{"0000:90:1c.0"}, []string{"uverbs2"}, ""},
		{"all four", p4d(), []string{"0000:10:1c.0", "0000:20:1c.0", "0000:90:1c.0", "0000:a0:1c.0"}, []string{"uverbs0", "uverbs1", "uverbs2", "uverbs3"}, ""},
		{"c5n", c5n(), []string{"0000:00:06.0"}, []string{"uverbs0"}, ""},
		{"unknown", c5n(), []string{"0000:00:07.0"}, nil, "0000:00:07.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(Options{SysfsRoot: fakeSysfs(t, tt.devs), DevRoot: "/host/dev", PollInterval: time.Millisecond})
			<-plugintest.StartBackend(t, b)
			resp, err := b.Allocate(context.Background(), tt.ids)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Allocate = %v, want an error naming %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var nodes []string
			for _, d := range resp.Devices {
				n := filepath.Base(d.ContainerPath)
				nodes = append(nodes, n)
				if d.ContainerPath != "/dev/infiniband/"+n || d.HostPath != "/host/dev/infiniband/"+n || d.Permissions != "rw" {
					t.Errorf("device spec %+v", d)
				}
			}
			if !slices.Equal(nodes, tt.nodes) {
				t.Errorf("device nodes %v, want %v", nodes, tt.nodes)
			}
		})
	}
}

func TestRunFailsOnUnreadableVerbs(t *testing.T) {
	root := fakeSysfs(t, c5n())
	if err := os.RemoveAll(filepath.Join(root, "devices", "pci0000:00", "0000:00:06.0", "infiniband_verbs")); err != nil {
		t.Fatal(err)
	}
	err := New(Options{SysfsRoot: root}).Run(context.Background(), func([]deviceplugins.Device) {})
	if err == nil || !strings.Contains(err.Error(), "efa_0") {
		t.Fatalf("Run = %v, want an error naming efa_0", err)
	}
}

// poll is one reading of one device for TestJudge.
type poll struct {
	counters map[string]uint64
	problem  string
	healthy  bool
	reason   string // a substring of the expected reason
}

func TestJudge(t *testing.T) {
	c := func(kv ...any) map[string]uint64 {
		m := map[string]uint64{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = uint64(kv[i+1].(int))
		}
		return m
	}
	tests := []struct {
		name       string
		thresholds map[string]uint64
		polls      []poll
	}{
		{"rx_drops over the default, then quiet recovers", nil, []poll{
			{counters: c("rx_drops", 0), healthy: true},
			{counters: c("rx_drops", 10_000), healthy: true},
			{counters: c("rx_drops", 30_001), healthy: false, reason: "rx_drops rose by 20001"},
			{counters: c("rx_drops", 30_002), healthy: false, reason: "rx_drops"},
			{counters: c("rx_drops", 30_003), healthy: false, reason: "rx_drops"},
			{counters: c("rx_drops", 30_004), healthy: true},
		}},
		{"any stuck admin command", nil, []poll{
			{counters: c("no_completion_cmds", 0), healthy: true},
			{counters: c("no_completion_cmds", 1), healthy: false, reason: "no_completion_cmds"},
		}},
		{"a new finding restarts the quiet period", nil, []poll{
			{counters: c("retrans_timeout_events", 0), healthy: true},
			{counters: c("retrans_timeout_events", 101), healthy: false},
			{counters: c("retrans_timeout_events", 101), healthy: false},
			{counters: c("retrans_timeout_events", 202), healthy: false},
			{counters: c("retrans_timeout_events", 202), healthy: false},
			{counters: c("retrans_timeout_events", 202), healthy: false},
			{counters: c("retrans_timeout_events", 202), healthy: true},
		}},
		{"a reset counter is no error", nil, []poll{
			{counters: c("rx_drops", 50_000), healthy: true},
			{counters: c("rx_drops", 3), healthy: true},
			{counters: c("rx_drops", 5), healthy: true},
		}},
		{"traffic is no error", map[string]uint64{"rdma_read_resp_bytes": 1 << 40}, []poll{
			{counters: c("rdma_read_resp_bytes", 0), healthy: true},
			{counters: c("rdma_read_resp_bytes", 1<<39), healthy: true},
		}},
		{"custom thresholds", map[string]uint64{"cmds_err": 2}, []poll{
			{counters: c("cmds_err", 0), healthy: true},
			{counters: c("cmds_err", 2), healthy: true},
			{counters: c("cmds_err", 5), healthy: false, reason: "cmds_err rose by 3 in one poll (limit 2)"},
		}},
		{"port down", nil, []poll{
			{counters: c(), healthy: true},
			{counters: c(), problem: `port 1 is "1: DOWN"`, healthy: false, reason: "DOWN"},
		}},
		{"first poll sets the baseline", nil, []poll{
			{counters: c("no_completion_cmds", 7), healthy: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(Options{PollInterval: time.Second, QuietPeriod: 3 * time.Second, Thresholds: tt.thresholds})
			states := map[string]*state{}
			for i, p := range tt.polls {
				ds := b.judge([]efaDevice{{id: "0000:00:06.0", uverbs: "uverbs0", numa: -1, counters: p.counters, problem: p.problem}}, states)
				if len(ds) != 1 {
					t.Fatalf("poll %d: %d devices", i, len(ds))
				}
				if ds[0].Healthy != p.healthy || !strings.Contains(ds[0].Reason, p.reason) {
					t.Errorf("poll %d: healthy=%v reason %q, want healthy=%v reason containing %q", i, ds[0].Healthy, ds[0].Reason, p.healthy, p.reason)
				}
			}
		})
	}
}

func TestHealthFromSysfs(t *testing.T) {
	root := fakeSysfs(t, p4d())
	b := New(Options{SysfsRoot: root, PollInterval: time.Millisecond, QuietPeriod: time.Hour})
	updates := plugintest.StartBackend(t, b)
	<-updates

	writeFile(t, counterPath(root, "rdmap144s28", "retrans_timeout_events"), "5000\n")
	ds := plugintest.WaitForUpdate(t, updates, "an unhealthy device", func(ds []deviceplugins.Device) bool {
		return slices.ContainsFunc(ds, func(d deviceplugins.Device) bool { return !d.Healthy })
	})
	for _, d := range ds {
		if want := d.ID != "0000:90:1c.0"; d.Healthy != want {
			t.Errorf("%s healthy=%v (%s), want %v", d.ID, d.Healthy, d.Reason, want)
		}
	}

	// Unbinding the driver removes the device.
	if err := os.Remove(filepath.Join(root, "devices", "pci0000:a0", "0000:a0:1c.0", "driver")); err != nil {
		t.Fatal(err)
	}
	plugintest.WaitForUpdate(t, updates, "three devices", func(ds []deviceplugins.Device) bool { return len(ds) == 3 })
}

func TestBackendSuite(t *testing.T) {
	b := New(Options{SysfsRoot: fakeSysfs(t, p4d()), PollInterval: time.Millisecond})
	plugintest.RunBackendSuite(t, b, plugintest.SuiteOptions{
		MinHealthy: 4,
		CheckAllocate: func(t *testing.T, id string, resp *pluginapi.ContainerAllocateResponse) {
			if len(resp.Devices) != 1 || !strings.HasPrefix(resp.Devices[0].ContainerPath, "/dev/infiniband/uverbs") {
				t.Errorf("Allocate(%s) = %v, want one uverbs device", id, resp)
			}
		},
	})
}

func TestPresent(t *testing.T) {
	mixed := append(c5n(), rdmaDev{"0000:00:07.0", "mlx5_0", 1, "-1", "mlx5_core"})
	tests := []struct {
		name string
		root string
		want bool
	}{
		{"p4d", fakeSysfs(t, p4d()), true},
		{"efa beside mlx5", fakeSysfs(t, mixed), true},
		{"mlx5 only", fakeSysfs(t, mixed[1:]), false},
		{"no rdma at all", t.TempDir(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Present(tt.root)
			if err != nil || got != tt.want {
				t.Errorf("Present() = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}
