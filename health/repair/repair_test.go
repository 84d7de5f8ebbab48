package repair

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/autonode/autonode/health"
)

// fakeSystemd records unit restarts and reboots.
type fakeSystemd struct {
	mu       sync.Mutex
	restarts []string
	reboots  int
	err      error
}

func (f *fakeSystemd) RestartUnit(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restarts = append(f.restarts, name)
	return f.err
}

func (f *fakeSystemd) Reboot(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reboots++
	return f.err
}

func reason(t *testing.T, name string) health.Reason {
	t.Helper()
	cat, err := health.NewCatalogue(nil)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := cat.Lookup(name)
	if !ok {
		t.Fatalf("no reason %s", name)
	}
	return r
}

func TestRepairActions(t *testing.T) {
	tests := []struct {
		reason   string
		restarts []string
		reboots  int
	}{
		{health.ReasonContainerdUnresponsive, []string{"containerd.service"}, 0},
		{health.ReasonKubeletUnhealthy, []string{"kubelet.service"}, 0},
		{health.ReasonOOMKill, nil, 0},            // none
		{health.ReasonReadOnlyFilesystem, nil, 0}, // replace: nothing local
		{"reboot", nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			fake := &fakeSystemd{}
			r, err := New(Options{Restarter: fake, Rebooter: fake})
			if err != nil {
				t.Fatal(err)
			}
			rs := health.Reason{Name: "ForcedReboot", Action: health.ActionReboot}
			if tt.reason != "reboot" {
				rs = reason(t, tt.reason)
			}
			if err := r.Repair(context.Background(), rs); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(fake.restarts, tt.restarts) || fake.reboots != tt.reboots {
				t.Errorf("restarts %v, reboots %d; want %v, %d", fake.restarts, fake.reboots, tt.restarts, tt.reboots)
			}
		})
	}
}

func TestBudgetStopsALoop(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	fake := &fakeSystemd{}
	r, err := New(Options{Restarter: fake, Clock: clk, Restarts: 3, Window: time.Hour, ContainerdUnit: "ctrd.service"})
	if err != nil {
		t.Fatal(err)
	}
	rs := reason(t, health.ReasonContainerdUnresponsive)
	// The problem comes back after every restart: a loop, one a minute.
	var exhausted int
	for range 10 {
		err := r.Repair(context.Background(), rs)
		switch {
		case errors.Is(err, ErrBudgetExhausted):
			exhausted++
		case err != nil:
			t.Fatal(err)
		}
		clk.Step(time.Minute)
	}
	if len(fake.restarts) != 3 || exhausted != 7 {
		t.Errorf("%d restarts, %d refusals; want 3 and 7", len(fake.restarts), exhausted)
	}
	// The kubelet has its own budget.
	if err := r.Repair(context.Background(), reason(t, health.ReasonKubeletUnhealthy)); err != nil {
		t.Errorf("kubelet restart refused: %v", err)
	}
	// Once the window has slid past the first restarts, repairs run again.
	clk.Step(time.Hour)
	if err := r.Repair(context.Background(), rs); err != nil {
		t.Errorf("after the window: %v", err)
	}
}

func TestBudgetSurvivesRestartWithStatePath(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "budget.json")
	fake := &fakeSystemd{}
	rs := health.Reason{Name: "Wedged", Action: health.ActionReboot}
	r1, err := New(Options{Rebooter: fake, Clock: clk, StatePath: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.Repair(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	// The node rebooted; a new agent loads the budget.
	r2, err := New(Options{Rebooter: fake, Clock: clk, StatePath: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Repair(context.Background(), rs); !errors.Is(err, ErrBudgetExhausted) {
		t.Errorf("second reboot within the hour: err = %v, want ErrBudgetExhausted", err)
	}
	if fake.reboots != 1 {
		t.Errorf("%d reboots, want 1", fake.reboots)
	}
}

func TestRepairErrorsNameTheUnit(t *testing.T) {
	fake := &fakeSystemd{err: errors.New("no D-Bus")}
	r, err := New(Options{Restarter: fake})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Repair(context.Background(), reason(t, health.ReasonContainerdSnapshotFailed))
	if err == nil || err.Error() != "reason ContainerdSnapshotFailed: restart-containerd: restarting containerd.service: no D-Bus" {
		t.Errorf("err = %v", err)
	}
	r, _ = New(Options{})
	if err := r.Repair(context.Background(), health.Reason{Name: "X", Action: health.ActionReboot}); err == nil {
		t.Error("reboot without a rebooter succeeded")
	}
}

func TestEscalator(t *testing.T) {
	start := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	xfs := reason(t, health.ReasonXFSError)
	oom := reason(t, health.ReasonOOMKill)
	tests := []struct {
		name   string
		cfg    Escalation
		reason health.Reason
		every  time.Duration
		n      int
		want   []health.Severity // per occurrence
	}{
		{"off by default", Escalation{}, xfs, time.Second, 4, []health.Severity{1, 1, 1, 1}},
		{"storage repeating escalates", Escalation{Repeats: 3, Window: time.Minute}, xfs, time.Second, 4, []health.Severity{1, 1, 2, 2}},
		{"spread out does not", Escalation{Repeats: 3, Window: time.Minute}, xfs, 40 * time.Second, 4, []health.Severity{1, 1, 1, 1}},
		{"only storage", Escalation{Repeats: 2, Window: time.Minute}, oom, time.Second, 3, []health.Severity{1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEscalator(tt.cfg)
			var got []health.Severity
			for i := range tt.n {
				got = append(got, e.Severity(tt.reason, tt.reason.Severity, start.Add(time.Duration(i)*tt.every)))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("severities %v, want %v", got, tt.want)
			}
		})
	}
}
