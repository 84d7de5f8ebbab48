package ipam

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	ec2Calls   *prometheus.CounterVec
	ec2Errors  *prometheus.CounterVec
	fallbacks  prometheus.Counter
	leakedENIs prometheus.Counter
	state      stateCollector
}

func newMetrics(p *Pool) *metrics {
	return &metrics{
		ec2Calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autonode_ipam_ec2_calls_total", Help: "EC2 API calls the IPAM pool made, by action (each SDK attempt sequence counts once).",
		}, []string{"action"}),
		ec2Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autonode_ipam_ec2_errors_total", Help: "EC2 API calls that failed after the SDK's retries, by action and error code.",
		}, []string{"action", "code"}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "autonode_ipam_prefix_fallbacks_total", Help: "Times a /28 prefix request failed for fragmentation and the subnet fell back to secondary IPs.",
		}),
		leakedENIs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "autonode_ipam_leaked_enis_deleted_total", Help: "Unattached ENIs tagged with this instance that the pool deleted.",
		}),
		state: stateCollector{p},
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.ec2Calls, m.ec2Errors, m.fallbacks, m.leakedENIs, m.state} {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}

// stateCollector exports the pool's counts at scrape time, so the gauges
// never disagree with the pool.
type stateCollector struct{ p *Pool }

var (
	addrDesc = prometheus.NewDesc("autonode_ipam_addresses", "Pod addresses in the pool, by state (total, assigned, free, cooling, held).", []string{"state"}, nil)
	eniDesc  = prometheus.NewDesc("autonode_ipam_enis", "ENIs the pool draws addresses from, the primary included.", nil, nil)
)

func (stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- addrDesc; ch <- eniDesc }

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.p
	p.mu.Lock()
	st := p.statsLocked(p.cfg.Now())
	enis := len(p.enis)
	p.mu.Unlock()
	for state, v := range map[string]int{"total": st.total, "assigned": st.assigned, "free": st.avail, "cooling": st.cooling, "held": st.held} {
		ch <- prometheus.MustNewConstMetric(addrDesc, prometheus.GaugeValue, float64(v), state)
	}
	ch <- prometheus.MustNewConstMetric(eniDesc, prometheus.GaugeValue, float64(enis))
}
