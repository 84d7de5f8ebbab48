package reporter

import (
	"context"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/autonode/autonode/health"
)

func TestReportNeverBlocks(t *testing.T) {
	r, err := New(Options{Client: fake.NewClientset(), NodeName: func() string { return "n" }, QueueSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	// Run is not running: the queue fills and the rest are dropped.
	for range 10 {
		r.Report(context.Background(), health.Signal{Reason: health.ReasonOOMKill, Severity: health.Warning})
	}
	if r.Dropped() != 6 {
		t.Errorf("Dropped() = %d, want 6", r.Dropped())
	}
	if r.Ready() == nil {
		t.Error("ready before any write")
	}
}

func TestNewNeedsClientAndNodeName(t *testing.T) {
	if _, err := New(Options{NodeName: func() string { return "n" }}); err == nil {
		t.Error("New without a client succeeded")
	}
	if _, err := New(Options{Client: fake.NewClientset()}); err == nil {
		t.Error("New without NodeName succeeded")
	}
}

func TestEventName(t *testing.T) {
	tests := []struct{ node, reason, want string }{
		{"i-0abc", "ContainerdUnresponsive", "i-0abc.autonode-containerdunresponsive"},
		{"ip-10-0-0-1.ec2.internal", "OOMKill", "ip-10-0-0-1.ec2.internal.autonode-oomkill"},
		{"n", "Made Up!", "n.autonode-made-up"},
		{"n", "Ünïcode_reason", "n.autonode-n-code-reason"},
	}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			if got := eventName(tt.node, tt.reason); got != tt.want {
				t.Errorf("eventName(%q, %q) = %q, want %q", tt.node, tt.reason, got, tt.want)
			}
		})
	}
}

func TestEventNameOfALongNode(t *testing.T) {
	a := eventName(strings.Repeat("a", 250), "OOMKill")
	b := eventName(strings.Repeat("a", 249)+"b", "OOMKill")
	for _, n := range []string{a, b} {
		if len(n) > 253 || !strings.HasSuffix(n, ".autonode-oomkill") {
			t.Errorf("eventName = %q (%d bytes)", n, len(n))
		}
	}
	if a == b {
		t.Errorf("two long node names share the event name %q", a)
	}
}
