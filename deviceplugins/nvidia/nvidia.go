// Package nvidia is the device-plugin backend for nvidia.com/gpu. It finds
// full GPUs through NVML (go-nvml), names each by its PCI bus id so that ids
// survive driver failures, writes a CDI spec for them with the NVIDIA
// Container Toolkit's nvcdi, and watches NVML's XID and ECC events to mark
// GPUs unhealthy under an XIDPolicy. Allocate answers with CDI device names
// plus plain device nodes and NVIDIA_VISIBLE_DEVICES for runtimes without
// CDI; PreferredAllocation packs requests by NVLink, PCIe and NUMA distance.
//
// When NVML cannot start, the GPUs that sysfs shows (and at least
// Options.ExpectedGPUs of them) are advertised unhealthy rather than not at
// all, so that the node reports broken hardware instead of a node without
// GPUs, and Init is retried with backoff.
package nvidia

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/autonode/autonode/agent/backoff"
	"github.com/autonode/autonode/deviceplugins"
	"github.com/autonode/autonode/health"
)

// ResourceName is the extended resource this backend serves.
const ResourceName = "nvidia.com/gpu"

// ReasonGPUCountMismatch is the health signal reason when fewer GPUs are
// usable than the instance should have.
const ReasonGPUCountMismatch = "GPUCountMismatch"

// Options configures a Backend. Only NVML is required.
type Options struct {
	// Logger receives the backend's logs. Default is slog.Default().
	Logger *slog.Logger
	// NVML is the NVML library: nvml.New() in production, a mock in tests.
	NVML nvml.Interface
	// Reporter takes the GPUCountMismatch signal. Default logs it.
	Reporter health.Reporter
	// ExpectedGPUs is how many GPUs the instance type has; 0 means unknown.
	// The backend always advertises at least this many devices.
	ExpectedGPUs int
	// SysfsRoot is where sysfs is mounted. Default is /sys.
	SysfsRoot string
	// XIDPolicy says which XIDs are ignored, fatal or transient.
	XIDPolicy XIDPolicy
	// CDI configures the default CDI generator; ignored when GenerateCDI is
	// set.
	CDI CDIOptions
	// GenerateCDI writes the CDI spec. Default is NewCDIGenerator(CDI).
	GenerateCDI CDIGenerator
	// EventWaitTimeout bounds one NVML event wait, and so how late Run sees
	// ctx end, a quiet period pass or a policy change. Default is 2s.
	EventWaitTimeout time.Duration
	// InitBackoff and InitBackoffMax shape the retries of NVML Init.
	// Defaults are 1s and 1m.
	InitBackoff, InitBackoffMax time.Duration
	// Now is the clock for quiet periods. Default is time.Now.
	Now func() time.Time
}

// Backend serves nvidia.com/gpu. It implements deviceplugins.Backend and
// deviceplugins.PreferredAllocator.
type Backend struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	policy XIDPolicy
	// gpus are the GPUs of the last enumeration, by bus id.
	gpus map[string]*GPU
	// devices is the list last given to update, in id order.
	devices []deviceplugins.Device
	// health is the XID history by bus id; it outlives Run so that a fatal
	// XID survives an NVML restart.
	health map[string]*gpuHealth
	// cdiNames maps UUIDs to CDI device names of the spec last written.
	cdiNames map[string]string
	topo     topology
}

var (
	_ deviceplugins.Backend            = (*Backend)(nil)
	_ deviceplugins.PreferredAllocator = (*Backend)(nil)
)

// New checks opts, fills in defaults and returns a Backend.
func New(opts Options) (*Backend, error) {
	if opts.NVML == nil {
		return nil, errors.New("nvidia backend: NVML library is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	log := opts.Logger.With("resource", ResourceName)
	if opts.Reporter == nil {
		opts.Reporter = health.LogReporter{Logger: log}
	}
	if opts.SysfsRoot == "" {
		opts.SysfsRoot = "/sys"
	}
	if opts.ExpectedGPUs < 0 {
		return nil, fmt.Errorf("nvidia backend: negative expected GPU count %d", opts.ExpectedGPUs)
	}
	policy := opts.XIDPolicy.withDefaults()
	if err := policy.Validate(); err != nil {
		return nil, fmt.Errorf("nvidia backend: %w", err)
	}
	if opts.GenerateCDI == nil {
		cdi := opts.CDI
		if cdi.Logger == nil {
			cdi.Logger = log
		}
		opts.GenerateCDI = NewCDIGenerator(opts.NVML, cdi)
	}
	if opts.EventWaitTimeout <= 0 {
		opts.EventWaitTimeout = 2 * time.Second
	}
	if opts.InitBackoff <= 0 {
		opts.InitBackoff = time.Second
	}
	if opts.InitBackoffMax <= 0 {
		opts.InitBackoffMax = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Backend{
		opts:   opts,
		log:    log,
		policy: policy,
		gpus:   map[string]*GPU{},
		health: map[string]*gpuHealth{},
	}, nil
}

// ResourceName returns nvidia.com/gpu.
func (b *Backend) ResourceName() string { return ResourceName }

// SetXIDPolicy replaces the XID policy. Fatal XIDs seen so far are judged
// again under it; Run publishes the result after its current event wait.
func (b *Backend) SetXIDPolicy(p XIDPolicy) error {
	p = p.withDefaults()
	if err := p.Validate(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.policy = p
	for _, h := range b.health {
		h.reclassify(p)
	}
	return nil
}

// GPUs returns the GPUs of the last successful enumeration, by bus id.
func (b *Backend) GPUs() []GPU {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]GPU, 0, len(b.gpus))
	for _, g := range b.gpus {
		c := *g
		c.handle = nil // NVML handles stay inside; they die with Shutdown
		out = append(out, c)
	}
	slices.SortFunc(out, func(x, y GPU) int { return strings.Compare(x.BusID, y.BusID) })
	return out
}

// CDIDeviceNames returns the CDI device names of the spec last written, by
// GPU UUID; empty when no spec was written.
func (b *Backend) CDIDeviceNames() map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]string, len(b.cdiNames))
	for k, v := range b.cdiNames {
		out[k] = v
	}
	return out
}

// Run starts NVML (retrying with backoff while it fails), enumerates the
// GPUs, writes the CDI spec and watches XID and ECC events until ctx ends.
func (b *Backend) Run(ctx context.Context, update func([]deviceplugins.Device)) error {
	lib := b.opts.NVML
	sysfsIDs, err := SysfsGPUs(b.opts.SysfsRoot)
	if err != nil {
		// Without sysfs only ExpectedGPUs says what should be there.
		b.log.Warn("cannot list GPUs in sysfs", "err", err)
	}

	bo := backoff.New(b.opts.InitBackoff, b.opts.InitBackoffMax)
	for attempt := 0; ; attempt++ {
		ret := lib.Init()
		if ret == nvml.SUCCESS {
			break
		}
		b.log.Error("NVML init failed; GPUs advertised unhealthy", "err", ret, "sysfsGPUs", len(sysfsIDs), "attempt", attempt)
		if attempt == 0 {
			b.checkCount(ctx, len(sysfsIDs), nil)
		}
		b.publish(update, b.withoutNVML(sysfsIDs, "NVML init failed: "+ret.Error()))
		if err := backoff.Sleep(ctx, bo.Step()); err != nil {
			return nil
		}
	}
	defer func() {
		if ret := lib.Shutdown(); ret != nvml.SUCCESS {
			b.log.Warn("NVML shutdown failed", "err", ret)
		}
	}()

	gpus, err := enumerate(lib, b.opts.SysfsRoot)
	if err != nil {
		return fmt.Errorf("enumerating GPUs: %w", err)
	}
	topo := measureTopology(b.log, gpus)
	names := b.writeCDI(ctx, gpus)

	b.mu.Lock()
	b.gpus = make(map[string]*GPU, len(gpus))
	for i := range gpus {
		g := gpus[i]
		b.gpus[g.BusID] = &g
		if b.health[g.BusID] == nil {
			b.health[g.BusID] = &gpuHealth{}
		}
	}
	b.cdiNames = names
	b.topo = topo
	b.mu.Unlock()
	b.checkCount(ctx, len(gpus), sysfsIDs)
	for _, g := range gpus {
		b.log.Info("found GPU", "gpu", g.BusID, "uuid", g.UUID, "index", g.Index, "minor", g.Minor,
			"name", g.Name, "memoryBytes", g.MemoryBytes, "numa", g.NUMANode, "mig", g.MIGEnabled)
	}
	b.publish(update, b.current(sysfsIDs))

	set, err := registerEvents(b.log, lib, gpus)
	if err != nil {
		return err
	}
	defer func() {
		if ret := lib.EventSetFree(set); ret != nvml.SUCCESS {
			b.log.Warn("freeing NVML event set failed", "err", ret)
		}
	}()
	timeoutMs := uint32(b.opts.EventWaitTimeout.Milliseconds())
	for ctx.Err() == nil {
		data, ret := lib.EventSetWait(set, timeoutMs)
		switch ret {
		case nvml.SUCCESS:
			b.handleEvent(data)
		case nvml.ERROR_TIMEOUT:
		default:
			// The plugin restarts Run, which re-enumerates; XID history
			// is kept in b.health.
			return fmt.Errorf("waiting for NVML events: %w", ret)
		}
		b.publish(update, b.current(sysfsIDs))
	}
	return nil
}

// registerEvents asks NVML for XID and double-bit ECC events of every GPU.
func registerEvents(log *slog.Logger, lib nvml.Interface, gpus []GPU) (nvml.EventSet, error) {
	set, ret := lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("creating NVML event set: %w", ret)
	}
	const wanted = uint64(nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError)
	for _, g := range gpus {
		types := wanted
		if supported, ret := g.handle.GetSupportedEventTypes(); ret == nvml.SUCCESS {
			types &= supported
		}
		if types == 0 {
			log.Warn("GPU supports no XID or ECC events; no health checks", "gpu", g.BusID)
			continue
		}
		switch ret := g.handle.RegisterEvents(types, set); ret {
		case nvml.SUCCESS:
		case nvml.ERROR_NOT_SUPPORTED:
			log.Warn("GPU too old for event-based health checks", "gpu", g.BusID)
		default:
			lib.EventSetFree(set)
			return nil, fmt.Errorf("GPU %s: registering for events: %w", g.BusID, ret)
		}
	}
	return set, nil
}

// handleEvent records one NVML event against the GPU that raised it, or
// against every GPU when NVML cannot say which.
func (b *Backend) handleEvent(e nvml.EventData) {
	var xid uint64
	switch e.EventType {
	case nvml.EventTypeXidCriticalError:
		xid = e.EventData
	case nvml.EventTypeDoubleBitEccError:
		xid = xidDoubleBitECC
	default:
		return
	}
	uuid := ""
	if e.Device != nil {
		uuid, _ = e.Device.GetUUID()
	}
	now := b.opts.Now()

	b.mu.Lock()
	defer b.mu.Unlock()
	class := b.policy.classify(xid)
	var hit []string
	for id, g := range b.gpus {
		if uuid == "" || g.UUID == uuid {
			hit = append(hit, id)
		}
	}
	if len(hit) == 0 {
		// A UUID we do not know (a MIG device of a GPU, say) is treated
		// like an event without a device.
		for id := range b.gpus {
			hit = append(hit, id)
		}
	}
	slices.Sort(hit)
	for _, id := range hit {
		b.health[id].record(b.policy, xid, now)
	}
	b.log.Warn("XID event", "xid", xid, "uuid", uuid, "gpus", hit, "class", class.String())
}

// current is the device list from the last enumeration, with health as the
// XID history says at this moment.
func (b *Backend) current(sysfsIDs []string) []deviceplugins.Device {
	now := b.opts.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	devs := make([]deviceplugins.Device, 0, len(b.gpus))
	for id, g := range b.gpus {
		d := deviceplugins.Device{ID: id, Healthy: true, NUMANode: g.NUMANode}
		switch {
		case g.MIGEnabled:
			d.Healthy, d.Reason = false, "MIG mode enabled; MIG devices are not advertised yet"
		default:
			if r := b.health[id].reason(b.policy, now); r != "" {
				d.Healthy, d.Reason = false, r
			}
		}
		devs = append(devs, d)
	}
	for _, id := range sysfsIDs {
		if b.gpus[id] == nil {
			devs = append(devs, deviceplugins.Device{ID: id, NUMANode: sysfsNUMANode(b.opts.SysfsRoot, id),
				Reason: "GPU on the PCI bus but not visible to NVML"})
		}
	}
	return b.padExpected(devs, "GPU missing from the PCI bus")
}

// withoutNVML is the device list while NVML is down: every GPU in sysfs,
// unhealthy.
func (b *Backend) withoutNVML(sysfsIDs []string, reason string) []deviceplugins.Device {
	devs := make([]deviceplugins.Device, 0, len(sysfsIDs))
	for _, id := range sysfsIDs {
		devs = append(devs, deviceplugins.Device{ID: id, NUMANode: sysfsNUMANode(b.opts.SysfsRoot, id), Reason: reason})
	}
	return b.padExpected(devs, reason)
}

// padExpected adds unhealthy placeholders up to ExpectedGPUs, so that
// capacity shows what the instance should have while allocatable shows what
// works. Placeholder ids never collide with bus ids.
func (b *Backend) padExpected(devs []deviceplugins.Device, reason string) []deviceplugins.Device {
	slices.SortFunc(devs, func(x, y deviceplugins.Device) int { return strings.Compare(x.ID, y.ID) })
	for i := 0; len(devs) < b.opts.ExpectedGPUs; i++ {
		devs = append(devs, deviceplugins.Device{ID: fmt.Sprintf("missing-gpu-%d", i), NUMANode: -1, Reason: reason})
	}
	return devs
}

// checkCount reports GPUCountMismatch when fewer GPUs are usable than the
// instance type or sysfs promise.
func (b *Backend) checkCount(ctx context.Context, found int, sysfsIDs []string) {
	want := max(b.opts.ExpectedGPUs, len(sysfsIDs))
	if found >= want {
		return
	}
	b.opts.Reporter.Report(ctx, health.Signal{
		Source:    ResourceName,
		Condition: health.AcceleratedHardwareReady,
		Reason:    ReasonGPUCountMismatch,
		Severity:  health.Fatal,
		Message:   fmt.Sprintf("found %d NVIDIA GPUs, expected %d", found, want),
	})
}

// publish calls update when the device list changed since the last call.
func (b *Backend) publish(update func([]deviceplugins.Device), devs []deviceplugins.Device) {
	b.mu.Lock()
	same := b.devices != nil && slices.Equal(b.devices, devs)
	if !same {
		b.devices = devs
	}
	b.mu.Unlock()
	if same {
		return
	}
	for _, d := range devs {
		if !d.Healthy {
			b.log.Warn("GPU unhealthy", "gpu", d.ID, "reason", d.Reason)
		}
	}
	update(slices.Clone(devs))
}

// writeCDI runs the CDI generator; on failure Allocate answers without CDI
// names, since naming devices the runtime cannot resolve fails containers.
func (b *Backend) writeCDI(ctx context.Context, gpus []GPU) map[string]string {
	names, err := b.opts.GenerateCDI(ctx, gpus)
	if err != nil {
		b.log.Error("writing CDI spec failed; allocating device nodes only", "err", err)
		return nil
	}
	return names
}

func (c xidClass) String() string {
	switch c {
	case xidIgnored:
		return "ignored"
	case xidFatal:
		return "fatal"
	}
	return "transient"
}
