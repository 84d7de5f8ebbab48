package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Datapath is the loaded programs and the pinned maps of one node. Its methods are safe for concurrent use.
type Datapath struct {
	cfg  Config
	log  *slog.Logger
	objs policyObjects
	// mu serializes the changes to pods (Program, Remove, Reconcile, SetNodeAddresses) and guards the index.
	mu  sync.Mutex
	idx ruleIndex
	// reaper is the goroutine that deletes retired rules after an RCU grace period; Close waits for it.
	reaper sync.WaitGroup

	ctEntries      atomic.Int64 // conntrack entries at the last sweep
	eventsLost     atomic.Uint64
	ctSweptExpired atomic.Uint64
	ctKeptLive     atomic.Uint64
}

func (c *Config) setDefaults() {
	if c.PinRoot == "" {
		c.PinRoot = DefaultPinRoot
	}
	if c.ConntrackSize == 0 {
		c.ConntrackSize = DefaultConntrackSize
	}
	if c.EventsPerSecond == 0 {
		c.EventsPerSecond = DefaultEventsPerSecond
	}
	if c.EventBurst == 0 {
		c.EventBurst = DefaultEventBurst
	}
	if c.GCInterval == 0 {
		c.GCInterval = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	switch {
	case c.ConntrackSize < 1024 || c.ConntrackSize > 1<<24:
		return fmt.Errorf("conntrack size %d: want 1024 to %d", c.ConntrackSize, 1<<24)
	case c.EventsPerSecond < 0 || c.EventsPerSecond > 1_000_000:
		return fmt.Errorf("events per second %d: want 0 to 1000000", c.EventsPerSecond)
	case c.EventBurst < 1 || c.EventBurst > 1_000_000:
		return fmt.Errorf("event burst %d: want 1 to 1000000", c.EventBurst)
	case c.GCInterval < 0:
		return fmt.Errorf("conntrack GC interval %s is negative", c.GCInterval)
	case c.Attach < AttachAuto || c.Attach > AttachTC:
		return fmt.Errorf("attach mode %d is unknown", c.Attach)
	}
	return nil
}

// errReadOnly is returned by the methods that change state on a datapath opened with Config.ReadOnly.
var errReadOnly = errors.New("policy datapath opened read-only")

func (d *Datapath) mapsDir() string  { return filepath.Join(d.cfg.PinRoot, "maps") }
func (d *Datapath) linksDir() string { return filepath.Join(d.cfg.PinRoot, "links") }

// Open loads the programs. Maps already pinned under cfg.PinRoot are adopted with their contents, so the rules,
// tracked flows and pods of a previous run stay in force; links pinned there are switched to the new programs with
// an atomic link update, so no packet passes a veth unchecked. Programs attached through the clsact fallback are
// replaced in place the same way.
func Open(ctx context.Context, cfg Config) (*Datapath, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("policy datapath: %w", err)
	}
	d := &Datapath{cfg: cfg, log: cfg.Logger.With("pinroot", cfg.PinRoot), idx: ruleIndex{cur: map[verKey][]policyRuleKey{}, sig: map[uint32]uint64{}}}
	if cfg.ReadOnly {
		if _, err := os.Stat(filepath.Join(d.mapsDir(), "ap_pods")); err != nil {
			return nil, fmt.Errorf("policy datapath: nothing pinned at %s: %w", cfg.PinRoot, err)
		}
	}
	for _, dir := range []string{d.mapsDir(), d.linksDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("policy datapath: creating %s: %w", dir, err)
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(d.mapsDir(), &st); err != nil {
		return nil, fmt.Errorf("policy datapath: statfs %s: %w", d.mapsDir(), err)
	}
	if uint32(st.Type) != unix.BPF_FS_MAGIC {
		return nil, fmt.Errorf("policy datapath: pin root %s is not on a BPF filesystem", cfg.PinRoot)
	}

	spec, err := loadPolicy()
	if err != nil {
		return nil, fmt.Errorf("policy datapath: reading the embedded programs: %w", err)
	}
	spec.Maps["ap_ct"].MaxEntries = uint32(cfg.ConntrackSize)
	if cfg.ReadOnly { // whatever size the agent chose
		if m, err := ebpf.LoadPinnedMap(filepath.Join(d.mapsDir(), "ap_ct"), nil); err == nil {
			spec.Maps["ap_ct"].MaxEntries = m.MaxEntries()
			m.Close()
		}
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.mapsDir()}}
	if err := spec.LoadAndAssign(&d.objs, opts); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("policy datapath: the verifier rejected the programs: %+v", verr)
		}
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("policy datapath: a map pinned in %s does not match this agent's (a changed conntrack size? remove that pin to recreate it; its state is lost): %w", d.mapsDir(), err)
		}
		return nil, fmt.Errorf("policy datapath: loading programs with pins in %s: %w", d.mapsDir(), err)
	}
	cfgVal := policyConfig{Rate: uint32(cfg.EventsPerSecond), Burst: uint32(cfg.EventBurst)}
	if cfg.EmitAllows {
		cfgVal.EmitAllows = 1
	}
	if err := d.loadRuleKeys(); err != nil {
		d.objs.Close()
		return nil, fmt.Errorf("policy datapath: %w", err)
	}
	if cfg.ReadOnly {
		return d, nil
	}
	if err := d.objs.ApConfig.Put(uint32(0), cfgVal); err != nil {
		d.objs.Close()
		return nil, fmt.Errorf("policy datapath: writing map ap_config: %w", err)
	}
	if err := d.adopt(ctx); err != nil {
		d.objs.Close()
		return nil, err
	}
	d.mu.Lock()
	d.startReaper() // the previous run's retired rule versions
	d.mu.Unlock()
	return d, nil
}

// Close releases the agent's file descriptors. It unpins and detaches nothing: the programs keep enforcing the
// last rules until the next Open adopts them.
func (d *Datapath) Close() error {
	d.reaper.Wait()
	if err := d.objs.Close(); err != nil {
		return fmt.Errorf("policy datapath: closing objects: %w", err)
	}
	return nil
}
