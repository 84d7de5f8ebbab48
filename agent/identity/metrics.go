package identity

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the endpoint's Prometheus collectors; they live on the
// agent's own status server, never on the pod-facing addresses.
type metrics struct {
	requests  *prometheus.CounterVec
	duration  prometheus.Histogram
	hits      prometheus.Counter
	misses    prometheus.Counter
	stale     prometheus.Counter
	calls     *prometheus.CounterVec
	refreshes *prometheus.CounterVec
	evictions *prometheus.CounterVec
	entries   prometheus.GaugeFunc
	lookups   *prometheus.CounterVec

	// ok is requests{code="200"}, resolved once for the hot path.
	ok prometheus.Counter
}

func newMetrics(entries func() float64) *metrics {
	results := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "autonode_identity_cache_lookups_total",
		Help: "Credential cache lookups by result: hit (served from cache), miss (EKS Auth called), stale (EKS Auth failed, unexpired cached credentials served).",
	}, []string{"result"})
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autonode_identity_requests_total",
			Help: "Requests to the Pod Identity endpoint by HTTP status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "autonode_identity_request_duration_seconds",
			Help:    "Time to answer a Pod Identity request, EKS Auth calls included.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		hits:   results.WithLabelValues("hit"),
		misses: results.WithLabelValues("miss"),
		stale:  results.WithLabelValues("stale"),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autonode_identity_eksauth_calls_total",
			Help: "AssumeRoleForPodIdentity calls by outcome: Success, an EKS Auth error code, Timeout or Other.",
		}, []string{"result"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autonode_identity_refreshes_total",
			Help: "Background credential refreshes by result: success, recoverable (cached credentials kept) or unrecoverable (evicted).",
		}, []string{"result"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autonode_identity_cache_evictions_total",
			Help: "Credentials removed from the cache by reason: capacity, token-expired, credentials-expired, unrecoverable.",
		}, []string{"reason"}),
		entries: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "autonode_identity_cache_entries",
			Help: "Tokens whose credentials are cached.",
		}, entries),
	}
	m.ok = m.requests.WithLabelValues(strconv.Itoa(200))
	m.lookups = results
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.duration, m.lookups, m.calls, m.refreshes, m.evictions, m.entries}
}
