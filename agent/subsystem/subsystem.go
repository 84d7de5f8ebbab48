// Package subsystem runs the agent's subsystems. It starts them in their
// declared order, restarts one that fails with capped exponential backoff
// while the others keep running, and aggregates their readiness, which gates
// systemd's READY=1 and the removal of the node's startup taint.
package subsystem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/autonode/autonode/agent/backoff"
	"github.com/autonode/autonode/health"
)

// Subsystem is one part of the agent with a lifecycle of its own.
//
// Run does the subsystem's work until ctx ends, then returns nil. An error
// return means the subsystem failed: the supervisor logs it, counts it and
// calls Run again after a backoff, so Run must be safe to call again and must
// pick up what an earlier run left behind. A nil return before ctx ends means
// the subsystem finished its work (a one-shot setup); it is not run again.
//
// Ready reports nil once the subsystem serves, or an error that says why it
// does not yet. It is called often and from other goroutines, so it must be
// cheap and safe for concurrent use.
type Subsystem interface {
	Name() string
	Run(ctx context.Context) error
	Ready() error
}

// Spec declares one subsystem to supervise.
type Spec struct {
	Subsystem
	// Requires names subsystems that must be ready before this one starts.
	// They must come earlier in the list given to New.
	Requires []string
	// Condition is the node condition that this subsystem's failures bear on,
	// if any; failures are reported to Options.Health with it.
	Condition health.Condition
	// Optional subsystems are supervised and shown in Status, but the
	// aggregate readiness does not wait for them: a node must not stay
	// tainted because, say, the diagnostics CRD is not installed.
	Optional bool
}

// Options tunes a Supervisor. Zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// Registerer receives the supervisor's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Health receives a warning each time a subsystem fails; nil reports none.
	Health health.Reporter
	// InitialBackoff is the wait before the first restart. Default is 1s.
	InitialBackoff time.Duration
	// MaxBackoff caps the wait between restarts. A run that lasted longer
	// than MaxBackoff resets the backoff. Default is 2m.
	MaxBackoff time.Duration
	// PollInterval is how often readiness is re-evaluated while waiting for
	// it. Default is 200ms.
	PollInterval time.Duration
	// ShutdownTimeout bounds how long Run waits for subsystems to return once
	// its context ends. Default is 30s.
	ShutdownTimeout time.Duration
}

// State is where a subsystem is in its lifecycle.
type State string

// The states a subsystem moves through.
const (
	StatePending    State = "pending"    // waiting for its requirements
	StateRunning    State = "running"    // Run is executing
	StateBackoff    State = "backoff"    // Run failed; waiting to restart
	StateDone       State = "done"       // Run finished its work
	StateStopped    State = "stopped"    // the supervisor is shutting down
	StateNotStarted State = "notstarted" // the supervisor has not run yet
)

// Status is a snapshot of one subsystem.
type Status struct {
	Name     string
	Optional bool
	State    State
	Ready    bool
	Reason   string // why it is not ready; empty when ready
	Failures int
	LastErr  string
}

// Supervisor runs a fixed list of subsystems.
type Supervisor struct {
	opts  Options
	specs []Spec

	// sleep waits between restarts; tests replace it to see the delays.
	sleep func(context.Context, time.Duration) error

	mu    sync.Mutex
	state map[string]*tracked

	starts   *prometheus.CounterVec
	failures *prometheus.CounterVec
}

type tracked struct {
	state    State
	failures int
	lastErr  error
}

// New checks the list and builds a Supervisor for it. Names must be unique
// and requirements must name earlier subsystems.
func New(opts Options, specs ...Spec) (*Supervisor, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 2 * time.Minute
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 200 * time.Millisecond
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	s := &Supervisor{opts: opts, specs: specs, sleep: backoff.Sleep, state: make(map[string]*tracked, len(specs))}
	for _, spec := range specs {
		name := spec.Name()
		if name == "" {
			return nil, errors.New("subsystem with an empty name")
		}
		if _, dup := s.state[name]; dup {
			return nil, fmt.Errorf("subsystem %q declared twice", name)
		}
		for _, req := range spec.Requires {
			if _, ok := s.state[req]; !ok {
				return nil, fmt.Errorf("subsystem %q requires %q, which is not declared before it", name, req)
			}
		}
		s.state[name] = &tracked{state: StateNotStarted}
	}
	s.starts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "autonode_subsystem_starts_total",
		Help: "Times each subsystem's Run was started, restarts included.",
	}, []string{"subsystem"})
	s.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "autonode_subsystem_failures_total",
		Help: "Times each subsystem's Run returned an error or panicked.",
	}, []string{"subsystem"})
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{s.starts, s.failures, readyCollector{s}} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering subsystem metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Run starts every subsystem, each once its requirements are ready, and
// supervises them until ctx ends.
// It then waits up to ShutdownTimeout for them to return.
func (s *Supervisor) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, spec := range s.specs {
		s.setState(spec.Name(), StatePending)
	}
	for _, spec := range s.specs {
		// Each waits for its own requirements, so one slow subsystem holds
		// back only those that need it.
		wg.Go(func() {
			if s.waitFor(ctx, spec.Requires) != nil {
				s.setState(spec.Name(), StateStopped)
				return // ctx ended first
			}
			s.supervise(ctx, spec)
		})
	}
	<-ctx.Done()

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(s.opts.ShutdownTimeout):
		var stuck []string
		for _, st := range s.Status() {
			if st.State == StateRunning {
				stuck = append(stuck, st.Name)
			}
		}
		return fmt.Errorf("subsystems %s did not stop within %s", strings.Join(stuck, ", "), s.opts.ShutdownTimeout)
	}
}

// supervise runs one subsystem, restarting it after failures.
func (s *Supervisor) supervise(ctx context.Context, spec Spec) {
	name := spec.Name()
	log := s.opts.Logger.With("subsystem", name)
	delays := s.newBackoff()
	for {
		s.setState(name, StateRunning)
		s.starts.WithLabelValues(name).Inc()
		log.Info("subsystem starting")
		started := time.Now()
		err := s.runRecovered(ctx, spec.Subsystem)
		if ctx.Err() != nil {
			s.setState(name, StateStopped)
			log.Info("subsystem stopped", "err", err)
			return
		}
		if err == nil {
			s.setState(name, StateDone)
			log.Info("subsystem finished")
			return
		}
		if time.Since(started) > s.opts.MaxBackoff {
			delays = s.newBackoff() // it ran well for a while: start over
		}
		delay := delays.Step()
		s.recordFailure(name, err)
		s.failures.WithLabelValues(name).Inc()
		log.Error("subsystem failed; restarting", "err", err, "backoff", delay)
		if s.opts.Health != nil {
			s.opts.Health.Report(ctx, health.Signal{
				Source: name, Condition: spec.Condition, Reason: "SubsystemFailed", Severity: health.Warning,
				Message: fmt.Sprintf("subsystem %s failed and restarts in %s: %v", name, delay.Round(time.Millisecond), err),
			})
		}
		if s.sleep(ctx, delay) != nil {
			s.setState(name, StateStopped)
			return
		}
	}
}

func (s *Supervisor) newBackoff() wait.Backoff {
	return backoff.New(s.opts.InitialBackoff, s.opts.MaxBackoff)
}

// runRecovered turns a panic in Run into an error, so that one subsystem's
// bug cannot take the agent down.
func (s *Supervisor) runRecovered(ctx context.Context, sub Subsystem) (err error) {
	defer func() {
		if r := recover(); r != nil {
			// The stack goes to the log only: the error travels on into
			// one-line readiness reasons and health signals.
			s.opts.Logger.Error("subsystem panicked", "subsystem", sub.Name(), "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return sub.Run(ctx)
}

func (s *Supervisor) waitFor(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	return s.poll(ctx, func() bool {
		for _, st := range s.Status() {
			if slices.Contains(names, st.Name) && !st.Ready {
				return false
			}
		}
		return true
	})
}

// WaitReady blocks until every subsystem is ready or ctx ends.
func (s *Supervisor) WaitReady(ctx context.Context) error {
	return s.poll(ctx, func() bool { return s.Ready() == nil })
}

func (s *Supervisor) poll(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(s.opts.PollInterval)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Ready returns nil when every subsystem is ready, or an error naming those
// that are not and why.
func (s *Supervisor) Ready() error {
	var notReady []string
	for _, st := range s.Status() {
		if !st.Ready && !st.Optional {
			notReady = append(notReady, fmt.Sprintf("%s: %s", st.Name, st.Reason))
		}
	}
	if len(notReady) > 0 {
		return fmt.Errorf("not ready: %s", strings.Join(notReady, "; "))
	}
	return nil
}

// Status returns a snapshot of every subsystem, in declared order.
func (s *Supervisor) Status() []Status {
	out := make([]Status, 0, len(s.specs))
	for _, spec := range s.specs {
		name := spec.Name()
		s.mu.Lock()
		t := *s.state[name]
		s.mu.Unlock()
		st := Status{Name: name, Optional: spec.Optional, State: t.state, Failures: t.failures}
		if t.lastErr != nil {
			st.LastErr = t.lastErr.Error()
		}
		switch t.state {
		case StateRunning, StateDone:
			if err := spec.Ready(); err != nil {
				st.Reason = err.Error()
			} else {
				st.Ready = true
			}
		case StateBackoff:
			st.Reason = "restarting after failure: " + st.LastErr
		default:
			st.Reason = string(t.state)
		}
		out = append(out, st)
	}
	return out
}

func (s *Supervisor) setState(name string, st State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state[name].state = st
}

func (s *Supervisor) recordFailure(name string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.state[name]
	t.state = StateBackoff
	t.failures++
	t.lastErr = err
}

// readyCollector exports each subsystem's readiness at scrape time, so the
// gauge can never disagree with /readyz.
type readyCollector struct{ s *Supervisor }

func (readyCollector) desc() *prometheus.Desc {
	return prometheus.NewDesc("autonode_subsystem_ready",
		"Whether each subsystem is ready (1) or not (0).", []string{"subsystem"}, nil)
}

func (c readyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc() }

func (c readyCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.s.Status() {
		v := 0.0
		if st.Ready {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc(), prometheus.GaugeValue, v, st.Name)
	}
}
