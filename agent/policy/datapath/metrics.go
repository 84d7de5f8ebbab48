package datapath

import (
	"io/fs"
	"path/filepath"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"
)

// Collectors returns the datapath's Prometheus collectors. They read the maps at scrape time; the conntrack fill
// is the count of Run's last sweep.
func (d *Datapath) Collectors() []prometheus.Collector {
	return []prometheus.Collector{&collector{d: d}}
}

var (
	descPackets   = prometheus.NewDesc("autonode_policy_packets_total", "Packets the policy programs decided, by verdict and reason.", []string{"verdict", "reason"}, nil)
	descEvents    = prometheus.NewDesc("autonode_policy_flow_events_total", "Flow events, by outcome: sent, ratelimited (in BPF), ring_full, reader_dropped (consumer too slow).", []string{"outcome"}, nil)
	descCtEntries = prometheus.NewDesc("autonode_policy_conntrack_entries", "Tracked flows at the last conntrack sweep.", nil, nil)
	descCtCap     = prometheus.NewDesc("autonode_policy_conntrack_capacity", "Capacity of the connection tracker, in flows.", nil, nil)
	descCtNew     = prometheus.NewDesc("autonode_policy_conntrack_created_total", "Flows the programs started tracking.", nil, nil)
	descCtGC      = prometheus.NewDesc("autonode_policy_conntrack_sweep_total", "Conntrack entries the sweep deleted (expired) or put back (refreshed during the sweep).", []string{"outcome"}, nil)
	descPods      = prometheus.NewDesc("autonode_policy_pods", "Pods with programmed rules.", nil, nil)
	descMaps      = prometheus.NewDesc("autonode_policy_maps", "BPF maps held by the datapath (all global: per-pod state is entries in them).", nil, nil)
	descRules     = prometheus.NewDesc("autonode_policy_rule_entries", "Entries in the rules trie: those in force, and those retired until no packet can still read them.", nil, nil)
	descPins      = prometheus.NewDesc("autonode_policy_pins", "Pins under the datapath's pin root, by kind: map or link.", []string{"kind"}, nil)
)

type collector struct{ d *Datapath }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPackets, descEvents, descCtEntries, descCtCap, descCtNew, descCtGC, descPods, descMaps, descRules, descPins} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	stats := d.stats()
	for _, r := range reasons() {
		verdict := "deny"
		if r.Allows() {
			verdict = "allow"
		}
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(stats[r]), verdict, r.String())
	}
	for outcome, v := range map[string]float64{
		"sent": float64(stats[statEventsSent]), "ratelimited": float64(stats[statEventsLimited]),
		"ring_full": float64(stats[statEventsRingFull]), "reader_dropped": float64(d.eventsLost.Load()),
	} {
		ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, v, outcome)
	}
	ch <- prometheus.MustNewConstMetric(descCtEntries, prometheus.GaugeValue, float64(d.ctEntries.Load()))
	ch <- prometheus.MustNewConstMetric(descCtCap, prometheus.GaugeValue, float64(d.cfg.ConntrackSize))
	ch <- prometheus.MustNewConstMetric(descCtNew, prometheus.CounterValue, float64(stats[statConntrackNew]))
	ch <- prometheus.MustNewConstMetric(descCtGC, prometheus.CounterValue, float64(d.ctSweptExpired.Load()), "deleted")
	ch <- prometheus.MustNewConstMetric(descCtGC, prometheus.CounterValue, float64(d.ctKeptLive.Load()), "kept_live")
	if pods, err := d.pods(); err == nil {
		ch <- prometheus.MustNewConstMetric(descPods, prometheus.GaugeValue, float64(len(pods)))
	}
	ch <- prometheus.MustNewConstMetric(descMaps, prometheus.GaugeValue, float64(reflect.TypeFor[policyMaps]().NumField()))
	ch <- prometheus.MustNewConstMetric(descRules, prometheus.GaugeValue, float64(d.ruleEntries()))
	ch <- prometheus.MustNewConstMetric(descPins, prometheus.GaugeValue, float64(countFiles(d.mapsDir())), "map")
	ch <- prometheus.MustNewConstMetric(descPins, prometheus.GaugeValue, float64(countFiles(d.linksDir())), "link")
}

// stats sums the per-CPU counters.
func (d *Datapath) stats() [statCount]uint64 {
	var out [statCount]uint64
	var per []uint64
	for i := range uint32(statCount) {
		if err := d.objs.ApStats.Lookup(i, &per); err != nil {
			continue
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out
}

// countFiles counts the files under dir.
func countFiles(dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			n++
		}
		return nil
	})
	return n
}
