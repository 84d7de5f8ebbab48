package neuron

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/autonode/autonode/deviceplugins"
	"github.com/autonode/autonode/deviceplugins/plugintest"
)

func TestNewRejectsUnknownMode(t *testing.T) {
	_, err := New(Options{Mode: "chip"})
	if err == nil || !strings.Contains(err.Error(), `"chip"`) {
		t.Fatalf("New(Mode: chip) = %v, want an error naming the mode", err)
	}
}

func TestDiscovery(t *testing.T) {
	tests := []struct {
		shape    shape
		mode     Mode
		resource string
		ids      int
		first    string
		last     string
	}{
		{trn1(), ModeCore, ResourceCore, 32, "neuroncore0", "neuroncore31"},
		{trn1(), ModeDevice, ResourceDevice, 16, "neuron0", "neuron15"},
		{trn2(), ModeCore, ResourceCore, 128, "neuroncore0", "neuroncore127"},
		{trn2(), ModeDevice, ResourceDevice, 16, "neuron0", "neuron15"},
		{inf2(), ModeCore, ResourceCore, 24, "neuroncore0", "neuroncore23"},
		{inf2xl(), ModeCore, ResourceCore, 2, "neuroncore0", "neuroncore1"},
		{inf2xl(), "", ResourceCore, 2, "neuroncore0", "neuroncore1"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.shape.name, tt.mode), func(t *testing.T) {
			b := newBackend(t, fakeSysfs(t, tt.shape), tt.mode)
			if got := b.ResourceName(); got != tt.resource {
				t.Errorf("ResourceName = %q, want %q", got, tt.resource)
			}
			ds := <-plugintest.StartBackend(t, b)
			if len(ds) != tt.ids {
				t.Fatalf("%d ids, want %d", len(ds), tt.ids)
			}
			if ds[0].ID != tt.first || ds[len(ds)-1].ID != tt.last {
				t.Errorf("ids run %s..%s, want %s..%s", ds[0].ID, ds[len(ds)-1].ID, tt.first, tt.last)
			}
			// One resource per node: ids of the other resource never appear.
			other := "neuroncore"
			if tt.resource == ResourceCore {
				other = "neuron"
			}
			for _, d := range ds {
				if !d.Healthy || d.NUMANode != -1 {
					t.Errorf("%+v: want healthy with NUMA node -1", d)
				}
				if tt.resource == ResourceCore && !strings.HasPrefix(d.ID, "neuroncore") ||
					tt.resource == ResourceDevice && strings.HasPrefix(d.ID, "neuroncore") {
					t.Errorf("id %q of resource %s looks like a %s id", d.ID, tt.resource, other)
				}
			}
		})
	}
}

func TestRunFailsWithoutDriver(t *testing.T) {
	root := t.TempDir()
	b := newBackend(t, root, ModeCore)
	err := b.Run(context.Background(), func([]deviceplugins.Device) {})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(root, deviceDir)) {
		t.Fatalf("Run = %v, want an error naming %s", err, filepath.Join(root, deviceDir))
	}
}

func TestDiscoveryRejectsBadFiles(t *testing.T) {
	tests := []struct {
		name, file, content, want string
	}{
		{"bad core count", "core_count", "two", "core_count"},
		{"zero cores", "core_count", "0", "core count 0"},
		{"bad neighbour", "connected_devices", "1, x", `bad device index "x"`},
		{"mixed core counts", "core_count", "4", "mixed core counts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fakeSysfs(t, trn1())
			writeFile(t, filepath.Join(root, deviceDir, "neuron5", tt.file), tt.content)
			_, err := scan(root)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("scan = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestAllocate(t *testing.T) {
	tests := []struct {
		name    string
		shape   shape
		mode    Mode
		ids     []string
		devices []string
		cores   string
		err     string
	}{
		{"one core", trn1(), ModeCore, []string{"neuroncore3"}, []string{"neuron1"}, "3", ""},
		{"cores of one device", trn1(), ModeCore, []string{"neuroncore3", "neuroncore2"}, []string{"neuron1"}, "2-3", ""},
		{"cores across devices", trn2(), ModeCore, []string{"neuroncore6", "neuroncore7", "neuroncore8", "neuroncore9"}, []string{"neuron0", "neuron1"}, "6-9", ""},
		{"scattered cores", trn2(), ModeCore, []string{"neuroncore127", "neuroncore0", "neuroncore1"}, []string{"neuron0", "neuron15"}, "0-1,127", ""},
		{"one device", trn2(), ModeDevice, []string{"neuron3"}, []string{"neuron3"}, "24-31", ""},
		{"two devices", trn1(), ModeDevice, []string{"neuron2", "neuron0"}, []string{"neuron0", "neuron2"}, "0-1,4-5", ""},
		{"unknown id", trn1(), ModeCore, []string{"neuroncore99"}, nil, "", "neuroncore99"},
		{"id of the other resource", trn1(), ModeCore, []string{"neuron1"}, nil, "", "neuron1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend(t, fakeSysfs(t, tt.shape), tt.mode)
			<-plugintest.StartBackend(t, b)
			resp, err := b.Allocate(context.Background(), tt.ids)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Allocate(%v) = %v, want an error naming %s", tt.ids, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Allocate(%v): %v", tt.ids, err)
			}
			var devs []string
			for _, d := range resp.Devices {
				name := filepath.Base(d.HostPath)
				devs = append(devs, name)
				if d.ContainerPath != "/dev/"+name || d.HostPath != "/dev/"+name || d.Permissions != "rw" {
					t.Errorf("device spec %+v", d)
				}
			}
			if !slices.Equal(devs, tt.devices) {
				t.Errorf("devices %v, want %v", devs, tt.devices)
			}
			if got := resp.Envs[VisibleCoresEnv]; got != tt.cores {
				t.Errorf("%s = %q, want %q", VisibleCoresEnv, got, tt.cores)
			}
		})
	}
}

func ids(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func TestPreferredAllocation(t *testing.T) {
	tests := []struct {
		name      string
		shape     shape
		mode      Mode
		available []string
		must      []string
		size      int
		want      []string
		err       string
	}{
		{"trn1 first core", trn1(), ModeCore, ids("neuroncore", 0, 31), nil, 1, ids("neuroncore", 0, 0), ""},
		{"trn1 pair fills a device", trn1(), ModeCore, ids("neuroncore", 1, 31), nil, 1, ids("neuroncore", 1, 1), ""},
		// Cores 1-2 would span two devices; 30-31 leave one free run, 2-3 two.
		{"trn1 stays within a device", trn1(), ModeCore, ids("neuroncore", 1, 31), nil, 2, ids("neuroncore", 30, 31), ""},
		{"trn1 row of four devices", trn1(), ModeCore, ids("neuroncore", 0, 31), nil, 8, ids("neuroncore", 0, 7), ""},
		{"trn1 two rows", trn1(), ModeCore, ids("neuroncore", 0, 31), nil, 16, ids("neuroncore", 0, 15), ""},
		// Devices 3 and 4 sit in different torus rows and are not linked, so
		// cores 6-9 are not a connected block; 8-11 (devices 4, 5) are.
		{"trn1 skips unlinked neighbours", trn1(), ModeCore, ids("neuroncore", 6, 11), nil, 4, ids("neuroncore", 8, 11), ""},
		{"trn1 scattered when nothing fits", trn1(), ModeCore, ids("neuroncore", 6, 9), nil, 4, ids("neuroncore", 6, 9), ""},
		{"trn2 one device", trn2(), ModeCore, ids("neuroncore", 0, 127), nil, 8, ids("neuroncore", 0, 7), ""},
		{"trn2 best fit", trn2(), ModeCore,
			append(ids("neuroncore", 4, 7), ids("neuroncore", 16, 127)...), nil, 4, ids("neuroncore", 4, 7), ""},
		{"trn2 one device over a straddle", trn2(), ModeCore, ids("neuroncore", 4, 127), nil, 8, ids("neuroncore", 120, 127), ""},
		{"trn2 must include", trn2(), ModeCore, ids("neuroncore", 0, 127), ids("neuroncore", 42, 42), 3, ids("neuroncore", 40, 42), ""},
		{"trn2 devices", trn2(), ModeDevice, ids("neuron", 0, 15), nil, 4, ids("neuron", 0, 3), ""},
		{"trn2 devices need a link", trn2(), ModeDevice, ids("neuron", 3, 5), nil, 2, ids("neuron", 4, 5), ""},
		{"inf2 ring", inf2(), ModeCore, ids("neuroncore", 0, 23), nil, 24, ids("neuroncore", 0, 23), ""},
		{"inf2.xlarge", inf2xl(), ModeCore, ids("neuroncore", 0, 1), nil, 2, ids("neuroncore", 0, 1), ""},
		{"too many", inf2xl(), ModeCore, ids("neuroncore", 0, 1), nil, 3, nil, "only 2"},
		{"zero", inf2xl(), ModeCore, ids("neuroncore", 0, 1), nil, 0, nil, "must be positive"},
		{"unknown", inf2xl(), ModeCore, ids("neuroncore", 0, 2), nil, 1, nil, "neuroncore2"},
		{"must not available", inf2xl(), ModeCore, ids("neuroncore", 0, 0), ids("neuroncore", 1, 1), 1, nil, "neuroncore1"},
		{"must over size", inf2xl(), ModeCore, ids("neuroncore", 0, 1), ids("neuroncore", 0, 1), 1, nil, "must be included"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend(t, fakeSysfs(t, tt.shape), tt.mode)
			<-plugintest.StartBackend(t, b)
			got, err := b.PreferredAllocation(tt.available, tt.must, tt.size)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("PreferredAllocation = %v, %v; want an error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("PreferredAllocation = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFragmentationGauges(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	b, err := New(Options{SysfsRoot: fakeSysfs(t, trn2()), Mode: ModeCore, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	<-plugintest.StartBackend(t, b)
	// Device 1 is in use; the pick takes cores 0-1 (best fit).
	avail := append(ids("neuroncore", 0, 7), ids("neuroncore", 16, 127)...)
	if _, err := b.PreferredAllocation(avail, nil, 2); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"autonode_neuron_largest_free_block": 112, // cores 16-127
		"autonode_neuron_free":               float64(len(avail) - 2),
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		w, ok := want[mf.GetName()]
		if !ok {
			continue
		}
		delete(want, mf.GetName())
		m := mf.GetMetric()[0]
		if got := m.GetGauge().GetValue(); got != w {
			t.Errorf("%s = %v, want %v", mf.GetName(), got, w)
		}
		if l := m.GetLabel(); len(l) != 1 || l[0].GetValue() != ResourceCore {
			t.Errorf("%s labels %v, want resource=%s", mf.GetName(), l, ResourceCore)
		}
	}
	if len(want) > 0 {
		t.Errorf("metrics not gathered: %v", want)
	}
	if _, err := New(Options{SysfsRoot: t.TempDir(), Registerer: reg}); err == nil {
		t.Error("registering the gauges twice succeeded, want an error")
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name    string
		mode    Mode
		counter string
		// dir writes the counter in the driver's total/present shape.
		dir       bool
		unhealthy []string
	}{
		{"hbm ecc marks the cores", ModeCore, "mem_ecc_uncorrected", false, []string{"neuroncore6", "neuroncore7"}},
		{"sram ecc marks the device", ModeDevice, "sram_ecc_uncorrected", false, []string{"neuron3"}},
		{"counter directory", ModeCore, "sram_ecc_uncorrected", true, []string{"neuroncore6", "neuroncore7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fakeSysfs(t, trn1())
			path := filepath.Join(root, deviceDir, "neuron3", "stats", "hardware", tt.counter)
			if tt.dir {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				path = filepath.Join(path, "total")
				writeFile(t, path, "0\n")
			}
			updates := plugintest.StartBackend(t, newBackend(t, root, tt.mode))
			if ds := <-updates; len(unhealthyIDs(ds)) != 0 {
				t.Fatalf("unhealthy at start: %v", unhealthyIDs(ds))
			}

			writeFile(t, path, "1\n")
			ds := plugintest.WaitForUpdate(t, updates, "an unhealthy device", func(ds []deviceplugins.Device) bool { return len(unhealthyIDs(ds)) > 0 })
			if got := unhealthyIDs(ds); !slices.Equal(got, tt.unhealthy) {
				t.Errorf("unhealthy %v, want %v", got, tt.unhealthy)
			}
			for _, d := range ds {
				if !d.Healthy && !strings.Contains(d.Reason, tt.counter) {
					t.Errorf("%s: reason %q does not name %s", d.ID, d.Reason, tt.counter)
				}
			}

			// Clearing the counter (writing to it, or a driver reload) heals.
			writeFile(t, path, "0\n")
			plugintest.WaitForUpdate(t, updates, "all healthy again", func(ds []deviceplugins.Device) bool { return len(unhealthyIDs(ds)) == 0 })
		})
	}
}

func TestHealthErrorsAtStartAndLostSysfs(t *testing.T) {
	root := fakeSysfs(t, inf2())
	writeFile(t, filepath.Join(root, deviceDir, "neuron0", "stats", "hardware", "mem_ecc_uncorrected"), "3\n")
	updates := plugintest.StartBackend(t, newBackend(t, root, ModeDevice))
	if got := unhealthyIDs(<-updates); !slices.Equal(got, []string{"neuron0"}) {
		t.Fatalf("unhealthy at start %v, want [neuron0]: errors since the driver loaded count", got)
	}

	// The driver unloads: every device turns unhealthy and stays listed.
	hidden := root + "-hidden"
	if err := os.Rename(filepath.Join(root, "devices"), hidden); err != nil {
		t.Fatal(err)
	}
	ds := plugintest.WaitForUpdate(t, updates, "every device unhealthy", func(ds []deviceplugins.Device) bool { return len(unhealthyIDs(ds)) == len(ds) })
	if len(ds) != 12 {
		t.Errorf("%d devices listed without sysfs, want 12", len(ds))
	}
	if err := os.Rename(hidden, filepath.Join(root, "devices")); err != nil {
		t.Fatal(err)
	}
	plugintest.WaitForUpdate(t, updates, "only neuron0 unhealthy", func(ds []deviceplugins.Device) bool {
		return slices.Equal(unhealthyIDs(ds), []string{"neuron0"})
	})

	// Hot-unplug: a device that leaves sysfs leaves the list.
	if err := os.RemoveAll(filepath.Join(root, deviceDir, "neuron11")); err != nil {
		t.Fatal(err)
	}
	plugintest.WaitForUpdate(t, updates, "11 devices", func(ds []deviceplugins.Device) bool { return len(ds) == 11 })
}

func unhealthyIDs(ds []deviceplugins.Device) []string {
	var out []string
	for _, d := range ds {
		if !d.Healthy {
			out = append(out, d.ID)
		}
	}
	return out
}

func TestBackendSuite(t *testing.T) {
	for _, mode := range []Mode{ModeCore, ModeDevice} {
		t.Run(string(mode), func(t *testing.T) {
			b := newBackend(t, fakeSysfs(t, trn1()), mode)
			plugintest.RunBackendSuite(t, b, plugintest.SuiteOptions{
				MinHealthy: 16,
				CheckAllocate: func(t *testing.T, id string, resp *pluginapi.ContainerAllocateResponse) {
					if len(resp.Devices) != 1 || resp.Envs[VisibleCoresEnv] == "" {
						t.Errorf("Allocate(%s) = %v, want one device and %s", id, resp, VisibleCoresEnv)
					}
				},
			})
		})
	}
}
