package config

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Policy configures NetworkPolicy enforcement (docs/policy.md). It runs only with network.enabled, since CNI ADD
// attaches each pod's rules.
type Policy struct {
	// Enabled enforces NetworkPolicy with the eBPF datapath. Default is true.
	Enabled bool `json:"enabled"`
	// Strict denies pods attached before the policy caches have synced (node traffic excepted); false allows
	// them everything until then. Default is true.
	Strict bool `json:"strict"`
	// PinRoot is the BPF filesystem folder holding the pinned maps and links. Default is
	// /sys/fs/bpf/autonode/policy.
	PinRoot string `json:"pinRoot"`
	// ConntrackSize is the connection tracker's capacity in flows. Default is 524288.
	ConntrackSize int `json:"conntrackSize"`
	// EmitAllows reports allowed flows as events too; denials always are. Default is false.
	EmitAllows bool `json:"emitAllows"`
	// EventsPerSecond bounds the flow events each CPU sends to the agent. Default is 1000.
	EventsPerSecond int `json:"eventsPerSecond"`
	// FlowLogsPerSecond bounds the flow events logged; all are counted in metrics. Default is 10.
	FlowLogsPerSecond int `json:"flowLogsPerSecond"`
	// ReconcileInterval is how often pins are reconciled with the attached pods. Default is 5m.
	ReconcileInterval metav1.Duration `json:"reconcileInterval"`
	// DNSService is the cluster DNS Service (namespace/name): egress to its pods on port 53 also allows
	// network.dns.address. Default is kube-system/kube-dns.
	DNSService string `json:"dnsService"`
}

func defaultPolicy() Policy {
	return Policy{
		Enabled: true, Strict: true, PinRoot: "/sys/fs/bpf/autonode/policy", ConntrackSize: 512 * 1024,
		EventsPerSecond: 1000, FlowLogsPerSecond: 10, ReconcileInterval: metav1.Duration{Duration: 5 * time.Minute},
		DNSService: "kube-system/kube-dns",
	}
}

// validate reports each bad field of p through bad.
func (p Policy) validate(bad func(field, flag, value, want string)) {
	if !filepath.IsAbs(p.PinRoot) {
		bad("policy.pinRoot", "", p.PinRoot, "must be an absolute path in a BPF filesystem")
	}
	if n := p.ConntrackSize; n < 1024 || n > 16<<20 {
		bad("policy.conntrackSize", "", strconv.Itoa(n), "must be from 1024 to 16777216")
	}
	if n := p.EventsPerSecond; n < 1 || n > 1_000_000 {
		bad("policy.eventsPerSecond", "", strconv.Itoa(n), "must be from 1 to 1000000")
	}
	if n := p.FlowLogsPerSecond; n < 1 || n > 100_000 {
		bad("policy.flowLogsPerSecond", "", strconv.Itoa(n), "must be from 1 to 100000")
	}
	if d := p.ReconcileInterval.Duration; d < time.Second || d > 24*time.Hour {
		bad("policy.reconcileInterval", "", d.String(), "must be a duration from 1s to 24h")
	}
	if ns, name, ok := strings.Cut(p.DNSService, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		bad("policy.dnsService", "", p.DNSService, fmt.Sprintf("must be namespace/name, such as %s", defaultPolicy().DNSService))
	}
}
