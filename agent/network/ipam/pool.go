package ipam

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/autonode/autonode/agent/backoff"
	"github.com/autonode/autonode/agent/nodeconfig"
	"github.com/autonode/autonode/health"
)

// prefixSize is how many addresses a delegated /28 holds; all are usable.
const prefixSize = 16

// Errors Allocate returns that callers branch on.
var (
	// ErrPoolGrowing means no address is free right now but the pool is
	// obtaining more from EC2: retry shortly.
	ErrPoolGrowing = errors.New("no free address yet; the pool is growing, retry")
	// ErrExhausted means no address can be had: the instance's ENI and
	// address limits are reached or the subnets are full.
	ErrExhausted = errors.New("pod addresses exhausted")
	// ErrNotReady means the pool has not read its ENIs and checkpoint yet.
	ErrNotReady = errors.New("ipam pool not started")
)

// Sandboxes reports the pod sandboxes the container runtime runs now, by
// container id. The pool releases the addresses of sandboxes that are gone.
type Sandboxes interface {
	Live(ctx context.Context) (map[string]bool, error)
}

// SandboxAddresses may also be implemented by a Sandboxes: the address the
// runtime recorded for each live attachment. Only a pool whose checkpoint was
// lost uses it, to give live pods back their own addresses; without it such a
// pool withholds every address it found until the sandboxes that were live
// then are gone.
type SandboxAddresses interface {
	Addresses(ctx context.Context) (map[Key]netip.Addr, error)
}

// Targets are the warm-pool settings, with the VPC CNI's names and meaning
// (see docs/ipam.md). WarmIP and MinimumIP, when either is set, override
// WarmENI and WarmPrefix.
type Targets struct {
	// WarmENI keeps this many ENIs' worth of free addresses (secondary-IP mode).
	WarmENI int
	// WarmIP keeps this many free addresses.
	WarmIP int
	// MinimumIP keeps at least this many addresses in total.
	MinimumIP int
	// WarmPrefix keeps this many wholly free /28 prefixes (prefix mode).
	WarmPrefix int
}

// DefaultTargets are the VPC CNI's defaults: one warm ENI, one warm prefix.
func DefaultTargets() Targets { return Targets{WarmENI: 1, WarmPrefix: 1} }

// Config configures a Pool. EC2, IMDS and CheckpointPath are required.
type Config struct {
	EC2  EC2API
	IMDS MetadataAPI
	// Sandboxes lists live sandboxes; nil skips reconciliation against the
	// runtime (every allocation is kept until released).
	Sandboxes Sandboxes

	// InstanceID and InstanceType default to what IMDS says. Limits default
	// to EC2 DescribeInstanceTypes for the instance type.
	InstanceID   string
	InstanceType string
	Limits       nodeconfig.InstanceLimits

	// Cluster, when set, is tagged on new ENIs as autonode.dev/cluster.
	Cluster string
	// Subnets receive new ENIs, tried in order. Default is the primary ENI's
	// subnet. SecurityGroups default to the primary ENI's groups.
	Subnets        []string
	SecurityGroups []string

	// PrefixDelegation hands out addresses from /28 prefixes instead of
	// single secondary addresses.
	PrefixDelegation bool
	// Targets default to DefaultTargets() when nil.
	Targets *Targets

	// Cooldown keeps a released address from being handed out again, so
	// that stale conntrack and ARP entries of the old pod die first.
	// Default 30s.
	Cooldown time.Duration
	// ReconcileInterval is how often the pool checks its targets and the
	// live sandboxes. Default 10s.
	ReconcileInterval time.Duration
	// ResyncInterval is how often the pool re-reads EC2's view of its ENIs
	// and sweeps leaked ENIs. Default 5m.
	ResyncInterval time.Duration
	// ShrinkDelay is how long excess must last before the pool gives
	// addresses back, so that churn does not flap EC2 calls. Default 1m.
	ShrinkDelay time.Duration
	// PrefixRetry is how long a subnet where prefixes failed gets secondary
	// addresses before prefixes are tried again. Default 5m.
	PrefixRetry time.Duration
	// DetachTimeout bounds the wait for a detached ENI to become available;
	// DetachPollInitial and DetachPollMax shape the polling. Defaults 2m,
	// 500ms and 10s.
	DetachTimeout, DetachPollInitial, DetachPollMax time.Duration
	// InitialBackoff and MaxBackoff shape the retries of a failing
	// reconcile pass. Defaults 1s and 2m.
	InitialBackoff, MaxBackoff time.Duration

	// CheckpointPath is where allocations are recorded.
	CheckpointPath string

	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Health     health.Reporter
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// eniState is one ENI the pool draws on.
type eniState struct {
	id, mac, subnetID, attachmentID string
	device                          int
	cidr                            netip.Prefix
	primaryIP                       netip.Addr
	primary                         bool // device 0: its addresses only, never the ENI
	ips                             []netip.Addr
	prefixes                        []netip.Prefix
	dotPending                      bool
}

func (e *eniState) routeTable() int {
	if e.primary {
		return 0
	}
	return e.device + 1
}

// slot is one address the pool may hand out.
type slot struct {
	addr      netip.Addr
	eni       *eniState
	prefix    netip.Prefix // valid when the address comes from a prefix
	alloc     *Allocation  // nil while free
	created   time.Time    // when alloc was made
	coolUntil time.Time
	held      bool // owner unknown after a lost checkpoint
}

func (s *slot) available(now time.Time) bool {
	return s.alloc == nil && !s.held && !now.Before(s.coolUntil)
}

// Pool hands out pod addresses from the node's ENIs. It is a Subsystem: Run
// discovers the ENIs, loads the checkpoint and keeps the pool at its targets.
// Allocate, Release, Get, List and CanAllocate are safe for concurrent use.
type Pool struct {
	cfg     Config
	targets Targets
	log     *slog.Logger
	metrics *metrics

	// Set by start.
	instanceID string
	limits     nodeconfig.InstanceLimits
	groups     []string
	subnets    []string

	recMu sync.Mutex // one reconcile pass at a time: EC2 changes happen only there

	mu          sync.Mutex
	started     bool
	startErr    error
	enis        map[string]*eniState
	otherDevs   []int // device indexes on card 0 of ENIs that are not ours
	slots       map[netip.Addr]*slot
	order       []*slot // slots by device then address: Allocate's scan order
	byKey       map[Key]*slot
	cidrs       map[string]netip.Prefix
	fallback    map[string]time.Time // subnet -> when prefixes last failed there
	exhausted   bool
	excessSince time.Time
	holdPending bool            // the checkpoint was lost: addresses are held until the runtime is asked
	holdFor     map[string]bool // sandboxes live when the checkpoint was lost
	lastResync  time.Time
	needResync  bool
	kick        chan struct{}
}

// New checks cfg and returns a pool; it does no I/O. Run starts it.
func New(cfg Config) (*Pool, error) {
	if cfg.EC2 == nil || cfg.IMDS == nil {
		return nil, errors.New("ipam: EC2 and IMDS clients are required")
	}
	if cfg.CheckpointPath == "" {
		return nil, errors.New("ipam: a checkpoint path is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Cooldown, 30*time.Second)
	def(&cfg.ReconcileInterval, 10*time.Second)
	def(&cfg.ResyncInterval, 5*time.Minute)
	def(&cfg.ShrinkDelay, time.Minute)
	def(&cfg.PrefixRetry, 5*time.Minute)
	def(&cfg.DetachTimeout, 2*time.Minute)
	def(&cfg.DetachPollInitial, 500*time.Millisecond)
	def(&cfg.DetachPollMax, 10*time.Second)
	def(&cfg.InitialBackoff, time.Second)
	def(&cfg.MaxBackoff, 2*time.Minute)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := DefaultTargets()
	if cfg.Targets != nil {
		t = *cfg.Targets
	}
	if t.WarmENI < 0 || t.WarmIP < 0 || t.MinimumIP < 0 || t.WarmPrefix < 0 {
		return nil, fmt.Errorf("ipam: negative warm target in %+v", t)
	}
	p := &Pool{
		cfg: cfg, targets: t, log: cfg.Logger,
		enis: map[string]*eniState{}, slots: map[netip.Addr]*slot{}, byKey: map[Key]*slot{},
		cidrs: map[string]netip.Prefix{}, fallback: map[string]time.Time{}, kick: make(chan struct{}, 1),
	}
	p.metrics = newMetrics(p)
	if cfg.Registerer != nil {
		if err := p.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("ipam: registering metrics: %w", err)
		}
	}
	return p, nil
}

// Name implements subsystem.Subsystem.
func (p *Pool) Name() string { return "ipam" }

// Ready implements subsystem.Subsystem: nil once the pool knows its ENIs and
// allocations.
func (p *Pool) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		if p.startErr != nil {
			return fmt.Errorf("%w: %v", ErrNotReady, p.startErr)
		}
		return ErrNotReady
	}
	return nil
}

// Run starts the pool, retrying with backoff until it can, then reconciles
// every ReconcileInterval, or sooner when Allocate finds the pool short,
// until ctx ends. A failing pass is retried with backoff; Run itself does not
// fail for cloud errors.
func (p *Pool) Run(ctx context.Context) error {
	delays := backoff.New(p.cfg.InitialBackoff, p.cfg.MaxBackoff)
	for {
		err := p.start(ctx)
		if err == nil {
			break
		}
		p.mu.Lock()
		p.startErr = err
		p.mu.Unlock()
		d := delays.Step()
		p.log.Warn("ipam could not start; retrying", "err", err, "backoff", d)
		if backoff.Sleep(ctx, d) != nil {
			return nil
		}
	}
	delays = backoff.New(p.cfg.InitialBackoff, p.cfg.MaxBackoff)
	tick := time.NewTicker(p.cfg.ReconcileInterval)
	defer tick.Stop()
	for {
		if err := p.reconcile(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d := delays.Step()
			p.log.Warn("ipam reconcile failed; retrying", "err", err, "backoff", d)
			if backoff.Sleep(ctx, d) != nil {
				return nil
			}
			continue
		}
		delays = backoff.New(p.cfg.InitialBackoff, p.cfg.MaxBackoff)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-p.kick:
		}
	}
}

// wake asks Run for a reconcile pass soon.
func (p *Pool) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Allocate gives key an address, the same one again for a key that has one.
// It returns ErrPoolGrowing (retry) when none is free yet and ErrExhausted
// when none can be had.
func (p *Pool) Allocate(ctx context.Context, key Key, meta PodMeta) (Allocation, error) {
	_ = ctx
	if key.ContainerID == "" || key.IfName == "" {
		return Allocation{}, fmt.Errorf("allocating for %+v: container id and interface name are required", key)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		return Allocation{}, fmt.Errorf("allocating for %s/%s: %w", key.ContainerID, key.IfName, ErrNotReady)
	}
	if s := p.byKey[key]; s != nil {
		return *s.alloc, nil
	}
	now := p.cfg.Now()
	var s *slot
	for _, c := range p.order {
		if c.available(now) {
			s = c
			break
		}
	}
	if s == nil {
		p.wake()
		if p.exhausted {
			return Allocation{}, fmt.Errorf("allocating for %s/%s: %w", key.ContainerID, key.IfName, ErrExhausted)
		}
		return Allocation{}, fmt.Errorf("allocating for %s/%s: %w", key.ContainerID, key.IfName, ErrPoolGrowing)
	}
	e := s.eni
	a := Allocation{
		Key: key, Pod: meta, Addr: s.addr, ENI: e.id, DeviceIndex: e.device, MAC: e.mac,
		RouteTable: e.routeTable(), SubnetCIDR: e.cidr,
	}
	s.alloc, s.created = &a, now
	p.byKey[key] = s
	if err := p.saveLocked(); err != nil {
		s.alloc = nil
		delete(p.byKey, key)
		return Allocation{}, fmt.Errorf("allocating for %s/%s: %w", key.ContainerID, key.IfName, err)
	}
	p.wake() // top the warm pool up again
	return a, nil
}

// Release frees key's address; it is handed out again only after the
// cooldown. Unknown keys are fine.
func (p *Pool) Release(ctx context.Context, key Key) error {
	_ = ctx
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.byKey[key]
	if s == nil {
		return nil
	}
	old, oldCool := s.alloc, s.coolUntil
	p.freeLocked(s)
	if err := p.saveLocked(); err != nil {
		s.alloc, s.coolUntil = old, oldCool
		p.byKey[key] = s
		return fmt.Errorf("releasing %s/%s: %w", key.ContainerID, key.IfName, err)
	}
	return nil
}

func (p *Pool) freeLocked(s *slot) {
	delete(p.byKey, s.alloc.Key)
	s.alloc = nil
	s.coolUntil = p.cfg.Now().Add(p.cfg.Cooldown)
}

// Get returns key's allocation, if it has one.
func (p *Pool) Get(key Key) (Allocation, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.byKey[key]; s != nil {
		return *s.alloc, true
	}
	return Allocation{}, false
}

// List returns every allocation, ordered by address.
func (p *Pool) List() []Allocation {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Allocation, 0, len(p.byKey))
	for _, s := range p.byKey {
		out = append(out, *s.alloc)
	}
	slices.SortFunc(out, func(a, b Allocation) int { return a.Addr.Compare(b.Addr) })
	return out
}

// CanAllocate returns nil while an address can be handed out now, after its
// cooldown, or obtained from EC2, for CNI STATUS.
func (p *Pool) CanAllocate() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		return ErrNotReady
	}
	if !p.exhausted {
		return nil
	}
	for _, s := range p.order {
		if s.alloc == nil && !s.held {
			return nil
		}
	}
	return ErrExhausted
}

// addSlotsLocked adds addresses of e to the pool as free.
func (p *Pool) addSlotsLocked(e *eniState, addrs []netip.Addr, pfxs []netip.Prefix) {
	add := func(a netip.Addr, pfx netip.Prefix) {
		if _, ok := p.slots[a]; ok || a == e.primaryIP {
			return
		}
		p.slots[a] = &slot{addr: a, eni: e, prefix: pfx}
	}
	for _, a := range addrs {
		if !slices.Contains(e.ips, a) {
			e.ips = append(e.ips, a)
		}
		add(a, netip.Prefix{})
	}
	for _, q := range pfxs {
		if !slices.Contains(e.prefixes, q) {
			e.prefixes = append(e.prefixes, q)
		}
		for a := q.Masked().Addr(); q.Contains(a); a = a.Next() {
			add(a, q)
		}
	}
	p.reorderLocked()
}

// dropSlotsLocked removes addresses of e from the pool. An allocation on one
// is dropped with a log line: EC2 no longer has its address.
func (p *Pool) dropSlotsLocked(e *eniState, addrs []netip.Addr, pfxs []netip.Prefix) {
	drop := func(a netip.Addr) {
		s, ok := p.slots[a]
		if !ok || s.eni != e {
			return
		}
		if s.alloc != nil {
			p.log.Warn("dropping allocation: EC2 no longer assigns its address", "key", s.alloc.Key, "addr", a, "eni", e.id)
			delete(p.byKey, s.alloc.Key)
		}
		delete(p.slots, a)
	}
	for _, a := range addrs {
		drop(a)
	}
	e.ips = slices.DeleteFunc(e.ips, func(a netip.Addr) bool { return slices.Contains(addrs, a) })
	for _, q := range pfxs {
		for a := q.Masked().Addr(); q.Contains(a); a = a.Next() {
			drop(a)
		}
	}
	e.prefixes = slices.DeleteFunc(e.prefixes, func(q netip.Prefix) bool { return slices.Contains(pfxs, q) })
	p.reorderLocked()
}

func (p *Pool) reorderLocked() {
	p.order = p.order[:0]
	for _, s := range p.slots {
		p.order = append(p.order, s)
	}
	// Lowest device first keeps high ENIs empty, so they can be released;
	// address order fills one prefix before the next.
	slices.SortFunc(p.order, func(a, b *slot) int {
		return cmp.Or(cmp.Compare(a.eni.device, b.eni.device), a.addr.Compare(b.addr))
	})
}

// report sends a health signal, if a reporter is configured.
func (p *Pool) report(ctx context.Context, reason, msg string, cleared bool) {
	if p.cfg.Health == nil {
		return
	}
	p.cfg.Health.Report(ctx, health.Signal{
		Source: "ipam", Condition: health.NetworkingReady, Reason: reason, Severity: health.Warning,
		Message: msg, Cleared: cleared,
	})
}
