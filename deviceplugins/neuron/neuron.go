// Package neuron is the device-plugin backend for AWS Neuron devices
// (Inferentia2, Trainium): it discovers them in sysfs, advertises either
// whole devices (aws.amazon.com/neuron) or NeuronCores
// (aws.amazon.com/neuroncore), prefers topology-aware allocations and marks
// devices with uncorrectable memory errors unhealthy.
//
// Sysfs layout read (Neuron driver; "Neuron Sysfs User Guide" in
// aws-neuron-sdk), root configurable, default /sys:
//
//	devices/virtual/neuron_device/
//	└── neuronN/                       one per device, N = device index
//	    ├── core_count                 "2" (trn1, inf2) or "8" (trn2)
//	    ├── connected_devices          neighbour indices, "12, 3, 4, 1"; empty when alone
//	    └── stats/hardware/
//	        ├── mem_ecc_uncorrected    uncorrectable HBM ECC events since driver load
//	        └── sram_ecc_uncorrected   uncorrectable SRAM ECC events since driver load
//
// and the character device /dev/neuronN for each device.
//
// One resource per node. The kubelet counts aws.amazon.com/neuron and
// aws.amazon.com/neuroncore separately and would hand the same silicon out
// twice if both were advertised, so a Backend serves exactly one of them,
// chosen by Options.Mode (ModeCore by default); the other is not advertised
// at all. Wire one neuron Backend per node.
//
// Ids: "neuronN" in device mode, "neuroncoreK" in core mode, where K is the
// global core index N×core_count+c that NEURON_RT_VISIBLE_CORES uses.
// Allocate returns the /dev/neuronN nodes of the devices holding the units
// and NEURON_RT_VISIBLE_CORES as comma-joined "a-b" ranges.
//
// Preferred allocation: units are ordered by global core index. A request
// gets a window of consecutive units whose devices form a connected subgraph
// of the connected_devices graph (a ring on inf2, a 4×4 torus on trn1 and
// trn2), so NEURON_RT_VISIBLE_CORES is a single range and collectives stay on
// device-to-device links. Among such windows it picks the one spanning the
// fewest devices (cores within one device first), then the tightest free run
// that holds it, then one at an edge of its run, then the lowest index. When
// no window fits, it picks a best-effort scattered set. The largest window
// still free is published as a gauge after each call; that is the only moment
// the plugin learns which units are free. Fragmentation across nodes is not
// prevented: the scheduler sees counts only.
package neuron

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/autonode/autonode/deviceplugins"
)

// Resource names, one of which a Backend advertises.
const (
	ResourceDevice = "aws.amazon.com/neuron"
	ResourceCore   = "aws.amazon.com/neuroncore"
)

// VisibleCoresEnv is the variable the Neuron runtime reads to find its cores.
const VisibleCoresEnv = "NEURON_RT_VISIBLE_CORES"

// Mode picks the one resource a node advertises.
type Mode string

const (
	// ModeCore advertises aws.amazon.com/neuroncore, one id per NeuronCore.
	ModeCore Mode = "core"
	// ModeDevice advertises aws.amazon.com/neuron, one id per device.
	ModeDevice Mode = "device"
)

// Options configures a Backend. Zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// SysfsRoot is where sysfs is mounted. Default is /sys.
	SysfsRoot string
	// DevRoot is the host folder holding neuronN device nodes. Default is
	// /dev. Containers always see them at /dev/neuronN.
	DevRoot string
	// Mode is the one resource this node advertises: "core" or "device".
	// Default is "core".
	Mode Mode
	// PollInterval is how often devices and error counters are re-read.
	// Default is 10s.
	PollInterval time.Duration
	// Registerer receives the fragmentation gauges; nil registers none.
	Registerer prometheus.Registerer
}

// Backend serves one Neuron resource. It implements deviceplugins.Backend
// and deviceplugins.PreferredAllocator.
type Backend struct {
	log  *slog.Logger
	opts Options

	largestFree prometheus.Gauge
	free        prometheus.Gauge

	mu     sync.RWMutex
	layout *layout
}

var (
	_ deviceplugins.Backend            = (*Backend)(nil)
	_ deviceplugins.PreferredAllocator = (*Backend)(nil)
)

// New checks opts and registers the gauges; discovery happens in Run.
func New(opts Options) (*Backend, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SysfsRoot == "" {
		opts.SysfsRoot = "/sys"
	}
	if opts.DevRoot == "" {
		opts.DevRoot = "/dev"
	}
	if opts.Mode == "" {
		opts.Mode = ModeCore
	}
	if opts.Mode != ModeCore && opts.Mode != ModeDevice {
		return nil, fmt.Errorf("neuron mode %q: want %q or %q", opts.Mode, ModeCore, ModeDevice)
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 10 * time.Second
	}
	b := &Backend{opts: opts, log: opts.Logger.With("resource", resourceName(opts.Mode))}
	labels := prometheus.Labels{"resource": resourceName(opts.Mode)}
	b.largestFree = prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "autonode_neuron_largest_free_block",
		Help:        "Largest number of ids one more request could get as a contiguous, connected block, as of the last preferred allocation.",
		ConstLabels: labels,
	})
	b.free = prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "autonode_neuron_free",
		Help:        "Ids free after the last preferred allocation.",
		ConstLabels: labels,
	})
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{b.largestFree, b.free} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering neuron metrics: %w", err)
			}
		}
	}
	return b, nil
}

func resourceName(m Mode) string {
	if m == ModeDevice {
		return ResourceDevice
	}
	return ResourceCore
}

// ResourceName is aws.amazon.com/neuroncore or aws.amazon.com/neuron, by Mode.
func (b *Backend) ResourceName() string { return resourceName(b.opts.Mode) }

// Run discovers the devices, reports them, and polls sysfs until ctx ends.
// It fails only when the first scan fails; later failures mark every device
// unhealthy until sysfs reads again.
func (b *Backend) Run(ctx context.Context, update func([]deviceplugins.Device)) error {
	devices, err := scan(b.opts.SysfsRoot)
	if err != nil {
		return err
	}
	b.install(devices)
	last := b.report(devices)
	update(last)
	b.log.Info("neuron devices discovered", "devices", len(devices), "ids", len(last))

	t := time.NewTicker(b.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		next, err := scan(b.opts.SysfsRoot)
		if err != nil {
			b.log.Warn("scanning neuron devices", "err", err)
			next = b.allUnhealthy(err.Error())
		} else {
			b.install(next)
		}
		cur := b.report(next)
		if !slices.Equal(cur, last) {
			for _, d := range cur {
				if !d.Healthy {
					b.log.Warn("neuron device unhealthy", "device", d.ID, "reason", d.Reason)
				}
			}
			last = cur
			update(cur)
		}
	}
}

// install replaces the layout when the devices or their links changed.
func (b *Backend) install(devices []device) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.layout != nil && sameTopology(b.layout.devices, devices) {
		b.layout.devices = devices // health only
		return
	}
	b.layout = newLayout(b.opts.Mode, devices)
}

func sameTopology(a, b []device) bool {
	return slices.EqualFunc(a, b, func(x, y device) bool {
		return x.index == y.index && x.cores == y.cores && slices.Equal(x.neighbours, y.neighbours)
	})
}

func (b *Backend) allUnhealthy(reason string) []device {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.layout == nil {
		return nil
	}
	out := slices.Clone(b.layout.devices)
	for i := range out {
		out[i].healthy, out[i].reason = false, reason
	}
	return out
}

// report lists the ids of the current layout with the health of devices.
func (b *Backend) report(devices []device) []deviceplugins.Device {
	b.mu.RLock()
	defer b.mu.RUnlock()
	health := make(map[int]device, len(devices))
	for _, d := range devices {
		health[d.index] = d
	}
	out := make([]deviceplugins.Device, len(b.layout.ids))
	for p, id := range b.layout.ids {
		d := health[b.layout.devices[b.layout.unitDev[p]].index]
		out[p] = deviceplugins.Device{ID: id, Healthy: d.healthy, NUMANode: -1, Reason: d.reason}
	}
	return out
}

// Allocate returns the device nodes holding ids and their cores.
func (b *Backend) Allocate(_ context.Context, ids []string) (*pluginapi.ContainerAllocateResponse, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.layout == nil {
		return nil, fmt.Errorf("allocating %v: no neuron devices discovered yet", ids)
	}
	var cores []int
	devs := map[int]bool{}
	for _, id := range ids {
		p, ok := b.layout.pos[id]
		if !ok {
			return nil, fmt.Errorf("allocating %s: unknown %s id", id, b.ResourceName())
		}
		devs[b.layout.devices[b.layout.unitDev[p]].index] = true
		cores = append(cores, b.layout.cores(p)...)
	}
	slices.Sort(cores)
	cores = slices.Compact(cores)
	resp := &pluginapi.ContainerAllocateResponse{Envs: map[string]string{VisibleCoresEnv: formatCores(cores)}}
	for _, idx := range slices.Sorted(maps.Keys(devs)) {
		name := "neuron" + strconv.Itoa(idx)
		resp.Devices = append(resp.Devices, &pluginapi.DeviceSpec{
			ContainerPath: "/dev/" + name,
			HostPath:      filepath.Join(b.opts.DevRoot, name),
			Permissions:   "rw",
		})
	}
	return resp, nil
}

// PreferredAllocation picks size ids from available, including mustInclude,
// by the rules in the package doc, and updates the fragmentation gauges.
func (b *Backend) PreferredAllocation(available, mustInclude []string, size int) ([]string, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.layout == nil {
		return nil, fmt.Errorf("preferred allocation: no neuron devices discovered yet")
	}
	picked, contiguous, err := b.layout.prefer(available, mustInclude, size)
	if err != nil {
		return nil, fmt.Errorf("preferred allocation of %d %s: %w", size, b.ResourceName(), err)
	}
	free := make([]bool, len(b.layout.ids))
	for _, id := range available {
		free[b.layout.pos[id]] = true
	}
	out := make([]string, len(picked))
	for i, p := range picked {
		free[p] = false
		out[i] = b.layout.ids[p]
	}
	b.largestFree.Set(float64(b.layout.largestBlock(free)))
	b.free.Set(float64(len(available) - len(picked)))
	if !contiguous {
		b.log.Info("no contiguous neuron block fits; allocation is scattered", "size", size, "available", len(available))
	}
	return out, nil
}
