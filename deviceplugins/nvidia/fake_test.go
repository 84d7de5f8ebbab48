package nvidia_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/autonode/autonode/deviceplugins"
	"github.com/autonode/autonode/deviceplugins/nvidia"
	"github.com/autonode/autonode/health"
)

// waitTimeout bounds every "eventually"; generous, since a slow machine must
// not fail a test.
const waitTimeout = 30 * time.Second

// machineSpec describes the topology of a fake GPU server.
type machineSpec struct {
	// numa and pcieSwitch give each GPU's NUMA node and PCIe switch.
	numa, pcieSwitch []int
	// nvlinks counts direct NVLinks between GPU pairs (lower index first).
	nvlinks map[[2]int]int
	// nvswitch wires every GPU to six NVSwitches with two links each, as in
	// a DGX A100 or p4d.24xlarge.
	nvswitch bool
	// mig lists GPUs with MIG mode enabled.
	mig []int
}

// dgxA100 is an 8-GPU DGX A100: NVSwitch fabric, two GPUs per PCIe switch,
// four per NUMA node.
func dgxA100() machineSpec {
	return machineSpec{
		numa:       []int{0, 0, 0, 0, 1, 1, 1, 1},
		pcieSwitch: []int{0, 0, 1, 1, 2, 2, 3, 3},
		nvswitch:   true,
	}
}

// hybridCubeMesh is an 8-GPU NVLink hybrid cube mesh (DGX-1, p3.16xlarge):
// two fully connected quads joined GPU to GPU; 0-3 has a double link.
func hybridCubeMesh() machineSpec {
	links := map[[2]int]int{}
	for _, q := range [][]int{{0, 1, 2, 3}, {4, 5, 6, 7}} {
		for i := range q {
			for j := i + 1; j < len(q); j++ {
				links[[2]int{q[i], q[j]}] = 1
			}
		}
	}
	for i := range 4 {
		links[[2]int{i, i + 4}] = 1
	}
	links[[2]int{0, 3}] = 2
	return machineSpec{
		numa:       []int{0, 0, 0, 0, 1, 1, 1, 1},
		pcieSwitch: []int{0, 0, 1, 1, 2, 2, 3, 3},
		nvlinks:    links,
	}
}

// pcieOnly is an 8-GPU server without NVLink (g5.48xlarge-like).
func pcieOnly() machineSpec {
	s := hybridCubeMesh()
	s.nvlinks = nil
	return s
}

// machine is a go-nvml mock server with topology, events and a switchable
// Init.
type machine struct {
	*server.Server
	devs   []*server.Device
	events chan nvml.EventData
	// initRet is what Init returns.
	initRet atomic.Int32
}

func gpuBusID(i int) string { return fmt.Sprintf("%08X:%02X:1C.0", 0, 0x1a+0x10*i) }

// busID is the id the backend advertises for GPU i.
func busID(i int) string { return fmt.Sprintf("0000:%02x:1c.0", 0x1a+0x10*i) }

func switchBusID(s int) string { return fmt.Sprintf("%08X:%02X:00.0", 0, 0xc0+s) }

func pciInfo(id string) nvml.PciInfo {
	var p nvml.PciInfo
	for i, c := range []byte(id) {
		p.BusId[i] = int8(c)
	}
	return p
}

func newMachine(t testing.TB, spec machineSpec) *machine {
	t.Helper()
	m := &machine{Server: dgxa100.New(), events: make(chan nvml.EventData, 16)}
	m.initRet.Store(int32(nvml.SUCCESS))
	m.Devices = m.Devices[:len(spec.numa)]
	for _, d := range m.Devices {
		m.devs = append(m.devs, d.(*server.Device))
	}
	indexOf := func(d nvml.Device) int { return slices.Index(m.devs, d.(*server.Device)) }
	for i, d := range m.devs {
		if slices.Contains(spec.mig, i) {
			d.MigMode = nvml.DEVICE_MIG_ENABLE
		}
		// Link l of GPU i ends at peers[l].
		var peers []string
		for pair, n := range spec.nvlinks {
			for range n {
				switch i {
				case pair[0]:
					peers = append(peers, gpuBusID(pair[1]))
				case pair[1]:
					peers = append(peers, gpuBusID(pair[0]))
				}
			}
		}
		slices.Sort(peers)
		if spec.nvswitch {
			for l := range 12 {
				peers = append(peers, switchBusID(l/2))
			}
		}
		d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) { return pciInfo(gpuBusID(i)), nvml.SUCCESS }
		d.GetNumaNodeIdFunc = func() (int, nvml.Return) { return spec.numa[i], nvml.SUCCESS }
		d.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) {
			return nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError | nvml.EventTypeSingleBitEccError, nvml.SUCCESS
		}
		d.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS }
		d.GetNvLinkStateFunc = func(l int) (nvml.EnableState, nvml.Return) {
			if l >= len(peers) {
				return nvml.FEATURE_DISABLED, nvml.ERROR_NOT_SUPPORTED
			}
			return nvml.FEATURE_ENABLED, nvml.SUCCESS
		}
		d.GetNvLinkRemotePciInfoFunc = func(l int) (nvml.PciInfo, nvml.Return) { return pciInfo(peers[l]), nvml.SUCCESS }
		d.GetTopologyCommonAncestorFunc = func(o nvml.Device) (nvml.GpuTopologyLevel, nvml.Return) {
			j := indexOf(o)
			switch {
			case spec.pcieSwitch[i] == spec.pcieSwitch[j]:
				return nvml.TOPOLOGY_SINGLE, nvml.SUCCESS
			case spec.numa[i] == spec.numa[j]:
				return nvml.TOPOLOGY_NODE, nvml.SUCCESS
			}
			return nvml.TOPOLOGY_SYSTEM, nvml.SUCCESS
		}
	}
	m.InitFunc = func() nvml.Return { return nvml.Return(m.initRet.Load()) }
	m.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return &mock.EventSet{}, nvml.SUCCESS }
	m.EventSetFreeFunc = func(nvml.EventSet) nvml.Return { return nvml.SUCCESS }
	m.EventSetWaitFunc = func(_ nvml.EventSet, ms uint32) (nvml.EventData, nvml.Return) {
		timer := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer timer.Stop()
		select {
		case e := <-m.events:
			return e, nvml.SUCCESS
		case <-timer.C:
			return nvml.EventData{}, nvml.ERROR_TIMEOUT
		}
	}
	return m
}

// xid raises an XID on GPU i, or on no GPU in particular when i < 0.
func (m *machine) xid(i int, xid uint64) {
	e := nvml.EventData{EventType: nvml.EventTypeXidCriticalError, EventData: xid}
	if i >= 0 {
		e.Device = m.devs[i]
	}
	m.events <- e
}

// pciDevice is one entry of a fake /sys/bus/pci/devices.
type pciDevice struct {
	name, vendor, class string
	numa                int
}

func writeSysfs(t testing.TB, devs []pciDevice) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range devs {
		dir := filepath.Join(root, "bus/pci/devices", d.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, v := range map[string]string{"vendor": d.vendor, "class": d.class, "numa_node": fmt.Sprint(d.numa)} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

// sysfsGPUs is a sysfs tree with GPUs 0..n-1 of newMachine plus an
// NVSwitch and a NIC, which must not count.
func sysfsGPUs(t testing.TB, n int) string {
	t.Helper()
	devs := []pciDevice{
		{name: "0000:c0:00.0", vendor: "0x10de", class: "0x068000", numa: 0},
		{name: "0000:05:00.0", vendor: "0x1d0f", class: "0x020000", numa: 0},
	}
	for i := range n {
		devs = append(devs, pciDevice{name: busID(i), vendor: "0x10de", class: "0x030200", numa: i / 4})
	}
	return writeSysfs(t, devs)
}

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// signals records health signals.
type signals struct {
	mu   sync.Mutex
	list []health.Signal
}

func (s *signals) Report(_ context.Context, sig health.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, sig)
}

func (s *signals) reasons() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, sig := range s.list {
		out = append(out, sig.Reason)
	}
	return out
}

// fakeCDI names every GPU without MIG, as nvcdi does, or fails.
func fakeCDI(fail bool) nvidia.CDIGenerator {
	return func(_ context.Context, gpus []nvidia.GPU) (map[string]string, error) {
		if fail {
			return nil, fmt.Errorf("no driver files")
		}
		names := map[string]string{}
		for _, g := range gpus {
			if !g.MIGEnabled {
				names[g.UUID] = nvidia.CDIName(g.UUID)
			}
		}
		return names, nil
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testOptions are fast defaults over m; change what a test needs.
func testOptions(t testing.TB, m *machine) nvidia.Options {
	return nvidia.Options{
		Logger:           testLogger(t),
		NVML:             m,
		Reporter:         &signals{},
		SysfsRoot:        t.TempDir(),
		GenerateCDI:      fakeCDI(false),
		EventWaitTimeout: 5 * time.Millisecond,
		InitBackoff:      time.Millisecond,
		InitBackoffMax:   10 * time.Millisecond,
	}
}

// updates collects what Run reports.
type updates struct {
	mu      sync.Mutex
	devices []deviceplugins.Device
	calls   int
}

func (u *updates) update(d []deviceplugins.Device) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.devices, u.calls = slices.Clone(d), u.calls+1
}

// waitFor waits until cond holds for the latest list and returns it.
func (u *updates) waitFor(t testing.TB, what string, cond func([]deviceplugins.Device) bool) []deviceplugins.Device {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		u.mu.Lock()
		d, calls := slices.Clone(u.devices), u.calls
		u.mu.Unlock()
		if calls > 0 && cond(d) {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: latest devices %+v", what, d)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// run starts b.Run until the test ends.
func run(t testing.TB, b *nvidia.Backend) *updates {
	t.Helper()
	u := &updates{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, u.update) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after ctx ended, want nil", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return within %s of ctx ending", waitTimeout)
		}
	})
	return u
}

func byID(devs []deviceplugins.Device) map[string]deviceplugins.Device {
	m := map[string]deviceplugins.Device{}
	for _, d := range devs {
		m[d.ID] = d
	}
	return m
}

func healthyCount(devs []deviceplugins.Device) int {
	n := 0
	for _, d := range devs {
		if d.Healthy {
			n++
		}
	}
	return n
}
