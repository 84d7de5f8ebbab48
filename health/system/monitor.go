// Package system is the agent's system-resources monitor: every Interval it
// checks PID usage against the kernel's limit, conntrack table usage, free
// space and inodes and the read-only state of the filesystems the node
// writes to, and clock synchronisation, and reports each problem as a
// health.Signal with Source "system".
//
// Checks are probes: a failing check is reported on every round it fails,
// and a check that passes again after failing reports the same reason with
// Cleared set. Usage checks have two thresholds, so that a value hovering at
// the limit does not flap: they fail above Fail and clear below Clear.
// /proc is a parameter, and statfs and adjtimex are replaceable, so tests
// run every check against fake trees.
package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/health"
)

// SignalSource is the Source of every signal this monitor reports.
const SignalSource = "system"

// ReasonCheckDisabled (Info) says a check cannot run on this node, e.g. the
// conntrack check where nf_conntrack is not loaded. health/reasons.go does
// not list it, so the reporter treats it as an unknown reason.
const ReasonCheckDisabled = "SystemCheckDisabled"

// Threshold is a usage ratio (0..1) pair: a check fails when usage exceeds
// Fail and, once failing, clears only when usage falls below Clear.
type Threshold struct {
	Fail, Clear float64
}

// Timex reads the kernel's clock state. unix.Adjtimex with Modes 0 only
// reads; tests fake it.
type Timex interface {
	Adjtimex(buf *unix.Timex) (state int, err error)
}

type realTimex struct{}

func (realTimex) Adjtimex(buf *unix.Timex) (int, error) { return unix.Adjtimex(buf) }

// Options configures a Monitor. Zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// Reporter receives the signals. Required.
	Reporter health.Reporter
	// Registerer receives the monitor's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Interval is the time between rounds of checks. Default is 30s.
	Interval time.Duration
	// ProcRoot is where procfs is mounted. Default is /proc.
	ProcRoot string
	// PIDs is the threshold on threads in use (the 4th field of loadavg)
	// over min(pid_max, threads-max). Default is {0.95, 0.90}.
	PIDs Threshold
	// Conntrack is the threshold on nf_conntrack_count over
	// nf_conntrack_max. Default is {0.90, 0.85}.
	Conntrack Threshold
	// Paths are the filesystems the node writes to, named by any path on
	// them; each is checked for space, inodes and being read-only. Default
	// is /, /var/lib/kubelet and /var/lib/containerd. A path that does not
	// exist is skipped (logged once).
	Paths []string
	// Disk is the threshold on used bytes over total bytes. Default is
	// {0.90, 0.85}.
	Disk Threshold
	// Inodes is the threshold on used inodes over total inodes. Default is
	// {0.95, 0.90}.
	Inodes Threshold
	// MaxClockError is the largest clock error bound (adjtimex maxerror)
	// that counts as synchronised. Default is 1s.
	MaxClockError time.Duration
	// Statfs reads a filesystem's usage. Default is unix.Statfs.
	Statfs func(path string, st *unix.Statfs_t) error
	// Timex reads the clock state. Default is adjtimex(2).
	Timex Timex
}

// Monitor is the system-resources monitor subsystem.
type Monitor struct {
	opts  Options
	log   *slog.Logger
	ready atomic.Bool

	// Only Check touches these; Run calls it from one goroutine.
	failing  map[string]bool // key: reason + " " + object
	disabled map[string]bool // check name → disabled (already reported)
	missing  map[string]bool // configured paths found absent (logged once)

	failingGauge *prometheus.GaugeVec
	checkErrors  *prometheus.CounterVec
}

// New builds a Monitor and registers its metrics.
func New(opts Options) (*Monitor, error) {
	if opts.Reporter == nil {
		return nil, errors.New("system monitor: no Reporter")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Interval <= 0 {
		opts.Interval = 30 * time.Second
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.PIDs == (Threshold{}) {
		opts.PIDs = Threshold{Fail: 0.95, Clear: 0.90}
	}
	if opts.Conntrack == (Threshold{}) {
		opts.Conntrack = Threshold{Fail: 0.90, Clear: 0.85}
	}
	if opts.Disk == (Threshold{}) {
		opts.Disk = Threshold{Fail: 0.90, Clear: 0.85}
	}
	if opts.Inodes == (Threshold{}) {
		opts.Inodes = Threshold{Fail: 0.95, Clear: 0.90}
	}
	for name, th := range map[string]Threshold{"PIDs": opts.PIDs, "Conntrack": opts.Conntrack, "Disk": opts.Disk, "Inodes": opts.Inodes} {
		if th.Fail <= 0 || th.Fail > 1 || th.Clear <= 0 || th.Clear > th.Fail {
			return nil, fmt.Errorf("system monitor: %s threshold %+v: want 0 < Clear <= Fail <= 1", name, th)
		}
	}
	if opts.Paths == nil {
		opts.Paths = []string{"/", "/var/lib/kubelet", "/var/lib/containerd"}
	}
	if opts.MaxClockError <= 0 {
		opts.MaxClockError = time.Second
	}
	if opts.Statfs == nil {
		opts.Statfs = unix.Statfs
	}
	if opts.Timex == nil {
		opts.Timex = realTimex{}
	}
	m := &Monitor{
		opts: opts, log: opts.Logger.With("subsystem", "system-monitor"),
		failing: map[string]bool{}, disabled: map[string]bool{}, missing: map[string]bool{},
	}
	m.failingGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "autonode_system_check_failing",
		Help: "Whether a system check is failing (1) or not (0), by reason and object.",
	}, []string{"reason", "object"})
	m.checkErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "autonode_system_check_errors_total",
		Help: "System checks that could not run, by check.",
	}, []string{"check"})
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{m.failingGauge, m.checkErrors} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering system monitor metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Name implements subsystem.Subsystem.
func (m *Monitor) Name() string { return "system-monitor" }

// Ready reports nil once the first round of checks has run.
func (m *Monitor) Ready() error {
	if !m.ready.Load() {
		return errors.New("system checks have not run yet")
	}
	return nil
}

// Run checks every Interval until ctx ends. A check that cannot run is
// logged and counted; it does not stop the others or the monitor.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		if err := m.Check(ctx); err != nil {
			m.log.Error("system checks could not all run", "err", err)
		}
		m.ready.Store(true)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// verdict is what one observation says about a problem.
type verdict int

const (
	pass verdict = iota // below the clear threshold, or healthy
	hold                // between the thresholds: keep the previous state
	fail                // over the fail threshold, or broken
)

// finding is one check's observation of one object.
type finding struct {
	reason    string
	condition health.Condition
	severity  health.Severity
	object    string // what was checked: a path, "pid", "conntrack", "clock"
	verdict   verdict
	message   string // why it fails, or the reading when it passes
}

// errDisabled marks a check that cannot run on this node at all.
var errDisabled = errors.New("check disabled")

// Check runs every check once and reports what changed. It returns the
// errors of checks that could not run; disabled checks are not errors.
func (m *Monitor) Check(ctx context.Context) error {
	checks := []struct {
		name string
		run  func() ([]finding, error)
	}{
		{"pid", m.checkPIDs},
		{"conntrack", m.checkConntrack},
		{"filesystems", m.checkFilesystems},
		{"clock", m.checkClock},
	}
	var errs []error
	for _, c := range checks {
		fs, err := c.run()
		for _, f := range fs {
			m.apply(ctx, f)
		}
		switch {
		case errors.Is(err, errDisabled):
			if !m.disabled[c.name] {
				m.disabled[c.name] = true
				m.log.Info("system check disabled", "check", c.name, "err", err)
				m.opts.Reporter.Report(ctx, health.Signal{
					Source: SignalSource, Condition: conditionOf(c.name), Reason: ReasonCheckDisabled,
					Severity: health.Info, Message: fmt.Sprintf("system check %s is disabled: %v", c.name, err),
				})
			}
		case err != nil:
			m.checkErrors.WithLabelValues(c.name).Inc()
			errs = append(errs, fmt.Errorf("system check %s: %w", c.name, err))
		default:
			if m.disabled[c.name] {
				m.disabled[c.name] = false
				m.log.Info("system check enabled again", "check", c.name)
			}
		}
	}
	return errors.Join(errs...)
}

func conditionOf(check string) health.Condition {
	switch check {
	case "conntrack":
		return health.NetworkingReady
	case "filesystems":
		return health.StorageReady
	}
	return health.KernelReady
}

// apply turns a finding into a report: every failing round is reported (so
// that a restarted reporter learns of it again), and a pass after a failure
// is reported as Cleared.
func (m *Monitor) apply(ctx context.Context, f finding) {
	key := f.reason + " " + f.object
	was := m.failing[key]
	now := f.verdict == fail || (f.verdict == hold && was)
	m.failing[key] = now
	g := 0.0
	if now {
		g = 1
	}
	m.failingGauge.WithLabelValues(f.reason, f.object).Set(g)
	switch {
	case now:
		if !was {
			m.log.Warn("system check failing", "reason", f.reason, "object", f.object, "message", f.message)
		}
		m.opts.Reporter.Report(ctx, health.Signal{
			Source: SignalSource, Condition: f.condition, Reason: f.reason, Severity: f.severity, Message: f.message,
		})
	case was:
		m.log.Info("system check passing again", "reason", f.reason, "object", f.object, "message", f.message)
		m.opts.Reporter.Report(ctx, health.Signal{
			Source: SignalSource, Condition: f.condition, Reason: f.reason, Severity: f.severity,
			Message: f.message, Cleared: true,
		})
	}
}

// judge places ratio against th.
func judge(ratio float64, th Threshold) verdict {
	switch {
	case ratio > th.Fail:
		return fail
	case ratio < th.Clear:
		return pass
	}
	return hold
}
