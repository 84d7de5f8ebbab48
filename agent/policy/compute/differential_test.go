package compute_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/autonode/autonode/agent/policy/compute"
	"github.com/autonode/autonode/agent/policy/internal/policytest"
)

// TestDifferential compiles thousands of random clusters and checks, flow by flow, that looking the compiled
// entries up gives the verdict of the reference evaluator in agent/policy/internal/policytest. The seed is fixed so that a failure reproduces.
func TestDifferential(t *testing.T) {
	const cases, flowsPerCase = 3000, 60
	g := policytest.NewGen(20240601, 7)
	var isolatedAllow, isolatedDeny, open int
	for c := range cases {
		in := g.Input()
		res, err := compute.Compute(in)
		if err != nil {
			t.Fatalf("case %d: Compute: %v", c, err)
		}
		checkCanonical(t, fmt.Sprintf("case %d ingress", c), res.Ingress)
		checkCanonical(t, fmt.Sprintf("case %d egress", c), res.Egress)
		for range flowsPerCase {
			f := g.Flow(in)
			want := policytest.Allowed(in, f)
			if got := policytest.Lookup(res, f); got != want {
				t.Fatalf("case %d: flow %v: entries say %v, evaluator says %v\ninput: %s\nresult: %+v", c, f, got, want, policytest.Dump(in), res)
			}
			dir := res.Ingress
			if f.Egress {
				dir = res.Egress
			}
			switch {
			case !dir.Isolated:
				open++
			case want:
				isolatedAllow++
			default:
				isolatedDeny++
			}
		}
		// The result must not depend on the order of policies or peers.
		g.R.Shuffle(len(in.Policies), func(i, j int) { in.Policies[i], in.Policies[j] = in.Policies[j], in.Policies[i] })
		g.R.Shuffle(len(in.Peers), func(i, j int) { in.Peers[i], in.Peers[j] = in.Peers[j], in.Peers[i] })
		again, err := compute.Compute(in)
		if err != nil {
			t.Fatalf("case %d: Compute after shuffle: %v", c, err)
		}
		if !reflect.DeepEqual(res, again) {
			t.Fatalf("case %d: result depends on input order:\n%+v\n%+v", c, res, again)
		}
	}
	t.Logf("%d cases, %d flows: %d unisolated, %d allowed and %d denied by policy", cases, cases*flowsPerCase, open, isolatedAllow, isolatedDeny)
	// Guard against a generator that drifted into testing nothing.
	for name, n := range map[string]int{"unisolated": open, "allowed": isolatedAllow, "denied": isolatedDeny} {
		if n < cases*flowsPerCase/20 {
			t.Errorf("only %d %s flows: the generator no longer covers that verdict", n, name)
		}
	}
}

// checkCanonical checks that entries are strictly sorted, with no two ranges of the same CIDR and protocol that
// overlap or touch, and none beside an all-protocols entry of the same CIDR.
func checkCanonical(t *testing.T, what string, d compute.Direction) {
	t.Helper()
	if !d.Isolated && len(d.Entries) > 0 {
		t.Fatalf("%s: unisolated with %d entries", what, len(d.Entries))
	}
	for i := 1; i < len(d.Entries); i++ {
		a, b := d.Entries[i-1], d.Entries[i]
		if a.CIDR != b.CIDR {
			if a.CIDR.Addr().Compare(b.CIDR.Addr()) > 0 || (a.CIDR.Addr() == b.CIDR.Addr() && a.CIDR.Bits() > b.CIDR.Bits()) {
				t.Fatalf("%s: %v before %v", what, a, b)
			}
			continue
		}
		switch {
		case a.Protocol == compute.ProtocolAny && a.AllPorts():
			t.Fatalf("%s: %v beside %v", what, a, b)
		case a.Protocol > b.Protocol:
			t.Fatalf("%s: %v before %v", what, a, b)
		case a.Protocol == b.Protocol && (a.AllPorts() || int(b.PortStart) <= int(a.PortEnd)+1):
			t.Fatalf("%s: %v and %v not merged", what, a, b)
		}
	}
}
