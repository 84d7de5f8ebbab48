package dns

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	queries         *prometheus.CounterVec
	upstreamLatency *prometheus.HistogramVec
	cacheEntries    prometheus.GaugeFunc
}

func newMetrics(c *cache) *metrics {
	return &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autonode_dns_queries_total",
			Help: "Queries answered by the node-local DNS cache, by client protocol and result (hit, miss, stale, error).",
		}, []string{"protocol", "result"}),
		upstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "autonode_dns_upstream_duration_seconds",
			Help: "Time for one upstream DNS exchange, failures included, by upstream group (cluster, vpc) and protocol.",
			// 0.25ms to about 4s: in-VPC answers take a millisecond or
			// less, and the default timeout is 2s.
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 15),
		}, []string{"upstream", "protocol"}),
		cacheEntries: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "autonode_dns_cache_entries",
			Help: "Answers held by the node-local DNS cache, stale ones included.",
		}, func() float64 { return float64(c.len()) }),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.queries, m.upstreamLatency, m.cacheEntries} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("registering DNS metric: %w", err)
		}
	}
	return nil
}
