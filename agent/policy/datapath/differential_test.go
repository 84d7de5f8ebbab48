package datapath

import (
	"context"
	"testing"

	"github.com/autonode/autonode/agent/policy/compute"
	"github.com/autonode/autonode/agent/policy/internal/policytest"
)

// TestDifferential programs thousands of random clusters (fixed seed) into the BPF maps and checks, flow by flow
// through BPF_PROG_TEST_RUN, that the programs give the verdict of the reference evaluator in
// agent/policy/internal/policytest, which reads the NetworkPolicy spec and shares no code with compute or the
// conversion to map entries.
func TestDifferential(t *testing.T) {
	d := openTest(t, Config{})
	ctx := context.Background()
	name, _ := dummyLink(t)
	const cases, flowsPerCase = 3000, 60
	g := policytest.NewGen(20261126, 4)
	counts := map[bool]int{}
	for c := range cases {
		in := g.Input()
		res, err := compute.Compute(in)
		if err != nil {
			t.Fatalf("case %d: Compute: %v", c, err)
		}
		err = d.Program(ctx, PodRules{HostIf: name, Namespace: in.Pod.Namespace, Name: in.Pod.Name, IP: in.Pod.IP,
			Ingress: res.Ingress, Egress: res.Egress})
		if err != nil {
			t.Fatalf("case %d: Program: %v\ninput: %s", c, err, policytest.Dump(in))
		}
		for range flowsPerCase {
			f := g.Flow(in)
			want := policytest.Allowed(in, f)
			dir := Ingress
			if f.Egress {
				dir = Egress
			}
			v, err := d.Check(ctx, name, dir, Flow{Peer: f.Peer, Protocol: f.Proto, Port: f.Port})
			if err != nil {
				t.Fatalf("case %d: Check %v: %v", c, f, err)
			}
			if v.Allowed != want {
				t.Fatalf("case %d: flow %v: datapath says %v, evaluator says %v\ninput: %s\nresult: %+v", c, f, v, want,
					policytest.Dump(in), res)
			}
			counts[want]++
		}
	}
	t.Logf("%d cases: %d flows allowed, %d denied", cases, counts[true], counts[false])
	if counts[true] < cases*flowsPerCase/10 || counts[false] < cases*flowsPerCase/10 {
		t.Errorf("verdicts too lopsided to test anything: %v", counts)
	}
}
