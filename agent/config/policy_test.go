package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPolicyValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Policy)
		field  string
	}{
		{"pin root relative", func(p *Policy) { p.PinRoot = "bpf/policy" }, "policy.pinRoot"},
		{"conntrack too small", func(p *Policy) { p.ConntrackSize = 1023 }, "policy.conntrackSize"},
		{"conntrack too large", func(p *Policy) { p.ConntrackSize = 16<<20 + 1 }, "policy.conntrackSize"},
		{"events zero", func(p *Policy) { p.EventsPerSecond = 0 }, "policy.eventsPerSecond"},
		{"flow logs zero", func(p *Policy) { p.FlowLogsPerSecond = 0 }, "policy.flowLogsPerSecond"},
		{"reconcile too often", func(p *Policy) { p.ReconcileInterval.Duration = time.Millisecond }, "policy.reconcileInterval"},
		{"dns service without namespace", func(p *Policy) { p.DNSService = "kube-dns" }, "policy.dnsService"},
		{"dns service with two slashes", func(p *Policy) { p.DNSService = "a/b/c" }, "policy.dnsService"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mutate(&c.Policy)
			err := c.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), tc.field+" (") {
				t.Errorf("Validate() = %v, want an error naming %s", err, tc.field)
			}
		})
	}
	c := Default()
	c.Policy.ConntrackSize, c.Policy.ReconcileInterval.Duration = 1024, 24*time.Hour
	if err := c.Validate(); err != nil {
		t.Errorf("boundary values rejected: %v", err)
	}
}
