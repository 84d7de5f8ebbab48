package disruption

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the disruption metrics, registered on the Registerer given to
// NewMetrics (controller-runtime's metrics.Registry in the provisioner).
type Metrics struct {
	decisions   *prometheus.CounterVec
	executed    *prometheus.CounterVec
	invalidated *prometheus.CounterVec
	failed      *prometheus.CounterVec
	nodes       *prometheus.CounterVec
	pods        *prometheus.CounterVec
	savings     *prometheus.CounterVec
	decideTime  prometheus.Histogram
	execTime    *prometheus.HistogramVec
}

// NewMetrics creates and registers the metrics.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	labels := []string{"method", "reason"}
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "autonode", Subsystem: "disruption",
			Name: "decisions_total", Help: "Commands decided, by method and reason."}, labels),
		executed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "autonode", Subsystem: "disruption",
			Name: "commands_executed_total", Help: "Commands whose candidates were deleted, by method and reason."}, labels),
		invalidated: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "autonode", Subsystem: "disruption",
			Name: "commands_invalidated_total", Help: "Consolidation commands dropped by validation or budget reservation."}, labels),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "autonode", Subsystem: "disruption",
			Name: "commands_failed_total", Help: "Commands that failed while executing (launch, initialization, delete)."}, labels),
		nodes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "autonode", Subsystem: "disruption",
			Name: "nodes_disrupted_total", Help: "Nodes disrupted by executed commands."}, labels),
		pods: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "autonode", Subsystem: "disruption",
			Name: "pods_moved_total", Help: "Pods moved by executed commands."}, labels),
		savings: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "autonode", Subsystem: "disruption",
			Name: "savings_dollars_per_hour_total", Help: "Sum of the $/h saved by executed commands (negative for costlier drift replacements)."}, labels),
		decideTime: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "autonode", Subsystem: "disruption",
			Name: "decision_duration_seconds", Help: "Time to decide one round (all methods).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		execTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "autonode", Subsystem: "disruption",
			Name: "execution_duration_seconds", Help: "Time from reservation to the candidates' deletion.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14)}, labels),
	}
	for _, c := range []**prometheus.CounterVec{&m.decisions, &m.executed, &m.invalidated, &m.failed, &m.nodes, &m.pods, &m.savings} {
		if err := register(reg, c); err != nil {
			return nil, err
		}
	}
	if err := register(reg, &m.decideTime); err != nil {
		return nil, err
	}
	if err := register(reg, &m.execTime); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers *c, or takes over the identical collector registered
// before (a second NewMetrics on one registry, as when the provisioner's
// run is called again in one process), so that both count in one place.
func register[C prometheus.Collector](reg prometheus.Registerer, c *C) error {
	err := reg.Register(*c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			*c = existing
			return nil
		}
	}
	return err
}

// ObserveDecide records one Decide call and its command, if any.
func (m *Metrics) ObserveDecide(d time.Duration, cmd *Command) {
	if m == nil {
		return
	}
	m.decideTime.Observe(d.Seconds())
	if cmd != nil {
		m.decisions.WithLabelValues(cmd.Method, string(cmd.Reason)).Inc()
	}
}

// ObserveInvalidated records a command dropped before execution.
func (m *Metrics) ObserveInvalidated(cmd *Command) {
	if m != nil {
		m.invalidated.WithLabelValues(cmd.Method, string(cmd.Reason)).Inc()
	}
}

// ObserveFailed records a command that failed while executing.
func (m *Metrics) ObserveFailed(cmd *Command) {
	if m != nil {
		m.failed.WithLabelValues(cmd.Method, string(cmd.Reason)).Inc()
	}
}

// ObserveExecuted records a command carried out in d.
func (m *Metrics) ObserveExecuted(cmd *Command, d time.Duration) {
	if m == nil {
		return
	}
	l := []string{cmd.Method, string(cmd.Reason)}
	m.executed.WithLabelValues(l...).Inc()
	m.nodes.WithLabelValues(l...).Add(float64(len(cmd.Candidates)))
	m.pods.WithLabelValues(l...).Add(float64(cmd.PodsMoved))
	m.savings.WithLabelValues(l...).Add(cmd.Savings())
	m.execTime.WithLabelValues(l...).Observe(d.Seconds())
}
