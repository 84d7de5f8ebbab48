package subsystem

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/autonode/autonode/health/healthtest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/autonode/autonode/health"
)

// fakeSub is a scripted subsystem.
type fakeSub struct {
	name  string
	runs  atomic.Int32
	ready atomic.Bool
	// run is called on each Run with the 1-based run number.
	run func(ctx context.Context, n int32) error
}

func (f *fakeSub) Name() string { return f.name }
func (f *fakeSub) Run(ctx context.Context) error {
	return f.run(ctx, f.runs.Add(1))
}
func (f *fakeSub) Ready() error {
	if f.ready.Load() {
		return nil
	}
	return errors.New("warming up")
}

// serve is a Run that becomes ready and blocks until ctx ends.
func serve(f *fakeSub) func(context.Context, int32) error {
	return func(ctx context.Context, _ int32) error {
		f.ready.Store(true)
		<-ctx.Done()
		return nil
	}
}

func fastOptions(reg prometheus.Registerer) Options {
	return Options{
		Registerer:      reg,
		InitialBackoff:  time.Millisecond,
		MaxBackoff:      20 * time.Millisecond,
		PollInterval:    time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
	}
}

func start(t *testing.T, sup *Supervisor) (cancel func() error) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- sup.Run(ctx) }()
	var once atomic.Bool
	cancel = func() error {
		if !once.CompareAndSwap(false, true) {
			return nil
		}
		stop()
		return <-errc
	}
	t.Cleanup(func() { _ = cancel() })
	return cancel
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFailingSubsystemRestartsWhileOthersRun(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	flaky := &fakeSub{name: "flaky"}
	flaky.run = func(ctx context.Context, n int32) error {
		if n <= 3 {
			return errors.New("boom")
		}
		if n == 4 {
			panic("kaboom")
		}
		return serve(flaky)(ctx, n)
	}
	steady := &fakeSub{name: "steady"}
	steady.run = serve(steady)

	signals := &healthtest.Recorder{}
	opts := fastOptions(reg)
	opts.Health = signals
	sup, err := New(opts, Spec{Subsystem: steady}, Spec{Subsystem: flaky, Condition: health.NetworkingReady})
	if err != nil {
		t.Fatal(err)
	}
	cancel := start(t, sup)
	waitUntil(t, "all ready", func() bool { return sup.Ready() == nil })

	if got := flaky.runs.Load(); got != 5 {
		t.Errorf("flaky ran %d times, want 5 (3 errors, 1 panic, then serving)", got)
	}
	if got := steady.runs.Load(); got != 1 {
		t.Errorf("steady ran %d times, want 1: a failing neighbour must not restart it", got)
	}
	if got := testutil.ToFloat64(sup.failures.WithLabelValues("flaky")); got != 4 {
		t.Errorf("failures metric for flaky = %v, want 4", got)
	}
	if got := testutil.ToFloat64(sup.starts.WithLabelValues("flaky")); got != 5 {
		t.Errorf("starts metric for flaky = %v, want 5", got)
	}
	st := sup.Status()
	if st[1].Failures != 4 || !strings.Contains(st[1].LastErr, "kaboom") {
		t.Errorf("flaky status = %+v, want 4 failures, last one the panic", st[1])
	}
	got := signals.Signals()
	if len(got) != 4 {
		t.Fatalf("%d health signals, want one per failure (4): %+v", len(got), got)
	}
	for _, sig := range got {
		if sig.Source != "flaky" || sig.Condition != health.NetworkingReady || sig.Reason != "SubsystemFailed" || sig.Severity != health.Warning {
			t.Errorf("health signal %+v, want a SubsystemFailed warning from flaky on NetworkingReady", sig)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "autonode_subsystem_ready"); err != nil || n != 2 {
		t.Errorf("autonode_subsystem_ready series = %d (%v), want 2", n, err)
	}
	if err := cancel(); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	for _, s := range sup.Status() {
		if s.State != StateStopped {
			t.Errorf("%s state after shutdown = %s, want stopped", s.Name, s.State)
		}
	}
}

func TestRestartsBackOffExponentiallyUpToTheCap(t *testing.T) {
	failing := &fakeSub{name: "failing"}
	failing.run = func(ctx context.Context, n int32) error {
		if n <= 5 {
			return errors.New("boom")
		}
		return serve(failing)(ctx, n)
	}
	opts := fastOptions(nil)
	opts.InitialBackoff = 10 * time.Millisecond
	opts.MaxBackoff = 40 * time.Millisecond
	sup, err := New(opts, Spec{Subsystem: failing})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var delays []time.Duration
	sup.sleep = func(_ context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		delays = append(delays, d)
		return nil
	}
	start(t, sup)
	waitUntil(t, "ready after five failures", func() bool { return sup.Ready() == nil })
	mu.Lock()
	defer mu.Unlock()
	want := []time.Duration{10, 20, 40, 40, 40}
	if len(delays) != len(want) {
		t.Fatalf("%d restarts waited %v, want %d", len(delays), delays, len(want))
	}
	for i, w := range want {
		w *= time.Millisecond
		if d := delays[i]; d < w || d > w+w/10 {
			t.Errorf("restart %d waited %s, want %s plus at most 10%% jitter", i+1, d, w)
		}
	}
}

func TestRequiresOrdersStart(t *testing.T) {
	first := &fakeSub{name: "first"}
	gate := make(chan struct{})
	first.run = func(ctx context.Context, _ int32) error {
		<-gate
		first.ready.Store(true)
		<-ctx.Done()
		return nil
	}
	second := &fakeSub{name: "second"}
	second.run = serve(second)

	independent := &fakeSub{name: "independent"}
	independent.run = serve(independent)

	sup, err := New(fastOptions(nil), Spec{Subsystem: first}, Spec{Subsystem: second, Requires: []string{"first"}}, Spec{Subsystem: independent})
	if err != nil {
		t.Fatal(err)
	}
	start(t, sup)
	waitUntil(t, "first running", func() bool { return first.runs.Load() == 1 })
	// A subsystem declared after the waiting one but not needing first runs.
	waitUntil(t, "independent running", func() bool { return independent.ready.Load() })
	if st := sup.Status()[1]; st.State != StatePending || second.runs.Load() != 0 {
		t.Fatalf("second started before first was ready: %+v", st)
	}
	if err := sup.Ready(); err == nil || !strings.Contains(err.Error(), "first: warming up") {
		t.Errorf("Ready() = %v, want it to name first's reason", err)
	}
	close(gate)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sup.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if second.runs.Load() != 1 {
		t.Errorf("second ran %d times, want 1", second.runs.Load())
	}
}

func TestOptionalSubsystemDoesNotHoldReadiness(t *testing.T) {
	core := &fakeSub{name: "core"}
	core.run = serve(core)
	extra := &fakeSub{name: "extra"} // never ready
	extra.run = func(ctx context.Context, _ int32) error { <-ctx.Done(); return nil }
	sup, err := New(fastOptions(nil), Spec{Subsystem: core}, Spec{Subsystem: extra, Optional: true})
	if err != nil {
		t.Fatal(err)
	}
	start(t, sup)
	waitUntil(t, "ready without the optional subsystem", func() bool { return sup.Ready() == nil })
	if st := sup.Status()[1]; st.Ready || !st.Optional {
		t.Errorf("optional subsystem status = %+v, want shown as optional and not ready", st)
	}
}

func TestOneShotSubsystemStaysDone(t *testing.T) {
	once := &fakeSub{name: "setup"}
	once.run = func(context.Context, int32) error { once.ready.Store(true); return nil }
	sup, err := New(fastOptions(nil), Spec{Subsystem: once})
	if err != nil {
		t.Fatal(err)
	}
	start(t, sup)
	waitUntil(t, "setup done", func() bool { return sup.Status()[0].State == StateDone })
	if err := sup.Ready(); err != nil {
		t.Errorf("Ready() = %v, want nil for a finished, ready subsystem", err)
	}
	if once.runs.Load() != 1 {
		t.Errorf("one-shot ran %d times, want 1", once.runs.Load())
	}
}

func TestShutdownTimeoutNamesStuckSubsystem(t *testing.T) {
	stuck := &fakeSub{name: "stuck"}
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	stuck.run = func(context.Context, int32) error { <-release; return nil }
	opts := fastOptions(nil)
	opts.ShutdownTimeout = 50 * time.Millisecond
	sup, err := New(opts, Spec{Subsystem: stuck})
	if err != nil {
		t.Fatal(err)
	}
	cancel := start(t, sup)
	waitUntil(t, "stuck running", func() bool { return stuck.runs.Load() == 1 })
	err = cancel()
	if err == nil || !strings.Contains(err.Error(), "stuck") {
		t.Fatalf("Run = %v, want an error naming the stuck subsystem", err)
	}
}

func TestNewRejectsBadLists(t *testing.T) {
	a := &fakeSub{name: "a"}
	b := &fakeSub{name: "b"}
	tests := []struct {
		name  string
		specs []Spec
		want  string
	}{
		{"empty name", []Spec{{Subsystem: &fakeSub{}}}, "empty name"},
		{"duplicate", []Spec{{Subsystem: a}, {Subsystem: a}}, `"a" declared twice`},
		{"unknown requirement", []Spec{{Subsystem: a, Requires: []string{"nope"}}}, `requires "nope"`},
		{"requirement declared later", []Spec{{Subsystem: a, Requires: []string{"b"}}, {Subsystem: b}}, `requires "b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Options{}, tt.specs...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}
