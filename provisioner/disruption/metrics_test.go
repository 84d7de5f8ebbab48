package disruption

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A second NewMetrics on one registry (the provisioner started twice in one
// process) shares the first one's collectors instead of failing.
func TestNewMetricsTwice(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewMetrics(reg)
	if err != nil {
		t.Fatalf("second NewMetrics: %v", err)
	}
	cmd := &Command{Method: MethodEmptiness, Reason: "Empty"}
	a.ObserveInvalidated(cmd)
	b.ObserveInvalidated(cmd)
	if got := testutil.ToFloat64(a.invalidated.WithLabelValues(MethodEmptiness, "Empty")); got != 2 {
		t.Errorf("invalidated = %v, want 2 (both Metrics count in one place)", got)
	}
	if err := reg.Register(prometheus.NewCounter(prometheus.CounterOpts{Name: "autonode_disruption_decisions_total"})); err == nil {
		t.Error("a different collector under a taken name registered")
	}
}
