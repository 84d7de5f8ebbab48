package disruption

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
)

type staticSource struct{ build func() *Cluster }

func (s staticSource) Cluster(context.Context) (*Cluster, error) { return s.build(), nil }

type recordingExecutor struct {
	mu         sync.Mutex
	calls      []string
	failLaunch bool
}

func (e *recordingExecutor) log(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, s)
}

func (e *recordingExecutor) Taint(context.Context, *Command) error   { e.log("taint"); return nil }
func (e *recordingExecutor) Untaint(context.Context, *Command) error { e.log("untaint"); return nil }
func (e *recordingExecutor) Launch(_ context.Context, cmd *Command) ([]string, error) {
	e.log("launch")
	if e.failLaunch {
		return nil, errors.New("insufficient capacity")
	}
	return []string{"new-1"}, nil
}
func (e *recordingExecutor) WaitInitialized(context.Context, []string) error {
	e.log("wait")
	return nil
}
func (e *recordingExecutor) Delete(context.Context, *Command) error { e.log("delete"); return nil }

type events struct {
	mu      sync.Mutex
	reasons []string
}

func (r *events) Record(_ *Command, reason, _ string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
}

// TestRunner: a consolidation waits the validation delay on the clock, is
// re-validated, reserved, then executed in order: taint, launch, wait,
// delete; a failed launch untaints and frees the budget.
func TestRunner(t *testing.T) {
	types := catalog()
	build := func() *Cluster {
		return cluster([]*Pool{testPool("p", types)},
			testNode("a", "p", typeNamed(types, "m.16x"), testPod("x", 1500), testPod("y", 1000)))
	}
	for _, fail := range []bool{false, true} {
		clk := clocktesting.NewFakeClock(t0)
		ex := &recordingExecutor{failLaunch: fail}
		ev := &events{}
		reg := prometheus.NewRegistry()
		m, err := NewMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		r := &Runner{Engine: mustEngine(Options{}), Ledger: NewLedger(), Source: staticSource{build}, Executor: ex, Recorder: ev,
			Metrics: m, Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		done := make(chan *Command)
		go func() {
			cmd, err := r.Step(context.Background())
			if err != nil {
				t.Error(err)
			}
			done <- cmd
		}()
		// Nothing happens before the validation delay passes.
		for !clk.HasWaiters() {
			time.Sleep(time.Millisecond)
		}
		clk.Step(14 * time.Second)
		select {
		case <-done:
			t.Fatal("executed before the validation delay")
		case <-time.After(10 * time.Millisecond):
		}
		clk.Step(time.Second)
		cmd := <-done
		if cmd == nil || cmd.Method != MethodSingleNode {
			t.Fatalf("want a single-node command, got %v", cmd)
		}
		r.Wait()
		want := []string{"taint", "launch", "wait", "delete"}
		if fail {
			want = []string{"taint", "launch", "untaint"}
		}
		if !slices.Equal(ex.calls, want) {
			t.Errorf("fail=%v: calls %v, want %v", fail, ex.calls, want)
		}
		wantEvents := []string{"DisruptionDecided"}
		if fail {
			wantEvents = append(wantEvents, "DisruptionFailed")
			if n := r.Ledger.InFlight("p"); n != 0 {
				t.Errorf("failed command still holds %d nodes of budget", n)
			}
		}
		if !slices.Equal(ev.reasons, wantEvents) {
			t.Errorf("events %v, want %v", ev.reasons, wantEvents)
		}
		l := []string{MethodSingleNode, string(v1.ReasonUnderutilized)}
		if got := testutil.ToFloat64(m.decisions.WithLabelValues(l...)); got != 1 {
			t.Errorf("decisions metric %v", got)
		}
		executed, failed := testutil.ToFloat64(m.executed.WithLabelValues(l...)), testutil.ToFloat64(m.failed.WithLabelValues(l...))
		if fail && (executed != 0 || failed != 1) || !fail && (executed != 1 || failed != 0 || testutil.ToFloat64(m.savings.WithLabelValues(l...)) <= 0) {
			t.Errorf("fail=%v: executed %v failed %v", fail, executed, failed)
		}
	}
}
