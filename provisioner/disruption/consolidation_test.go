package disruption

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/scheduling"
)

func TestConsolidationMethods(t *testing.T) {
	types := catalog()
	tests := []struct {
		name string
		opts Options
		// build returns the cluster; pods on nodes name their nodes.
		build      func() *Cluster
		wantMethod string
		wantReason v1.DisruptionReason
		wantCands  []string
		wantRepl   int
		// wantMaxReplType is the dearest type a replacement may launch as.
		wantReplTypes []string
	}{
		{
			name: "empty node deleted",
			build: func() *Cluster {
				return cluster([]*Pool{testPool("p", types)},
					testNode("a", "p", typeNamed(types, "m.4x"), testPod("x", 1000)),
					testNode("b", "p", typeNamed(types, "m.2x"), daemonPod("ds-b")))
			},
			wantMethod: MethodEmptiness, wantReason: v1.ReasonEmpty, wantCands: []string{"b"},
		},
		{
			name: "single node deleted when its pods fit elsewhere",
			build: func() *Cluster {
				// a cannot go (do-not-disrupt), so only b is a candidate.
				a := testNode("a", "p", typeNamed(types, "m.4x"), testPod("x", 1000))
				a.DoNotDisrupt = true
				return cluster([]*Pool{testPool("p", types)}, a,
					testNode("b", "p", typeNamed(types, "m.2x"), testPod("y", 500)))
			},
			wantMethod: MethodSingleNode, wantReason: v1.ReasonUnderutilized, wantCands: []string{"b"},
		},
		{
			name: "two nodes to one",
			build: func() *Cluster {
				return cluster([]*Pool{testPool("p", types)},
					testNode("a", "p", typeNamed(types, "m.4x"), testPod("x", 1000)),
					testNode("b", "p", typeNamed(types, "m.2x"), testPod("y", 500)))
			},
			// One new node (m.2x, $0.10; m.4x also saves) holds both nodes'
			// pods: cheaper than $0.30.
			wantMethod: MethodMultiNode, wantReason: v1.ReasonUnderutilized, wantCands: []string{"a", "b"}, wantRepl: 1,
			wantReplTypes: []string{"m.2x", "m.4x"},
		},
		{
			name: "single node replaced with a cheaper type",
			build: func() *Cluster {
				return cluster([]*Pool{testPool("p", types)},
					testNode("a", "p", typeNamed(types, "m.16x"), testPod("x", 1500), testPod("y", 1000)))
			},
			wantMethod: MethodSingleNode, wantReason: v1.ReasonUnderutilized, wantCands: []string{"a"}, wantRepl: 1,
			// 2.5 vCPU needs m.4x ($0.20); m.8x ($0.40) also fits and saves,
			// so both stay launchable.
			wantReplTypes: []string{"m.4x", "m.8x"},
		},
		{
			name: "minimum improvement narrows the replacement types",
			opts: Options{MinPriceImprovement: 0.5},
			build: func() *Cluster {
				return cluster([]*Pool{testPool("p", types)},
					testNode("a", "p", typeNamed(types, "m.16x"), testPod("x", 1500), testPod("y", 1000)))
			},
			wantMethod: MethodSingleNode, wantReason: v1.ReasonUnderutilized, wantCands: []string{"a"}, wantRepl: 1,
			wantReplTypes: []string{"m.4x"},
		},
		{
			name: "minimum improvement not met",
			opts: Options{MinPriceImprovementPercent: 90},
			build: func() *Cluster {
				return cluster([]*Pool{testPool("p", types)},
					testNode("a", "p", typeNamed(types, "m.8x"), testPod("x", 2500)))
			},
		},
		{
			name: "multi-node: three half-empty nodes to one",
			build: func() *Cluster {
				return cluster([]*Pool{testPool("p", types)},
					testNode("a", "p", typeNamed(types, "m.4x"), testPod("x", 1000)),
					testNode("b", "p", typeNamed(types, "m.4x"), testPod("y", 1000)),
					testNode("c", "p", typeNamed(types, "m.4x"), testPod("z", 1000)))
			},
			wantMethod: MethodMultiNode, wantReason: v1.ReasonUnderutilized, wantCands: []string{"a", "b", "c"}, wantRepl: 1,
			wantReplTypes: []string{"m.4x", "m.8x"},
		},
		{
			name: "one to many is off by default",
			build: func() *Cluster {
				return cluster([]*Pool{testPool("p", types)}, oneToManyNode(types))
			},
		},
		{
			name: "one to many with the switch on",
			opts: Options{OneToMany: true},
			build: func() *Cluster {
				return cluster([]*Pool{testPool("p", types)}, oneToManyNode(types))
			},
			wantMethod: MethodSingleNode, wantReason: v1.ReasonUnderutilized, wantCands: []string{"big"}, wantRepl: 2,
		},
		{
			name: "do-not-disrupt pod blocks",
			build: func() *Cluster {
				return cluster([]*Pool{testPool("p", types)},
					testNode("a", "p", typeNamed(types, "m.16x"), testPod("x", 1000, withAnnotation(AnnotationDoNotDisrupt, "true"))))
			},
		},
		{
			name: "do-not-disrupt node blocks",
			build: func() *Cluster {
				n := testNode("a", "p", typeNamed(types, "m.16x"))
				n.DoNotDisrupt = true
				return cluster([]*Pool{testPool("p", types)}, n)
			},
		},
		{
			name: "consolidateAfter not yet passed",
			build: func() *Cluster {
				p := testPool("p", types)
				d := time.Minute
				p.ConsolidateAfter = &d
				n := testNode("a", "p", typeNamed(types, "m.16x"))
				n.LastPodEvent = t0.Add(-30 * time.Second)
				return cluster([]*Pool{p}, n)
			},
		},
		{
			name: "consolidateAfter Never",
			build: func() *Cluster {
				p := testPool("p", types)
				p.ConsolidateAfter = nil
				return cluster([]*Pool{p}, testNode("a", "p", typeNamed(types, "m.16x")))
			},
		},
		{
			name: "WhenEmpty pool does not replace",
			build: func() *Cluster {
				p := testPool("p", types)
				p.Policy = v1.ConsolidationWhenEmpty
				return cluster([]*Pool{p}, testNode("a", "p", typeNamed(types, "m.16x"), testPod("x", 1000)))
			},
		},
		{
			name: "PDB with no disruptions allowed blocks",
			build: func() *Cluster {
				c := cluster([]*Pool{testPool("p", types)},
					testNode("a", "p", typeNamed(types, "m.16x"), testPod("x", 1000, withLabels("app", "db"))))
				c.PDBs = []*PDB{pdb("db", 0, "app", "db")}
				return c
			},
		},
		{
			name: "budget of zero blocks",
			build: func() *Cluster {
				p := testPool("p", types)
				p.Budgets = []Budget{{Nodes: 0}}
				return cluster([]*Pool{p}, testNode("a", "p", typeNamed(types, "m.2x")))
			},
		},
		{
			name: "uninitialized and disrupting nodes are not candidates",
			build: func() *Cluster {
				a := testNode("a", "p", typeNamed(types, "m.2x"))
				a.Initialized = false
				b := testNode("b", "p", typeNamed(types, "m.2x"))
				b.Disrupting = true
				return cluster([]*Pool{testPool("p", types)}, a, b)
			},
		},
		{
			name: "pods that fit nowhere keep their node",
			build: func() *Cluster {
				// Only m.1x may be launched: the 3-vCPU pod cannot move.
				small := []*Node{testNode("a", "p", typeNamed(types, "m.4x"), testPod("x", 3000))}
				return cluster([]*Pool{testPool("p", types[:1])}, small...)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := mustEngine(tt.opts)
			cmd, err := e.Decide(context.Background(), tt.build(), t0)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantMethod == "" {
				if cmd != nil {
					t.Fatalf("got %s, want no command", cmd.Decision())
				}
				return
			}
			if cmd == nil {
				t.Fatalf("no command, want %s", tt.wantMethod)
			}
			if cmd.Method != tt.wantMethod || cmd.Reason != tt.wantReason {
				t.Errorf("method %s reason %s, want %s %s (%s)", cmd.Method, cmd.Reason, tt.wantMethod, tt.wantReason, cmd.Decision())
			}
			got := candidateNames(cmd)
			slices.Sort(got)
			if !slices.Equal(got, tt.wantCands) {
				t.Errorf("candidates %v, want %v", got, tt.wantCands)
			}
			if len(cmd.Replacements) != tt.wantRepl {
				t.Fatalf("%d replacements, want %d (%s)", len(cmd.Replacements), tt.wantRepl, cmd.Decision())
			}
			if tt.wantReplTypes != nil {
				var names []string
				for _, it := range cmd.Replacements[0].InstanceTypes {
					names = append(names, it.Name)
				}
				if !slices.Equal(names, tt.wantReplTypes) {
					t.Errorf("replacement types %v, want %v", names, tt.wantReplTypes)
				}
			}
			if cmd.Savings() <= 0 {
				t.Errorf("savings %v, want > 0", cmd.Savings())
			}
			if cmd.Savings() < tt.opts.MinPriceImprovement {
				t.Errorf("savings %v below the minimum %v", cmd.Savings(), tt.opts.MinPriceImprovement)
			}
			// Every moved pod has a place in the plan.
			for _, n := range cmd.Candidates {
				for _, p := range n.Reschedulable() {
					if cmd.Placement[p.Pod.UID] == "" {
						t.Errorf("pod %s has no place in the plan", p.Pod.Name)
					}
				}
			}
		})
	}
}

// oneToManyNode is a 16-vCPU node whose two pods refuse to share a node
// (hostname anti-affinity), so a single replacement cannot hold them but
// two m.2x can, for $0.20 instead of $0.80.
func oneToManyNode(types []*scheduling.InstanceType) *Node {
	anti := func(p *corev1.Pod) {
		p.Labels["role"] = "solo"
		p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
				TopologyKey: corev1.LabelHostname, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "solo"}}}}}}
	}
	return testNode("big", "p", typeNamed(types, "m.16x"), testPod("s1", 1500, anti), testPod("s2", 1500, anti))
}
