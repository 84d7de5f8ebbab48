package policy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	locals         prometheus.Gauge
	programs       *prometheus.CounterVec
	computeSeconds prometheus.Histogram
	enforceSeconds prometheus.Histogram
	notEnforceable *prometheus.CounterVec
	flows          *prometheus.CounterVec
	flowLogsDrop   prometheus.Counter
	nodeAddresses  prometheus.Gauge
	reconciles     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		locals: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "autonode_policy_local_pods", Help: "Pods attached on this node whose policy the engine programs.",
		}),
		programs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autonode_policy_programs_total", Help: "Per-pod rule updates handed to the datapath, by result (ok, error).",
		}, []string{"result"}),
		computeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "autonode_policy_compute_seconds", Help: "Time to compute one pod's rules.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		enforceSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "autonode_policy_enforcement_delay_seconds",
			Help:    "From a change reaching the engine (watch event, CNI ADD) to the affected pod's rules being in the datapath.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		notEnforceable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autonode_policy_not_enforceable_total",
			Help: "Times a pod was denied because a policy selecting it is invalid or cannot be expressed, by policy.",
		}, []string{"namespace", "policy"}),
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autonode_policy_flow_verdicts_total",
			Help: "Flow verdicts reported by the datapath, by verdict, direction, pod and isolating policy (\"\" when none isolates it).",
		}, []string{"verdict", "direction", "pod", "policy"}),
		flowLogsDrop: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "autonode_policy_flow_logs_suppressed_total", Help: "Flow events counted but not logged because of the log rate limit.",
		}),
		nodeAddresses: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "autonode_policy_node_addresses", Help: "Node addresses whose traffic with local pods is always allowed.",
		}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autonode_policy_pin_reconciles_total", Help: "Reconciliations of the datapath's pins with the attached pods, by result.",
		}, []string{"result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.locals, m.programs, m.computeSeconds, m.enforceSeconds, m.notEnforceable,
			m.flows, m.flowLogsDrop, m.nodeAddresses, m.reconciles} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering policy metrics: %w", err)
			}
		}
	}
	return m, nil
}

// forget drops the series of a pod that is gone, so churn does not grow them.
func (m *metrics) forget(pod string) {
	m.flows.DeletePartialMatch(prometheus.Labels{"pod": pod})
}
