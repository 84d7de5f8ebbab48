package disruption

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/scheduling"
)

func TestTemplateHash(t *testing.T) {
	base := func() *v1.NodePool {
		return &v1.NodePool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1.NodePoolSpec{Template: v1.NodeClaimTemplate{
			ObjectMeta: v1.TemplateMeta{Labels: map[string]string{"team": "a"}},
			Spec: v1.NodeClaimTemplateSpec{
				NodeClassRef: v1.NodeClassReference{Name: "default"},
				Taints:       []corev1.Taint{{Key: "a", Effect: corev1.TaintEffectNoSchedule}, {Key: "b", Effect: corev1.TaintEffectNoSchedule}},
				ExpireAfter:  &metav1.Duration{Duration: time.Hour},
			},
		}}}
	}
	h := TemplateHash(base())
	for _, tt := range []struct {
		name    string
		mod     func(*v1.NodePool)
		changes bool
	}{
		{"label", func(p *v1.NodePool) { p.Spec.Template.ObjectMeta.Labels["team"] = "b" }, true},
		{"annotation", func(p *v1.NodePool) { p.Spec.Template.ObjectMeta.Annotations = map[string]string{"x": "y"} }, true},
		{"taint", func(p *v1.NodePool) { p.Spec.Template.Spec.Taints[0].Value = "v" }, true},
		{"startup taint", func(p *v1.NodePool) {
			p.Spec.Template.Spec.StartupTaints = []corev1.Taint{{Key: "s", Effect: corev1.TaintEffectNoSchedule}}
		}, true},
		{"node class", func(p *v1.NodePool) { p.Spec.Template.Spec.NodeClassRef.Name = "other" }, true},
		{"taint order", func(p *v1.NodePool) {
			ts := p.Spec.Template.Spec.Taints
			ts[0], ts[1] = ts[1], ts[0]
		}, false},
		{"expireAfter", func(p *v1.NodePool) { p.Spec.Template.Spec.ExpireAfter.Duration = 2 * time.Hour }, false},
		{"requirements", func(p *v1.NodePool) {
			p.Spec.Template.Spec.Requirements = []v1.NodeSelectorRequirementWithMinValues{{Key: "k", Operator: "Exists"}}
		}, false},
		{"disruption", func(p *v1.NodePool) { p.Spec.Disruption.Budgets = []v1.Budget{{Nodes: "1"}} }, false},
	} {
		p := base()
		tt.mod(p)
		if got := TemplateHash(p) != h; got != tt.changes {
			t.Errorf("%s: hash changed = %v, want %v", tt.name, got, tt.changes)
		}
	}
}

func TestDrift(t *testing.T) {
	types := catalog()
	amis := map[string]map[string]string{"default": {"amd64": "ami-new"}}
	tests := []struct {
		name string
		mod  func(*Node, *Pool)
		want string // substring of the reason; "" not drifted
	}{
		{"in sync", func(n *Node, p *Pool) {}, ""},
		{"hash changed", func(n *Node, p *Pool) { p.TemplateHash = "new" }, "template changed"},
		{"hash of another version", func(n *Node, p *Pool) { p.TemplateHash, n.TemplateHashVersion = "new", "v0" }, ""},
		{"requirement no longer holds", func(n *Node, p *Pool) {
			p.Requirements = []scheduling.Requirement{{Key: scheduling.LabelInstanceType, Operator: corev1.NodeSelectorOpIn, Values: []string{"m.4x"}}}
		}, "no longer meets"},
		{"requirement Gt", func(n *Node, p *Pool) {
			n.Labels["gen"] = "4"
			p.Requirements = []scheduling.Requirement{{Key: "gen", Operator: corev1.NodeSelectorOpGt, Values: []string{"4"}}}
		}, "no longer meets"},
		{"requirement on a label the node lacks", func(n *Node, p *Pool) {
			p.Requirements = []scheduling.Requirement{{Key: "absent", Operator: corev1.NodeSelectorOpIn, Values: []string{"x"}}}
		}, ""},
		{"AMI changed", func(n *Node, p *Pool) { n.ImageID = "ami-old" }, "resolves amd64 to ami-new"},
		{"AMI of another arch", func(n *Node, p *Pool) { n.ImageID, n.Arch = "ami-old", "arm64" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := testNode("a", "p", types[1])
			n.TemplateHash, n.ImageID = "h", "ami-new"
			p := testPool("p", types)
			p.TemplateHash = "h"
			tt.mod(n, p)
			got := Drifted(n, p, amis)
			if (got == "") != (tt.want == "") || !strings.Contains(got, tt.want) {
				t.Fatalf("Drifted = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestDriftRollout rolls an AMI change over a pool within its Drifted
// budget: one node at a time, oldest first, each replaced.
func TestDriftRollout(t *testing.T) {
	types := catalog()
	p := testPool("p", types)
	p.Budgets = []Budget{{Nodes: 1, Reasons: []v1.DisruptionReason{v1.ReasonDrifted}}}
	var nodes []*Node
	for i, name := range []string{"a", "b", "c"} {
		n := testNode(name, "p", types[2], testPod("x"+name, 3000))
		n.ImageID = "ami-old"
		n.Created = t0.Add(-time.Duration(10-i) * time.Hour)
		nodes = append(nodes, n)
	}
	c := cluster([]*Pool{p}, nodes...)
	c.AMIs = map[string]map[string]string{"default": {"amd64": "ami-new"}}
	e := mustEngine(Options{})
	for _, want := range []string{"a", "b", "c"} {
		cmd, err := e.Decide(context.Background(), c, t0)
		if err != nil {
			t.Fatal(err)
		}
		if cmd == nil || cmd.Method != MethodDrift || cmd.Candidates[0].Name != want || len(cmd.Replacements) != 1 {
			t.Fatalf("want drift of %s with one replacement, got %v", want, cmd)
		}
		// While it is in flight, the budget of 1 blocks the next.
		cmd.Candidates[0].Disrupting = true
		if next, _ := e.Decide(context.Background(), c, t0); next != nil && next.Method == MethodDrift {
			t.Fatalf("second drift %v while one is in flight with budget 1", next.Decision())
		}
		// Done: the node is replaced by one on the new AMI.
		cmd.Candidates[0].Disrupting, cmd.Candidates[0].ImageID = false, "ami-new"
	}
	if cmd, _ := e.Decide(context.Background(), c, t0); cmd != nil && cmd.Method == MethodDrift {
		t.Fatalf("drift after the rollout: %v", cmd.Decision())
	}
}

func TestExpiry(t *testing.T) {
	types := catalog()
	d := 336 * time.Hour
	n := testNode("old", "p", types[2], testPod("x", 1000))
	n.ExpireAfter, n.Created = &d, t0.Add(-d)
	young := testNode("young", "p", types[2], testPod("y", 3500))
	young.ExpireAfter, young.Created = &d, t0.Add(-d+time.Minute)
	// do-not-disrupt does not stop expiry: it is forceful.
	n.DoNotDisrupt = true
	p := testPool("p", types)
	p.ConsolidateAfter = nil
	c := cluster([]*Pool{p}, n, young)
	cmd, err := mustEngine(Options{}).Decide(context.Background(), c, t0)
	if err != nil {
		t.Fatal(err)
	}
	if cmd == nil || cmd.Method != MethodExpiry || cmd.Candidates[0].Name != "old" || !cmd.Forceful() {
		t.Fatalf("want expiry of old, got %v", cmd)
	}
	// A budget naming Expired with 0 blocks it.
	p.Budgets = append(p.Budgets, Budget{Nodes: 0, Reasons: []v1.DisruptionReason{v1.ReasonExpired}})
	if cmd, _ := mustEngine(Options{}).Decide(context.Background(), c, t0); cmd != nil {
		t.Fatalf("expiry past a zero Expired budget: %v", cmd.Decision())
	}
	// The drain deadline is terminationGracePeriod after the start.
	tgp := time.Hour
	n.TerminationGracePeriod = &tgp
	if dl, ok := DrainDeadline(&Command{Reason: v1.ReasonExpired}, n, t0); !ok || !dl.Equal(t0.Add(time.Hour)) {
		t.Errorf("forceful drain deadline = %v %v", dl, ok)
	}
	if _, ok := DrainDeadline(&Command{Reason: v1.ReasonDrifted}, n, t0); ok {
		t.Error("graceful drain has a deadline")
	}
}

func TestRepair(t *testing.T) {
	types := catalog()
	cond := func(typ string, s corev1.ConditionStatus, ago time.Duration) Condition {
		return Condition{Type: corev1.NodeConditionType(typ), Status: s, Since: t0.Add(-ago)}
	}
	tests := []struct {
		name  string
		conds []Condition
		// others unhealthy in the 10-node pool, besides the node tested
		others int
		want   bool
	}{
		{"healthy", []Condition{cond("Ready", corev1.ConditionTrue, time.Hour)}, 0, false},
		{"not ready 29m", []Condition{cond("Ready", corev1.ConditionFalse, 29*time.Minute)}, 0, false},
		{"not ready 30m", []Condition{cond("Ready", corev1.ConditionFalse, 30*time.Minute)}, 0, true},
		{"ready unknown 31m", []Condition{cond("Ready", corev1.ConditionUnknown, 31*time.Minute)}, 0, true},
		{"kernel 30m", []Condition{cond("KernelReady", corev1.ConditionFalse, 30*time.Minute)}, 0, true},
		{"networking 20m", []Condition{cond("NetworkingReady", corev1.ConditionFalse, 20*time.Minute)}, 0, false},
		{"storage unknown is tolerated", []Condition{cond("StorageReady", corev1.ConditionUnknown, 2*time.Hour)}, 0, false},
		{"container runtime 1h", []Condition{cond("ContainerRuntimeReady", corev1.ConditionFalse, time.Hour)}, 0, true},
		{"accelerator 10m", []Condition{cond("AcceleratedHardwareReady", corev1.ConditionFalse, 10*time.Minute)}, 0, true},
		{"accelerator 9m", []Condition{cond("AcceleratedHardwareReady", corev1.ConditionFalse, 9*time.Minute)}, 0, false},
		{"guard: 2 of 10 unhealthy", []Condition{cond("Ready", corev1.ConditionFalse, time.Hour)}, 1, true},
		{"guard: 3 of 10 unhealthy", []Condition{cond("Ready", corev1.ConditionFalse, time.Hour)}, 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPool("p", types)
			p.ConsolidateAfter = nil
			var nodes []*Node
			for i := range 10 {
				n := testNode(string(rune('a'+i)), "p", types[1], testPod(string(rune('a'+i))+"-pod", 500))
				switch {
				case i == 0:
					n.Conditions = tt.conds
				case i <= tt.others:
					// Unhealthy, but within toleration.
					n.Conditions = []Condition{cond("KernelReady", corev1.ConditionFalse, time.Minute)}
				}
				nodes = append(nodes, n)
			}
			cmd, err := mustEngine(Options{}).Decide(context.Background(), cluster([]*Pool{p}, nodes...), t0)
			if err != nil {
				t.Fatal(err)
			}
			got := cmd != nil && cmd.Method == MethodRepair && cmd.Candidates[0].Name == "a"
			if got != tt.want {
				t.Fatalf("repair = %v (%v), want %v", got, cmd, tt.want)
			}
		})
	}
}

func TestNewPDB(t *testing.T) {
	pods := []*corev1.Pod{}
	for i, ready := range []bool{true, true, true, false} {
		p := testPod(string(rune('a'+i)), 100, withLabels("app", "web")).Pod
		if !ready {
			p.Status.Conditions[0].Status = corev1.ConditionFalse
		}
		pods = append(pods, p)
	}
	pods = append(pods, testPod("other", 100).Pod)
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	is := intstr.FromInt32
	ps := intstr.FromString
	for _, tt := range []struct {
		name     string
		min, max *intstr.IntOrString
		status   *int32
		want     int
	}{
		{"minAvailable 2", ptr(is(2)), nil, nil, 1},       // 3 healthy - 2
		{"minAvailable 75%", ptr(ps("75%")), nil, nil, 0}, // ceil(3) of 4 expected
		{"maxUnavailable 1", nil, ptr(is(1)), nil, 0},     // 4-1=3 desired, 3 healthy
		{"maxUnavailable 50%", nil, ptr(ps("50%")), nil, 1},
		{"fresh status wins", ptr(is(2)), nil, ptr(int32(7)), 7},
	} {
		b := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Generation: 2},
			Spec: policyv1.PodDisruptionBudgetSpec{Selector: sel, MinAvailable: tt.min, MaxUnavailable: tt.max}}
		if tt.status != nil {
			b.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 2, DisruptionsAllowed: *tt.status}
		}
		got, err := NewPDB(b, pods)
		if err != nil {
			t.Fatal(err)
		}
		if got.Allowed != tt.want {
			t.Errorf("%s: allowed %d, want %d", tt.name, got.Allowed, tt.want)
		}
	}
	bad := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: "default"},
		Spec: policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}}}
	if _, err := NewPDB(bad, pods); err == nil || !strings.Contains(err.Error(), "default/bad") {
		t.Errorf("bad selector: %v", err)
	}
}

// TestPDBBlocksDrain: a drifted node whose pods' PDB allows no disruption
// is left alone, and goes once the PDB allows one; multi-node
// consolidation never takes more pods of a PDB than it allows.
func TestPDBBlocksDrain(t *testing.T) {
	types := catalog()
	n := testNode("a", "p", types[2], testPod("db-0", 1000, withLabels("app", "db")))
	n.ImageID = "ami-old"
	p := testPool("p", types)
	p.ConsolidateAfter = nil
	c := cluster([]*Pool{p}, n)
	c.AMIs = map[string]map[string]string{"default": {"amd64": "ami-new"}}
	c.PDBs = []*PDB{pdb("db", 0, "app", "db")}
	e := mustEngine(Options{})
	if cmd, _ := e.Decide(context.Background(), c, t0); cmd != nil {
		t.Fatalf("disrupted past a PDB: %v", cmd.Decision())
	}
	c.PDBs[0].Allowed = 1
	if cmd, _ := e.Decide(context.Background(), c, t0); cmd == nil || cmd.Method != MethodDrift {
		t.Fatalf("want drift once the PDB allows, got %v", cmd)
	}

	// Three nodes with one db pod each and a PDB allowing 2: multi-node
	// takes at most two of them.
	var nodes []*Node
	for _, name := range []string{"a", "b", "c"} {
		nodes = append(nodes, testNode(name, "p", types[2], testPod("db-"+name, 500, withLabels("app", "db"))))
	}
	c = cluster([]*Pool{testPool("p", types)}, nodes...)
	c.PDBs = []*PDB{pdb("db", 2, "app", "db")}
	cmd, err := e.Decide(context.Background(), c, t0)
	if err != nil {
		t.Fatal(err)
	}
	if cmd == nil || len(cmd.Candidates) != 2 {
		t.Fatalf("want two of three nodes consolidated, got %v", cmd)
	}
}

// TestOrdering: candidates go by savings per disruption cost.
func TestOrdering(t *testing.T) {
	types := catalog()
	cheapBusy := testNode("a", "p", types[3], testPod("a1", 200), testPod("a2", 200), testPod("a3", 200)) // $0.40 / 4
	pricey := testNode("b", "p", types[3], testPod("b1", 200))                                            // $0.40 / 2
	costly := testNode("c", "p", types[3], testPod("c1", 200, withAnnotation(annotationPodDeletionCost, "1000000000")))
	r := mustEngine(Options{}).newRound(cluster([]*Pool{testPool("p", types)}, cheapBusy, pricey, costly), t0)
	var got []string
	for _, n := range r.underutilized() {
		got = append(got, n.Name)
	}
	if strings.Join(got, ",") != "b,a,c" {
		t.Fatalf("order %v, want b,a,c", got)
	}
}

func TestValidate(t *testing.T) {
	types := catalog()
	build := func() *Cluster {
		return cluster([]*Pool{testPool("p", types)},
			testNode("a", "p", typeNamed(types, "m.16x"), testPod("x", 1500), testPod("y", 1000)))
	}
	e := mustEngine(Options{})
	cmd, err := e.Decide(context.Background(), build(), t0)
	if err != nil || cmd == nil {
		t.Fatalf("decide: %v %v", cmd, err)
	}
	later := t0.Add(15 * time.Second)
	if got, err := e.Validate(context.Background(), build(), cmd, later); err != nil || got == nil {
		t.Fatalf("unchanged cluster: %v", err)
	}
	for _, tt := range []struct {
		name string
		mod  func(c *Cluster)
		want string
	}{
		{"node gone", func(c *Cluster) { c.Nodes = nil }, "gone"},
		{"pod event within consolidateAfter", func(c *Cluster) {
			d := time.Minute
			c.Pools["p"].ConsolidateAfter = &d
			c.Nodes[0].LastPodEvent = later.Add(-time.Second)
		}, "no longer a consolidation candidate"},
		{"do-not-disrupt pod arrived", func(c *Cluster) {
			c.Nodes[0].Pods = append(c.Nodes[0].Pods, testPod("z", 100, withAnnotation(AnnotationDoNotDisrupt, "true")))
		}, "no longer a consolidation candidate"},
		{"pods grew past the cheaper types", func(c *Cluster) {
			c.Nodes[0].Pods = append(c.Nodes[0].Pods, testPod("big", 13000))
		}, "no longer finds"},
		{"budget closed", func(c *Cluster) { c.Pools["p"].Budgets = []Budget{{Nodes: 0}} }, "budget"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := build()
			tt.mod(c)
			_, err := e.Validate(context.Background(), c, cmd, later)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errorsIs(err, ErrInvalidated) {
				t.Fatalf("err %v, want ErrInvalidated with %q", err, tt.want)
			}
		})
	}
}

func TestStampTemplateHash(t *testing.T) {
	pool := &v1.NodePool{ObjectMeta: metav1.ObjectMeta{Name: "p"}}
	claim := &v1.NodeClaim{}
	StampTemplateHash(claim, pool)
	n := &Node{TemplateHash: claim.Annotations[AnnotationNodePoolHash], TemplateHashVersion: claim.Annotations[AnnotationNodePoolHashVersion]}
	p := &Pool{Name: "p", TemplateHash: TemplateHash(pool)}
	if why := Drifted(n, p, nil); why != "" {
		t.Fatalf("fresh claim drifted: %s", why)
	}
	pool.Spec.Template.ObjectMeta.Labels = map[string]string{"team": "b"}
	p.TemplateHash = TemplateHash(pool)
	if why := Drifted(n, p, nil); !strings.Contains(why, "template changed") {
		t.Fatalf("after a label change: %q", why)
	}
}
