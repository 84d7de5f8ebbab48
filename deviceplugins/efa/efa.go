// Package efa is the device-plugin backend for Elastic Fabric Adapters: it
// advertises each EFA device as one vpc.amazonaws.com/efa, hands containers
// its verbs device node, and marks devices unhealthy while their hardware
// error counters climb too fast.
//
// Sysfs layout read (Linux RDMA core and the efa driver), root configurable,
// default /sys:
//
//	class/infiniband/<ibdev>                       symlink into the PCI device, e.g. rdmap16s27
//	├── device -> ../../../0000:10:1b.0            the PCI function; its base name is the device id
//	│   ├── driver -> .../bus/pci/drivers/efa      only devices bound to "efa" are served
//	│   ├── numa_node                              "-1" when unknown
//	│   └── infiniband_verbs/uverbsN/ibdev         N names /dev/infiniband/uverbsN; ibdev is <ibdev>
//	├── hw_counters/                               device counters: cmds_err, no_completion_cmds, ...
//	└── ports/1/
//	    ├── state                                  "4: ACTIVE"
//	    └── hw_counters/                           port counters: rx_drops, retrans_timeout_events, ...
//
// Device ids are PCI addresses, which survive driver reloads and renames.
//
// Health: every poll reads the counters named in Options.Thresholds, from
// ports/1/hw_counters or else hw_counters, and a counter that rose by more
// than its threshold since the last poll marks the device unhealthy, as does
// a port that is not ACTIVE. A device recovers after QuietPeriod of polls
// with no such finding. Counters that a device lacks (older kernels have no
// retrans_* counters) are skipped.
package efa

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/autonode/autonode/deviceplugins"
)

// ResourceName is the extended resource served.
const ResourceName = "vpc.amazonaws.com/efa"

// DefaultThresholds are the counters watched when Options.Thresholds is nil,
// with the largest rise per poll that is still healthy. Traffic counters
// (tx_bytes, rdma_read_resp_bytes, ...) are not errors. Left out on purpose:
// rdma_{read,write}_wr_err and cmds_err, which a misbehaving application
// raises, and unresponsive_remote_events and impaired_remote_conn_events,
// which blame a peer, not this device.
func DefaultThresholds() map[string]uint64 {
	return map[string]uint64{
		// Admin commands the device never completed: the device is stuck.
		"no_completion_cmds": 0,
		// Retransmissions that timed out: the path out of this device fails.
		"retrans_timeout_events": 100,
		// Received packets dropped; some drops under incast are normal.
		"rx_drops": 10000,
	}
}

// Options configures a Backend. Zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// SysfsRoot is where sysfs is mounted. Default is /sys.
	SysfsRoot string
	// DevRoot is the host folder holding infiniband/uverbsN. Default is
	// /dev. Containers always see /dev/infiniband/uverbsN.
	DevRoot string
	// PollInterval is how often devices and counters are re-read. Default
	// is 10s.
	PollInterval time.Duration
	// Thresholds maps a hw_counters name to the largest rise per poll that
	// is still healthy; 0 means any rise is an error. Nil means
	// DefaultThresholds(); an empty map watches no counters.
	Thresholds map[string]uint64
	// QuietPeriod is how long an unhealthy device must go without a finding
	// before it is healthy again, counted in polls (rounded up). Default is
	// 5m.
	QuietPeriod time.Duration
}

// Backend serves vpc.amazonaws.com/efa. It implements deviceplugins.Backend.
type Backend struct {
	log        *slog.Logger
	opts       Options
	quietPolls int

	mu sync.RWMutex
	// uverbs maps device id to uverbsN; written by Run, read by Allocate.
	uverbs map[string]string
}

var _ deviceplugins.Backend = (*Backend)(nil)

// New fills in the defaults of opts.
func New(opts Options) *Backend {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SysfsRoot == "" {
		opts.SysfsRoot = "/sys"
	}
	if opts.DevRoot == "" {
		opts.DevRoot = "/dev"
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 10 * time.Second
	}
	if opts.Thresholds == nil {
		opts.Thresholds = DefaultThresholds()
	}
	if opts.QuietPeriod <= 0 {
		opts.QuietPeriod = 5 * time.Minute
	}
	quiet := int((opts.QuietPeriod + opts.PollInterval - 1) / opts.PollInterval)
	return &Backend{
		log:        opts.Logger.With("resource", ResourceName),
		opts:       opts,
		quietPolls: max(quiet, 1),
	}
}

// ResourceName is vpc.amazonaws.com/efa.
func (b *Backend) ResourceName() string { return ResourceName }

// efaDevice is one EFA device as read in one poll.
type efaDevice struct {
	id       string // PCI address
	ibdev    string
	uverbs   string
	numa     int
	counters map[string]uint64
	// problem is a finding from this poll alone (port down, unreadable).
	problem string
}

// state is what Run remembers of a device between polls.
type state struct {
	last map[string]uint64
	// quiet counts polls since the last finding; the device is healthy
	// while quiet >= quietPolls.
	quiet  int
	reason string
}

// Run discovers the devices, reports them, and polls sysfs until ctx ends.
// It fails only when the first scan fails.
func (b *Backend) Run(ctx context.Context, update func([]deviceplugins.Device)) error {
	devices, err := b.scan()
	if err != nil {
		return err
	}
	states := map[string]*state{}
	last := b.judge(devices, states)
	update(last)
	b.log.Info("efa devices discovered", "devices", len(last))

	t := time.NewTicker(b.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		devices, err := b.scan()
		if err != nil {
			// Keep the last list, all unhealthy, until sysfs reads again.
			b.log.Warn("scanning efa devices", "err", err)
			cur := slices.Clone(last)
			for i := range cur {
				cur[i].Healthy, cur[i].Reason = false, err.Error()
			}
			if !slices.Equal(cur, last) {
				last = cur
				update(cur)
			}
			continue
		}
		cur := b.judge(devices, states)
		if !slices.Equal(cur, last) {
			for _, d := range cur {
				if !d.Healthy {
					b.log.Warn("efa device unhealthy", "device", d.ID, "reason", d.Reason)
				}
			}
			last = cur
			update(cur)
		}
	}
}

// judge turns one poll into the device list, comparing counters with the
// previous poll in states. A device seen for the first time sets its
// baseline and starts healthy, unless this poll already shows a problem.
func (b *Backend) judge(devices []efaDevice, states map[string]*state) []deviceplugins.Device {
	out := make([]deviceplugins.Device, 0, len(devices))
	seen := map[string]bool{}
	uverbs := map[string]string{}
	for _, d := range devices {
		seen[d.id] = true
		uverbs[d.id] = d.uverbs
		st, ok := states[d.id]
		if !ok {
			st = &state{quiet: b.quietPolls}
			states[d.id] = st
		}
		finding := d.problem
		if finding == "" && st.last != nil {
			for _, name := range slices.Sorted(maps.Keys(d.counters)) {
				prev, had := st.last[name]
				v := d.counters[name]
				// A counter that went down was reset; it starts over.
				if !had || v < prev {
					continue
				}
				if limit := b.opts.Thresholds[name]; v-prev > limit {
					finding = fmt.Sprintf("%s rose by %d in one poll (limit %d)", name, v-prev, limit)
					break
				}
			}
		}
		st.last = d.counters
		if finding != "" {
			st.quiet, st.reason = 0, finding
		} else if st.quiet < b.quietPolls {
			st.quiet++
		}
		dev := deviceplugins.Device{ID: d.id, Healthy: true, NUMANode: d.numa}
		if st.quiet < b.quietPolls {
			dev.Healthy, dev.Reason = false, st.reason
		}
		out = append(out, dev)
	}
	for id := range states {
		if !seen[id] {
			delete(states, id)
		}
	}
	b.mu.Lock()
	b.uverbs = uverbs
	b.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// scan lists the EFA devices under class/infiniband with their counters.
func (b *Backend) scan() ([]efaDevice, error) {
	dir := filepath.Join(b.opts.SysfsRoot, "class", "infiniband")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		// No RDMA device at all (ib_core not loaded): nothing to serve.
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing rdma devices in %s: %w", dir, err)
	}
	var out []efaDevice
	for _, e := range entries {
		d, ok, err := b.readDevice(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, d)
		}
	}
	return out, nil
}

// readDevice reads one class/infiniband entry; ok is false for devices of
// other drivers (mlx5, rxe, ...).
func (b *Backend) readDevice(path string) (efaDevice, bool, error) {
	d := efaDevice{ibdev: filepath.Base(path), numa: -1}
	drv, err := os.Readlink(filepath.Join(path, "device", "driver"))
	if errors.Is(err, fs.ErrNotExist) {
		return d, false, nil // unbound from its driver
	}
	if err != nil {
		return d, false, fmt.Errorf("reading the driver of rdma device %s: %w", path, err)
	}
	if filepath.Base(drv) != "efa" {
		return d, false, nil
	}
	pci, err := filepath.EvalSymlinks(filepath.Join(path, "device"))
	if err != nil {
		return d, false, fmt.Errorf("resolving the PCI device of %s: %w", path, err)
	}
	d.id = filepath.Base(pci)
	if d.uverbs, err = findUverbs(filepath.Join(path, "device", "infiniband_verbs"), d.ibdev); err != nil {
		return d, false, err
	}
	if n, err := readUint(filepath.Join(path, "device", "numa_node")); err == nil {
		d.numa = int(n)
	}
	// numa_node reads "-1" when unknown, which readUint rejects: d.numa
	// stays -1 then.
	if st, err := os.ReadFile(filepath.Join(path, "ports", "1", "state")); err == nil {
		if s := strings.TrimSpace(string(st)); !strings.HasSuffix(s, "ACTIVE") {
			d.problem = fmt.Sprintf("port 1 is %q", s)
		}
	}
	d.counters = map[string]uint64{}
	for name := range b.opts.Thresholds {
		for _, p := range []string{
			filepath.Join(path, "ports", "1", "hw_counters", name),
			filepath.Join(path, "hw_counters", name),
		} {
			v, err := readUint(p)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				d.problem = err.Error()
			} else {
				d.counters[name] = v
			}
			break
		}
	}
	return d, true, nil
}

// findUverbs finds the uverbsN of ibdev in a PCI device's infiniband_verbs
// folder, by its ibdev file when there is one.
func findUverbs(dir, ibdev string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("finding the verbs device of %s: %w", ibdev, err)
	}
	var candidates []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "uverbs") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "ibdev"))
		if err == nil && strings.TrimSpace(string(b)) == ibdev {
			return e.Name(), nil
		}
		if err != nil {
			candidates = append(candidates, e.Name())
		}
	}
	if len(candidates) == 1 {
		return candidates[0], nil
	}
	return "", fmt.Errorf("finding the verbs device of %s in %s: %d candidates", ibdev, dir, len(candidates))
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", path, err)
	}
	return v, nil
}

// Allocate returns the verbs device node of each id.
func (b *Backend) Allocate(_ context.Context, ids []string) (*pluginapi.ContainerAllocateResponse, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	resp := &pluginapi.ContainerAllocateResponse{}
	for _, id := range ids {
		uv, ok := b.uverbs[id]
		if !ok {
			return nil, fmt.Errorf("allocating %s: unknown efa device", id)
		}
		resp.Devices = append(resp.Devices, &pluginapi.DeviceSpec{
			ContainerPath: "/dev/infiniband/" + uv,
			HostPath:      filepath.Join(b.opts.DevRoot, "infiniband", uv),
			Permissions:   "rw",
		})
	}
	return resp, nil
}

// Present reports whether any RDMA device under the sysfs root is bound to
// the efa driver, which decides whether the agent serves EFA at all.
func Present(sysfsRoot string) (bool, error) {
	devices, err := New(Options{SysfsRoot: sysfsRoot}).scan()
	return len(devices) > 0, err
}
