package nvidia_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/autonode/autonode/deviceplugins"
	"github.com/autonode/autonode/deviceplugins/nvidia"
	"github.com/autonode/autonode/deviceplugins/plugintest"
)

func TestNormalizeBusID(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		wantErr  bool
	}{
		{in: "00000000:10:1C.0", want: "0000:10:1c.0"},
		{in: "0000:10:1c.0", want: "0000:10:1c.0"},
		{in: "10:1C.0", want: "0000:10:1c.0"},
		{in: "00000001:A0:00.1\n", want: "0001:a0:00.1"},
		{in: "", wantErr: true},
		{in: "0000:10:1c", wantErr: true},
		{in: "0000:100:1c.0", wantErr: true},
		{in: "0000:10:20.0", wantErr: true}, // device is 5 bits
		{in: "0000:10:1c.8", wantErr: true}, // function is 3 bits
		{in: "a:b:c:d.0", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := nvidia.NormalizeBusID(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("NormalizeBusID(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestSysfsGPUs(t *testing.T) {
	root := writeSysfs(t, []pciDevice{
		{name: "0000:10:1c.0", vendor: "0x10de", class: "0x030200"}, // 3D controller
		{name: "0000:20:1c.0", vendor: "0x10de", class: "0x030000"}, // VGA
		{name: "0000:c0:00.0", vendor: "0x10de", class: "0x068000"}, // NVSwitch
		{name: "0000:10:00.1", vendor: "0x10de", class: "0x040300"}, // HDMI audio
		{name: "0000:05:00.0", vendor: "0x1d0f", class: "0x030200"}, // not NVIDIA
	})
	got, err := nvidia.SysfsGPUs(root)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"0000:10:1c.0", "0000:20:1c.0"}; !slices.Equal(got, want) {
		t.Errorf("SysfsGPUs = %v, want %v", got, want)
	}
	if got, err := nvidia.SysfsGPUs(t.TempDir()); err != nil || len(got) != 0 {
		t.Errorf("SysfsGPUs(empty) = %v, %v; want none, nil", got, err)
	}
}

func TestEnumerate(t *testing.T) {
	for _, tc := range []struct {
		name        string
		spec        machineSpec
		wantHealthy int
	}{
		{name: "DGX A100", spec: dgxA100(), wantHealthy: 8},
		{name: "MIG on GPU 2", spec: func() machineSpec { s := dgxA100(); s.mig = []int{2}; return s }(), wantHealthy: 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(t, tc.spec)
			b, err := nvidia.New(testOptions(t, m))
			if err != nil {
				t.Fatal(err)
			}
			u := run(t, b)
			devs := u.waitFor(t, "8 GPUs", func(d []deviceplugins.Device) bool { return len(d) == 8 })
			if got := healthyCount(devs); got != tc.wantHealthy {
				t.Errorf("%d healthy GPUs, want %d: %+v", got, tc.wantHealthy, devs)
			}
			gpus := b.GPUs()
			if len(gpus) != 8 {
				t.Fatalf("GPUs() has %d, want 8", len(gpus))
			}
			for i, g := range gpus {
				d := m.devs[i]
				want := nvidia.GPU{
					BusID: busID(i), UUID: d.UUID, Index: i, Minor: d.Minor, Name: "Mock NVIDIA A100-SXM4-40GB",
					MemoryBytes: d.MemoryInfo.Total, NUMANode: tc.spec.numa[i], MIGEnabled: slices.Contains(tc.spec.mig, i),
				}
				if g != want {
					t.Errorf("GPU %d = %+v, want %+v", i, g, want)
				}
				dev := byID(devs)[busID(i)]
				if dev.NUMANode != tc.spec.numa[i] || dev.Healthy == want.MIGEnabled {
					t.Errorf("device %s = %+v, want NUMA %d, healthy %v", busID(i), dev, tc.spec.numa[i], !want.MIGEnabled)
				}
				if want.MIGEnabled && !strings.Contains(dev.Reason, "MIG") {
					t.Errorf("device %s: reason %q does not mention MIG", busID(i), dev.Reason)
				}
			}
		})
	}
}

func TestXIDPolicy(t *testing.T) {
	const quiet = time.Minute
	for _, tc := range []struct {
		name string
		// raise raises events on m.
		raise func(m *machine)
		// unhealthy are the GPUs that must turn unhealthy.
		unhealthy []int
		// recovers says whether they recover after the quiet period.
		recovers bool
	}{
		{name: "ignored XID 13", raise: func(m *machine) { m.xid(1, 13) }},
		{name: "ignored XID 31 on every GPU", raise: func(m *machine) { m.xid(-1, 31) }},
		{name: "transient XID 94", raise: func(m *machine) { m.xid(1, 94) }, unhealthy: []int{1}, recovers: true},
		{name: "transient XID without a device", raise: func(m *machine) { m.xid(-1, 94) },
			unhealthy: []int{0, 1, 2, 3, 4, 5, 6, 7}, recovers: true},
		{name: "fatal XID 79", raise: func(m *machine) { m.xid(1, 79) }, unhealthy: []int{1}},
		{name: "double-bit ECC event is fatal", raise: func(m *machine) {
			m.events <- nvml.EventData{Device: m.devs[3], EventType: nvml.EventTypeDoubleBitEccError}
		}, unhealthy: []int{3}},
		{name: "single-bit ECC event is ignored", raise: func(m *machine) {
			m.events <- nvml.EventData{Device: m.devs[3], EventType: nvml.EventTypeSingleBitEccError}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(t, dgxA100())
			clock := newClock()
			opts := testOptions(t, m)
			opts.Now = clock.Now
			opts.XIDPolicy = nvidia.XIDPolicy{QuietPeriod: quiet}
			b, err := nvidia.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			u := run(t, b)
			u.waitFor(t, "8 healthy GPUs", func(d []deviceplugins.Device) bool { return healthyCount(d) == 8 })

			tc.raise(m)
			// A transient XID on GPU 7 afterwards marks when the events
			// before it have been handled, without waiting on time.
			m.xid(7, 94)
			want := append(slices.Clone(tc.unhealthy), 7)
			devs := u.waitFor(t, "GPU 7 unhealthy", func(d []deviceplugins.Device) bool { return !byID(d)[busID(7)].Healthy })
			for i := range 8 {
				if got := byID(devs)[busID(i)]; got.Healthy == slices.Contains(want, i) {
					t.Errorf("GPU %d: %+v, want healthy %v", i, got, !slices.Contains(want, i))
				}
			}

			clock.Advance(quiet + time.Second)
			want = nil
			if !tc.recovers {
				want = tc.unhealthy
			}
			// GPU 7 recovering marks the quiet period as seen by Run.
			devs = u.waitFor(t, "GPU 7 recovered", func(d []deviceplugins.Device) bool { return byID(d)[busID(7)].Healthy })
			for i := range 8 {
				if got := byID(devs)[busID(i)]; got.Healthy == slices.Contains(want, i) {
					t.Errorf("after the quiet period, GPU %d: %+v, want healthy %v", i, got, !slices.Contains(want, i))
				}
			}
		})
	}
}

func TestFatalXIDClearsOnlyWithPolicyChange(t *testing.T) {
	m := newMachine(t, dgxA100())
	clock := newClock()
	opts := testOptions(t, m)
	opts.Now = clock.Now
	opts.XIDPolicy = nvidia.XIDPolicy{Fatal: []uint64{79}, QuietPeriod: time.Minute}
	b, err := nvidia.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	u := run(t, b)
	u.waitFor(t, "8 healthy GPUs", func(d []deviceplugins.Device) bool { return healthyCount(d) == 8 })
	m.xid(2, 79)
	d := u.waitFor(t, "GPU 2 unhealthy", func(d []deviceplugins.Device) bool { return !byID(d)[busID(2)].Healthy })
	if r := byID(d)[busID(2)].Reason; !strings.Contains(r, "79") {
		t.Errorf("reason %q does not name XID 79", r)
	}
	clock.Advance(24 * time.Hour)
	m.xid(7, 94) // handled after the clock moved
	m.xid(7, 94)
	d = u.waitFor(t, "GPU 7 unhealthy", func(d []deviceplugins.Device) bool { return !byID(d)[busID(7)].Healthy })
	if byID(d)[busID(2)].Healthy {
		t.Fatal("GPU 2 recovered from a fatal XID a day later")
	}

	// XID 79 is now transient: seen a day ago, so the GPU recovers.
	if err := b.SetXIDPolicy(nvidia.XIDPolicy{Fatal: []uint64{}, QuietPeriod: time.Minute}); err != nil {
		t.Fatal(err)
	}
	u.waitFor(t, "GPU 2 healthy", func(d []deviceplugins.Device) bool { return byID(d)[busID(2)].Healthy })

	if err := b.SetXIDPolicy(nvidia.XIDPolicy{Ignore: []uint64{79}, Fatal: []uint64{79}}); err == nil {
		t.Error("SetXIDPolicy accepted XID 79 as both ignored and fatal")
	}
}

func TestInitFailure(t *testing.T) {
	for _, tc := range []struct {
		name      string
		inSysfs   int
		expected  int
		wantIDs   []string
		wantCount bool // GPUCountMismatch reported
	}{
		{name: "all GPUs in sysfs", inSysfs: 8, expected: 8,
			wantIDs: []string{busID(0), busID(1), busID(2), busID(3), busID(4), busID(5), busID(6), busID(7)}},
		{name: "two GPUs off the bus", inSysfs: 6, expected: 8, wantCount: true,
			wantIDs: []string{busID(0), busID(1), busID(2), busID(3), busID(4), busID(5), "missing-gpu-0", "missing-gpu-1"}},
		{name: "no sysfs, count from instance type", inSysfs: 0, expected: 2, wantCount: true,
			wantIDs: []string{"missing-gpu-0", "missing-gpu-1"}},
		{name: "sysfs only", inSysfs: 2, expected: 0, wantIDs: []string{busID(0), busID(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(t, dgxA100())
			m.initRet.Store(int32(nvml.ERROR_DRIVER_NOT_LOADED))
			opts := testOptions(t, m)
			sig := &signals{}
			opts.Reporter = sig
			opts.ExpectedGPUs = tc.expected
			opts.SysfsRoot = sysfsGPUs(t, tc.inSysfs)
			b, err := nvidia.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			u := run(t, b)
			devs := u.waitFor(t, "devices while NVML is down", func(d []deviceplugins.Device) bool { return len(d) > 0 })
			var ids []string
			for _, d := range devs {
				ids = append(ids, d.ID)
				if d.Healthy || !strings.Contains(d.Reason, "NVML") {
					t.Errorf("device %+v: want unhealthy with an NVML reason", d)
				}
			}
			if !slices.Equal(ids, tc.wantIDs) {
				t.Errorf("ids = %v, want %v", ids, tc.wantIDs)
			}
			if got := slices.Contains(sig.reasons(), nvidia.ReasonGPUCountMismatch); got != tc.wantCount {
				t.Errorf("GPUCountMismatch reported = %v, want %v (signals %v)", got, tc.wantCount, sig.reasons())
			}

			// The driver loads: Run keeps retrying and finds all 8.
			m.initRet.Store(int32(nvml.SUCCESS))
			u.waitFor(t, "8 healthy GPUs", func(d []deviceplugins.Device) bool {
				return healthyCount(d) == 8 && len(d) == 8
			})
		})
	}
}

func TestGPUCountMismatch(t *testing.T) {
	for _, tc := range []struct {
		name      string
		inNVML    int
		inSysfs   int
		expected  int
		wantCount bool
		wantIDs   int // devices advertised
	}{
		{name: "all there", inNVML: 8, inSysfs: 8, expected: 8, wantIDs: 8},
		{name: "one fallen off the bus", inNVML: 7, inSysfs: 7, expected: 8, wantCount: true, wantIDs: 8},
		{name: "one hidden from NVML", inNVML: 7, inSysfs: 8, expected: 8, wantCount: true, wantIDs: 8},
		{name: "expected unknown", inNVML: 4, inSysfs: 0, expected: 0, wantIDs: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(t, dgxA100())
			m.Devices = m.Devices[:tc.inNVML]
			opts := testOptions(t, m)
			sig := &signals{}
			opts.Reporter = sig
			opts.ExpectedGPUs = tc.expected
			opts.SysfsRoot = sysfsGPUs(t, tc.inSysfs)
			b, err := nvidia.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			u := run(t, b)
			devs := u.waitFor(t, "devices", func(d []deviceplugins.Device) bool { return len(d) > 0 })
			if len(devs) != tc.wantIDs || healthyCount(devs) != tc.inNVML {
				t.Errorf("%d devices, %d healthy; want %d, %d: %+v", len(devs), healthyCount(devs), tc.wantIDs, tc.inNVML, devs)
			}
			if got := slices.Contains(sig.reasons(), nvidia.ReasonGPUCountMismatch); got != tc.wantCount {
				t.Errorf("GPUCountMismatch reported = %v, want %v (signals %v)", got, tc.wantCount, sig.reasons())
			}
		})
	}
}

// started runs a backend over spec and waits for its GPUs.
func started(t testing.TB, spec machineSpec, cdiFails bool) (*nvidia.Backend, *machine) {
	t.Helper()
	m := newMachine(t, spec)
	opts := testOptions(t, m)
	opts.GenerateCDI = fakeCDI(cdiFails)
	b, err := nvidia.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	u := run(t, b)
	u.waitFor(t, "GPUs", func(d []deviceplugins.Device) bool { return len(d) == len(spec.numa) })
	return b, m
}

func TestPreferredAllocation(t *testing.T) {
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	for _, tc := range []struct {
		name            string
		spec            machineSpec
		available, must []int
		size            int
		want            []int
		wantErr         bool
	}{
		{name: "mesh: a full NVLink quad", spec: hybridCubeMesh(), available: all, size: 4, want: []int{0, 1, 2, 3}},
		{name: "mesh: three all linked", spec: hybridCubeMesh(), available: []int{0, 1, 4, 5, 6}, size: 3, want: []int{4, 5, 6}},
		{name: "mesh: double link wins", spec: hybridCubeMesh(), available: []int{0, 3, 4, 6}, must: []int{0}, size: 2, want: []int{0, 3}},
		{name: "mesh: NVLink peer of a required GPU", spec: hybridCubeMesh(), available: []int{1, 2, 6, 7}, must: []int{7}, size: 2, want: []int{6, 7}},
		{name: "mesh: keep linked pairs whole", spec: hybridCubeMesh(), available: []int{1, 2, 6, 7}, size: 2, want: []int{1, 2}},
		{name: "mesh: two quads", spec: hybridCubeMesh(), available: all, size: 8, want: all},
		{name: "pcie: same switch", spec: pcieOnly(), available: []int{0, 2, 3, 5}, size: 2, want: []int{2, 3}},
		{name: "pcie: same NUMA", spec: pcieOnly(), available: []int{0, 2, 5, 7}, must: []int{5}, size: 2, want: []int{5, 7}},
		{name: "pcie: one GPU leaves pairs whole", spec: pcieOnly(), available: []int{0, 1, 3, 4, 5}, size: 1, want: []int{3}},
		{name: "nvswitch: every pair equal, lowest ids", spec: dgxA100(), available: []int{1, 2, 3, 4}, must: []int{3}, size: 2, want: []int{1, 3}},
		{name: "too many", spec: dgxA100(), available: []int{0, 1}, size: 3, wantErr: true},
		{name: "required not available", spec: dgxA100(), available: []int{0, 1}, must: []int{2}, size: 2, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := started(t, tc.spec, false)
			ids := func(is []int) []string {
				out := []string{}
				for _, i := range is {
					out = append(out, busID(i))
				}
				return out
			}
			got, err := b.PreferredAllocation(ids(tc.available), ids(tc.must), tc.size)
			if (err != nil) != tc.wantErr {
				t.Fatalf("PreferredAllocation: %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && !slices.Equal(got, ids(tc.want)) {
				t.Errorf("PreferredAllocation = %v, want %v", got, ids(tc.want))
			}
		})
	}
}

func TestAllocate(t *testing.T) {
	type want struct {
		cdi     []string
		devices []string
		env     string
		err     bool
	}
	for _, tc := range []struct {
		name     string
		spec     machineSpec
		cdiFails bool
		ids      []string
		want     func(m *machine) want
	}{
		{name: "one GPU", spec: dgxA100(), ids: []string{busID(3)}, want: func(m *machine) want {
			return want{
				cdi:     []string{"nvidia.com/gpu=" + m.devs[3].UUID},
				devices: []string{"/dev/nvidia3", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"},
				env:     m.devs[3].UUID,
			}
		}},
		{name: "two GPUs", spec: dgxA100(), ids: []string{busID(5), busID(0)}, want: func(m *machine) want {
			return want{
				cdi:     []string{"nvidia.com/gpu=" + m.devs[5].UUID, "nvidia.com/gpu=" + m.devs[0].UUID},
				devices: []string{"/dev/nvidia5", "/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"},
				env:     m.devs[5].UUID + "," + m.devs[0].UUID,
			}
		}},
		{name: "no CDI spec: device nodes only", spec: dgxA100(), cdiFails: true, ids: []string{busID(1)}, want: func(m *machine) want {
			return want{
				devices: []string{"/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"},
				env:     m.devs[1].UUID,
			}
		}},
		{name: "one GPU without a CDI name: no CDI at all", spec: func() machineSpec { s := dgxA100(); s.mig = []int{2}; return s }(),
			ids: []string{busID(1), busID(2)}, want: func(m *machine) want {
				return want{
					devices: []string{"/dev/nvidia1", "/dev/nvidia2", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"},
					env:     m.devs[1].UUID + "," + m.devs[2].UUID,
				}
			}},
		{name: "unknown id", spec: dgxA100(), ids: []string{"0000:ff:00.0"}, want: func(*machine) want { return want{err: true} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, m := started(t, tc.spec, tc.cdiFails)
			w := tc.want(m)
			resp, err := b.Allocate(t.Context(), tc.ids)
			if w.err {
				if err == nil || !strings.Contains(err.Error(), tc.ids[0]) {
					t.Fatalf("Allocate(%v) = %v, want an error naming the id", tc.ids, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var cdi, devices []string
			for _, c := range resp.GetCdiDevices() {
				cdi = append(cdi, c.GetName())
			}
			for _, d := range resp.GetDevices() {
				devices = append(devices, d.GetHostPath())
				if d.GetContainerPath() != d.GetHostPath() || d.GetPermissions() != "rw" {
					t.Errorf("device spec %v: want same path inside, rw", d)
				}
			}
			if !slices.Equal(cdi, w.cdi) {
				t.Errorf("CDI devices = %v, want %v", cdi, w.cdi)
			}
			if !slices.Equal(devices, w.devices) {
				t.Errorf("device specs = %v, want %v", devices, w.devices)
			}
			if got := resp.GetEnvs()[nvidia.EnvVisibleDevices]; got != w.env {
				t.Errorf("%s = %q, want %q", nvidia.EnvVisibleDevices, got, w.env)
			}
		})
	}
}

func TestBackendSuite(t *testing.T) {
	m := newMachine(t, dgxA100())
	b, err := nvidia.New(testOptions(t, m))
	if err != nil {
		t.Fatal(err)
	}
	plugintest.RunBackendSuite(t, b, plugintest.SuiteOptions{
		MinHealthy: 8,
		CheckAllocate: func(t *testing.T, id string, resp *pluginapi.ContainerAllocateResponse) {
			if len(resp.GetCdiDevices()) != 1 || !strings.HasPrefix(resp.GetCdiDevices()[0].GetName(), "nvidia.com/gpu=GPU-") {
				t.Errorf("Allocate(%s): CDI devices %v, want one nvidia.com/gpu=GPU-…", id, resp.GetCdiDevices())
			}
			if resp.GetEnvs()[nvidia.EnvVisibleDevices] == "" {
				t.Errorf("Allocate(%s): no %s", id, nvidia.EnvVisibleDevices)
			}
		},
	})
}

func TestNewRejects(t *testing.T) {
	m := newMachine(t, dgxA100())
	for _, tc := range []struct {
		name   string
		change func(o *nvidia.Options)
	}{
		{name: "no NVML", change: func(o *nvidia.Options) { o.NVML = nil }},
		{name: "negative expected count", change: func(o *nvidia.Options) { o.ExpectedGPUs = -1 }},
		{name: "XID both ignored and fatal", change: func(o *nvidia.Options) {
			o.XIDPolicy = nvidia.XIDPolicy{Ignore: []uint64{13}, Fatal: []uint64{13}}
		}},
		{name: "negative quiet period", change: func(o *nvidia.Options) { o.XIDPolicy.QuietPeriod = -time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(t, m)
			tc.change(&o)
			if _, err := nvidia.New(o); err == nil {
				t.Error("New accepted bad options")
			}
		})
	}
}

func BenchmarkAllocate(b *testing.B) {
	be, _ := started(b, dgxA100(), false)
	ids := []string{busID(0), busID(1), busID(2), busID(3), busID(4), busID(5), busID(6), busID(7)}
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("gpus=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := be.Allocate(b.Context(), ids[:n]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPreferredAllocation(b *testing.B) {
	for _, spec := range []struct {
		name string
		spec machineSpec
	}{{"mesh", hybridCubeMesh()}, {"nvswitch", dgxA100()}} {
		be, _ := started(b, spec.spec, false)
		var all []string
		for i := range 8 {
			all = append(all, busID(i))
		}
		for _, size := range []int{1, 2, 4, 8} {
			b.Run(fmt.Sprintf("%s/size=%d", spec.name, size), func(b *testing.B) {
				for b.Loop() {
					if _, err := be.PreferredAllocation(all, all[7:], size); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func FuzzNormalizeBusID(f *testing.F) {
	for _, s := range []string{"00000000:10:1C.0", "0000:10:1c.0", "10:1C.0", "0000:10:1c", "::.", "ffffffff:ff:1f.7"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := nvidia.NormalizeBusID(in)
		if err != nil {
			return
		}
		again, err := nvidia.NormalizeBusID(out)
		if err != nil || again != out {
			t.Fatalf("NormalizeBusID(%q) = %q, which normalises to %q, %v", in, out, again, err)
		}
		if out != strings.ToLower(out) || strings.Count(out, ":") != 2 || strings.Count(out, ".") != 1 {
			t.Fatalf("NormalizeBusID(%q) = %q, not in sysfs form", in, out)
		}
	})
}
