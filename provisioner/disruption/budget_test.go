package disruption

import (
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
)

func ptr[T any](v T) *T { return &v }

func TestParseBudget(t *testing.T) {
	tests := []struct {
		in      v1.Budget
		nodes   int
		percent bool
		wantErr string
	}{
		{in: v1.Budget{Nodes: "5"}, nodes: 5},
		{in: v1.Budget{Nodes: "10%"}, nodes: 10, percent: true},
		{in: v1.Budget{}, nodes: 10, percent: true},
		{in: v1.Budget{Nodes: "0"}, nodes: 0},
		{in: v1.Budget{Nodes: "101%"}, wantErr: "percentage"},
		{in: v1.Budget{Nodes: "-1"}, wantErr: "count"},
		{in: v1.Budget{Nodes: "x"}, wantErr: "count"},
		{in: v1.Budget{Nodes: "1", Schedule: ptr("@daily")}, wantErr: "go together"},
		{in: v1.Budget{Nodes: "1", Schedule: ptr("not cron"), Duration: &metav1.Duration{Duration: time.Hour}}, wantErr: "not cron"},
		{in: v1.Budget{Nodes: "1", Schedule: ptr("CRON_TZ=Europe/Paris 0 9 * * *"), Duration: &metav1.Duration{Duration: time.Hour}}, wantErr: "UTC"},
		{in: v1.Budget{Nodes: "1", Schedule: ptr("0 9 * * mon-fri"), Duration: &metav1.Duration{Duration: 0}}, wantErr: "positive"},
		{in: v1.Budget{Nodes: "1", Schedule: ptr("0 9 * * mon-fri"), Duration: &metav1.Duration{Duration: 8 * time.Hour}}, nodes: 1},
	}
	for _, tt := range tests {
		name := tt.in.Nodes
		if tt.in.Schedule != nil {
			name += " " + *tt.in.Schedule
		}
		t.Run(name, func(t *testing.T) {
			b, err := ParseBudget(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.Nodes != tt.nodes || b.Percent != tt.percent {
				t.Fatalf("budget %+v, want %d percent=%v", b, tt.nodes, tt.percent)
			}
		})
	}
}

func TestBudgetCountRoundsUp(t *testing.T) {
	for _, tt := range []struct {
		nodes, pool, want int
		percent           bool
	}{
		{10, 5, 1, true}, {10, 10, 1, true}, {10, 11, 2, true}, {20, 19, 4, true}, {0, 50, 0, true},
		{100, 7, 7, true}, {3, 100, 3, false}, {10, 0, 0, true},
	} {
		if got := (Budget{Nodes: tt.nodes, Percent: tt.percent}).Count(tt.pool); got != tt.want {
			t.Errorf("%d (percent %v) of %d = %d, want %d", tt.nodes, tt.percent, tt.pool, got, tt.want)
		}
	}
}

// TestBudgetWindows walks a fake clock through a week: a budget of 0 for
// Drifted during business hours (09:00-17:00 UTC, Monday to Friday), 2 for
// everything else, and 10% always.
func TestBudgetWindows(t *testing.T) {
	mk := func(b v1.Budget) Budget {
		t.Helper()
		out, err := ParseBudget(b)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	budgets := []Budget{
		mk(v1.Budget{Nodes: "0", Reasons: []v1.DisruptionReason{v1.ReasonDrifted}, Schedule: ptr("0 9 * * mon-fri"), Duration: &metav1.Duration{Duration: 8 * time.Hour}}),
		mk(v1.Budget{Nodes: "2", Schedule: ptr("0 0 * * sat"), Duration: &metav1.Duration{Duration: 48 * time.Hour}}),
		mk(v1.Budget{Nodes: "10%"}),
	}
	// 2026-11-23 is a Monday.
	mon := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		at     time.Time
		reason v1.DisruptionReason
		want   int
	}{
		{mon.Add(8*time.Hour + 59*time.Minute), v1.ReasonDrifted, 5}, // before the window: 10% of 50
		{mon.Add(9 * time.Hour), v1.ReasonDrifted, 0},                // opens on the tick
		{mon.Add(16*time.Hour + 59*time.Minute), v1.ReasonDrifted, 0},
		{mon.Add(17 * time.Hour), v1.ReasonDrifted, 5},                                 // closes after duration
		{mon.Add(12 * time.Hour), v1.ReasonEmpty, 5},                                   // other reasons unaffected
		{mon.Add(5*24*time.Hour + 12*time.Hour), v1.ReasonDrifted, 2},                  // Saturday noon
		{mon.Add(6*24*time.Hour + 23*time.Hour), v1.ReasonEmpty, 2},                    // Sunday late
		{mon.Add(7*24*time.Hour + 10*time.Hour), v1.ReasonDrifted, 0},                  // next Monday
		{mon.Add(5*24*time.Hour + 12*time.Hour), v1.ReasonExpired, Unlimited},          // forceful: only named budgets
		{mon.Add(12 * time.Hour).In(time.FixedZone("X", 5*3600)), v1.ReasonDrifted, 0}, // same instant in another zone
	}
	for _, tt := range tests {
		if got := Allowed(budgets, tt.reason, 50, tt.at); got != tt.want {
			t.Errorf("%s %s: allowed %d, want %d", tt.at.Format(time.RFC3339), tt.reason, got, tt.want)
		}
	}
	named := []Budget{{Reasons: []v1.DisruptionReason{v1.ReasonExpired}, Nodes: 1}}
	if got := Allowed(named, v1.ReasonExpired, 50, mon); got != 1 {
		t.Errorf("a budget naming Expired: allowed %d, want 1", got)
	}
}

// TestLedgerConcurrent reserves from many goroutines at once and checks
// that the budget is never exceeded.
func TestLedgerConcurrent(t *testing.T) {
	types := catalog()
	p := testPool("p", types)
	p.Budgets = []Budget{{Nodes: 3}}
	var nodes []*Node
	for i := range 40 {
		nodes = append(nodes, testNode(string(rune('a'+i%26))+string(rune('a'+i/26)), "p", types[0]))
	}
	nodes[0].Disrupting = true // one already in flight
	c := cluster([]*Pool{p}, nodes...)
	l := NewLedger()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var got []*Reservation
	for i := 1; i < len(nodes)-1; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := l.Reserve(c, &Command{Reason: v1.ReasonDrifted, Candidates: []*Node{nodes[i]}}, t0)
			if err == nil {
				mu.Lock()
				got = append(got, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(got) != 2 {
		t.Fatalf("%d reservations succeeded, want 2 (budget 3, one in flight)", len(got))
	}
	// A released reservation keeps counting until a snapshot shows the
	// node disrupting; a cancelled one frees its slot at once.
	got[0].Release()
	if _, err := l.Reserve(c, &Command{Reason: v1.ReasonDrifted, Candidates: []*Node{nodes[39]}}, t0); err == nil {
		t.Fatal("reserved past the budget after a release the snapshot has not seen")
	}
	got[1].Cancel()
	if _, err := l.Reserve(c, &Command{Reason: v1.ReasonDrifted, Candidates: []*Node{nodes[39]}}, t0); err != nil {
		t.Fatalf("reserve after cancel: %v", err)
	}
	if _, err := l.Reserve(c, &Command{Reason: v1.ReasonDrifted, Candidates: []*Node{nodes[39]}}, t0); err == nil ||
		!strings.Contains(err.Error(), "already") {
		t.Fatalf("double reservation of one node: %v", err)
	}
}

// FuzzParseBudget: any nodes, schedule and duration either parse into a
// budget whose Count and Active do not panic, or give an error.
func FuzzParseBudget(f *testing.F) {
	f.Add("10%", "0 9 * * mon-fri", int64(8*time.Hour))
	f.Add("5", "@daily", int64(time.Hour))
	f.Add("100%", "", int64(0))
	f.Add("0", "*/15 * * * *", int64(time.Minute))
	f.Add("3", "CRON_TZ=UTC 0 0 * * *", int64(time.Hour))
	f.Fuzz(func(t *testing.T, nodes, schedule string, dur int64) {
		b := v1.Budget{Nodes: nodes}
		if schedule != "" {
			b.Schedule = &schedule
			b.Duration = &metav1.Duration{Duration: time.Duration(dur)}
		}
		out, err := ParseBudget(b)
		if err != nil {
			return
		}
		if c := out.Count(37); c < 0 || (out.Percent && c > 37) {
			t.Fatalf("count %d of 37 for %q", c, nodes)
		}
		out.Active(t0)
	})
}
