package scheduling

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

// testTypes is a small catalog: on-demand in three zones, spot at 30% in
// two of them.
func testTypes() []*InstanceType {
	mk := func(name, arch string, cpu, memGiB, pods int64, price float64, ext Resources, labels map[string]string) *InstanceType {
		var capa Resources
		capa[CPU], capa[Memory], capa[Pods], capa[EphemeralStorage] = cpu*1000, memGiB<<30, pods, 20<<30
		for i := NvidiaGPU; i < NumResources; i++ {
			capa[i] = ext[i]
		}
		alloc := capa
		alloc[CPU] -= 100
		alloc[Memory] -= 256 << 20
		alloc[EphemeralStorage] -= 2 << 30
		l := map[string]string{"autonode.dev/instance-cpu": resource.NewQuantity(cpu, resource.DecimalSI).String(),
			"autonode.dev/instance-family": strings.Split(name, "-")[0]}
		for k, v := range labels {
			l[k] = v
		}
		it := &InstanceType{Name: name, Arch: arch, Capacity: capa, Allocatable: alloc, Labels: l}
		for _, z := range []string{"test-a", "test-b", "test-c"} {
			it.Offerings = append(it.Offerings, Offering{Zone: z, CapacityType: CapacityTypeOnDemand, Price: price, Available: true})
		}
		for _, z := range []string{"test-a", "test-b"} {
			it.Offerings = append(it.Offerings, Offering{Zone: z, CapacityType: CapacityTypeSpot, Price: price * 0.3, Available: true})
		}
		return it
	}
	return []*InstanceType{
		mk("s-2", "amd64", 2, 4, 4, 0.10, Resources{}, nil),
		mk("m-4", "amd64", 4, 16, 8, 0.20, Resources{}, nil),
		mk("l-8", "amd64", 8, 32, 16, 0.40, Resources{}, nil),
		mk("arm-4", "arm64", 4, 16, 8, 0.16, Resources{}, nil),
		mk("gpu-8", "amd64", 8, 32, 16, 1.00, Resources{NvidiaGPU: 1, EFA: 1}, map[string]string{"autonode.dev/instance-gpu-name": "t4"}),
		mk("inf-8", "amd64", 8, 32, 16, 0.90, Resources{Neuron: 1, NeuronCore: 2}, nil),
	}
}

func defaultPool() NodePool { return NodePool{Name: "default", InstanceTypes: testTypes()} }

func existing(name, zone string, freeCPU string, pods ...*corev1.Pod) ExistingNode {
	var alloc Resources
	alloc[CPU], alloc[Memory], alloc[Pods] = 8000, 32<<30, 50
	var used Resources
	free := resource.MustParse(freeCPU)
	used[CPU] = alloc[CPU] - free.MilliValue()
	for _, p := range pods {
		r, _ := PodRequests(p)
		used[Memory] += r[Memory]
		used[Pods]++
	}
	return ExistingNode{Name: name, Labels: map[string]string{LabelZone: zone, LabelHostname: name, LabelArch: "amd64"},
		Allocatable: alloc, Requested: used, Pods: pods}
}

// scheduled maps pod name to the node it went on ("" when unschedulable).
func scheduled(res Result) map[string]string {
	out := map[string]string{}
	for n, ps := range res.Existing {
		for _, p := range ps {
			out[p.Name] = n
		}
	}
	for _, n := range res.NewNodes {
		for _, p := range n.Pods {
			out[p.Name] = n.Name
		}
	}
	for _, e := range res.Unschedulable {
		out[e.Pod.Name] = ""
	}
	return out
}

func newNode(res Result, name string) *NewNode {
	for i := range res.NewNodes {
		if res.NewNodes[i].Name == name {
			return &res.NewNodes[i]
		}
	}
	return nil
}

func nodeOf(t *testing.T, res Result, pod string) *NewNode {
	t.Helper()
	n := newNode(res, scheduled(res)[pod])
	if n == nil {
		t.Fatalf("pod %s is not on a new node: %v", pod, scheduled(res))
	}
	return n
}

func replicas(n int, o podOpts) []*corev1.Pod {
	var out []*corev1.Pod
	base := o.name
	for i := range n {
		o.name = base + "-" + string(rune('0'+i))
		out = append(out, mkPod(o))
	}
	return out
}

func zonesOf(res Result, pods []*corev1.Pod) map[string]int {
	out := map[string]int{}
	where := scheduled(res)
	for _, p := range pods {
		if n := newNode(res, where[p.Name]); n != nil && len(n.Zones) == 1 {
			out[n.Zones[0]]++
		}
	}
	return out
}

func wantUnschedulable(t *testing.T, res Result, pod, errPart string) {
	t.Helper()
	for _, e := range res.Unschedulable {
		if e.Pod.Name == pod {
			if !strings.Contains(e.Err.Error(), errPart) {
				t.Fatalf("pod %s: error %q lacks %q", pod, e.Err, errPart)
			}
			if !strings.Contains(e.Err.Error(), pod) {
				t.Fatalf("pod %s: error %q does not name the pod", pod, e.Err)
			}
			return
		}
	}
	t.Fatalf("pod %s was scheduled (%v), want unschedulable", pod, scheduled(res))
}

func wantAllScheduled(t *testing.T, res Result) {
	t.Helper()
	if len(res.Unschedulable) > 0 {
		t.Fatalf("%d unschedulable, first: %v", len(res.Unschedulable), res.Unschedulable[0].Err)
	}
}

type scenario struct {
	name    string
	pods    []*corev1.Pod
	nodes   []ExistingNode
	pools   []NodePool
	daemons []*corev1.Pod
	volumes map[types.UID][]Requirement
	check   func(t *testing.T, res Result)
}

func runScenarios(t *testing.T, scenarios []scenario) {
	t.Helper()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			in := Input{Pods: sc.pods, Nodes: sc.nodes, NodePools: sc.pools, DaemonSets: sc.daemons, VolumeRequirements: sc.volumes}
			if in.NodePools == nil {
				in.NodePools = []NodePool{defaultPool()}
			}
			res, err := Solve(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			verify(t, in, res)
			sc.check(t, res)
		})
	}
}

func gpu(n string) corev1.ResourceList {
	return corev1.ResourceList{ResourceNvidiaGPU: resource.MustParse(n)}
}

func TestResourcesAndTypes(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "one pod gets the cheapest type at its cheapest offering",
			pods: []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1", mem: "1Gi"})},
			check: func(t *testing.T, res Result) {
				n := nodeOf(t, res, "p")
				if n.InstanceTypes[0].Name != "s-2" || n.Price != 0.03 {
					t.Fatalf("got %s at %v, want s-2 at spot 0.03", n.InstanceTypes[0].Name, n.Price)
				}
				for i := 1; i < len(n.InstanceTypes); i++ {
					if n.InstanceTypes[i].Offerings[0].Price < n.InstanceTypes[i-1].Offerings[0].Price {
						t.Fatalf("types not cheapest first: %v", n.Requirements[0].Values)
					}
				}
			}},
		{name: "pods pack onto one node",
			pods: replicas(3, podOpts{name: "p", cpu: "1", mem: "1Gi"}),
			check: func(t *testing.T, res Result) {
				wantAllScheduled(t, res)
				if len(res.NewNodes) != 1 || res.NewNodes[0].InstanceTypes[0].Name != "arm-4" {
					t.Fatalf("got %d nodes (%v), want one arm-4", len(res.NewNodes), scheduled(res))
				}
			}},
		{name: "memory picks the type",
			pods: []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "500m", mem: "10Gi"})},
			check: func(t *testing.T, res Result) {
				if got := nodeOf(t, res, "p").InstanceTypes[0].Name; got != "arm-4" {
					t.Fatalf("got %s, want arm-4", got)
				}
			}},
		{name: "max pods bounds a node",
			pods: replicas(9, podOpts{name: "p", cpu: "10m", mem: "10Mi"}),
			check: func(t *testing.T, res Result) {
				wantAllScheduled(t, res)
				for _, n := range res.NewNodes {
					if int64(len(n.Pods)) > n.InstanceTypes[0].Allocatable[Pods] {
						t.Fatalf("%s holds %d pods", n.Name, len(n.Pods))
					}
				}
			}},
		{name: "a GPU pod gets a GPU type",
			pods: []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1", mem: "1Gi", extra: gpu("1")})},
			check: func(t *testing.T, res Result) {
				if n := nodeOf(t, res, "p"); n.InstanceTypes[0].Name != "gpu-8" || len(n.InstanceTypes) != 1 {
					t.Fatalf("got %v, want only gpu-8", n.Requirements[0].Values)
				}
			}},
		{name: "neuron cores and EFA",
			pods: []*corev1.Pod{
				mkPod(podOpts{name: "neuron", cpu: "1", extra: corev1.ResourceList{ResourceNeuronCore: resource.MustParse("2")}}),
				mkPod(podOpts{name: "efa", cpu: "1", extra: corev1.ResourceList{ResourceEFA: resource.MustParse("1")}}),
			},
			check: func(t *testing.T, res Result) {
				if got := nodeOf(t, res, "neuron").InstanceTypes[0].Name; got != "inf-8" {
					t.Fatalf("neuron pod on %s", got)
				}
				if got := nodeOf(t, res, "efa").InstanceTypes[0].Name; got != "gpu-8" {
					t.Fatalf("efa pod on %s", got)
				}
			}},
		{name: "more GPUs or ephemeral storage than any type has",
			pods: []*corev1.Pod{
				mkPod(podOpts{name: "gpus", extra: gpu("2")}),
				mkPod(podOpts{name: "disk", extra: corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse("100Gi")}}),
			},
			check: func(t *testing.T, res Result) {
				wantUnschedulable(t, res, "gpus", "no instance type")
				wantUnschedulable(t, res, "disk", "no instance type")
			}},
		{name: "a resource the scheduler does not model",
			pods:  []*corev1.Pod{mkPod(podOpts{name: "p", extra: corev1.ResourceList{"example.com/fpga": resource.MustParse("1")}})},
			check: func(t *testing.T, res Result) { wantUnschedulable(t, res, "p", "example.com/fpga") }},
	})
}

func TestNodeSelectionConstraints(t *testing.T) {
	runScenarios(t, []scenario{
		{name: "nodeSelector on arch",
			pods: []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1", nodeSelector: map[string]string{LabelArch: "amd64"}})},
			check: func(t *testing.T, res Result) {
				n := nodeOf(t, res, "p")
				if slices.Contains(n.Requirements[0].Values, "arm-4") || n.Labels[LabelArch] != "amd64" {
					t.Fatalf("types %v, labels %v", n.Requirements[0].Values, n.Labels)
				}
			}},
		{name: "nodeSelector on zone",
			pods: []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1", nodeSelector: map[string]string{LabelZone: "test-b"}})},
			check: func(t *testing.T, res Result) {
				if n := nodeOf(t, res, "p"); !slices.Equal(n.Zones, []string{"test-b"}) || n.Labels[LabelZone] != "test-b" {
					t.Fatalf("zones %v", n.Zones)
				}
			}},
		{name: "capacity type through node affinity",
			pods: []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1", required: []corev1.NodeSelectorRequirement{
				{Key: LabelCapacityType, Operator: corev1.NodeSelectorOpIn, Values: []string{CapacityTypeOnDemand}}}})},
			check: func(t *testing.T, res Result) {
				if n := nodeOf(t, res, "p"); !slices.Equal(n.CapacityTypes, []string{CapacityTypeOnDemand}) || n.Price != 0.10 {
					t.Fatalf("capacity types %v price %v", n.CapacityTypes, n.Price)
				}
			}},
		{name: "ORed terms, Gt on a type label",
			pods: []*corev1.Pod{func() *corev1.Pod {
				p := mkPod(podOpts{name: "p", cpu: "1"})
				p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
					NodeSelectorTerms: []corev1.NodeSelectorTerm{
						{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: LabelArch, Operator: corev1.NodeSelectorOpIn, Values: []string{"s390x"}}}},
						{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "autonode.dev/instance-cpu", Operator: corev1.NodeSelectorOpGt, Values: []string{"6"}}}},
					}}}}
				return p
			}()},
			check: func(t *testing.T, res Result) {
				if got := nodeOf(t, res, "p").InstanceTypes[0].Name; got != "l-8" {
					t.Fatalf("got %s, want l-8", got)
				}
			}},
		{name: "NotIn a family",
			pods: []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1", required: []corev1.NodeSelectorRequirement{
				{Key: "autonode.dev/instance-family", Operator: corev1.NodeSelectorOpNotIn, Values: []string{"s", "arm"}}}})},
			check: func(t *testing.T, res Result) {
				if got := nodeOf(t, res, "p").InstanceTypes[0].Name; got != "m" && got != "m-4" {
					t.Fatalf("got %s, want m-4", got)
				}
			}},
		{name: "hostname selects an existing node",
			nodes: []ExistingNode{existing("n1", "test-a", "4"), existing("n2", "test-a", "4")},
			pods: []*corev1.Pod{
				mkPod(podOpts{name: "to-n2", cpu: "1", nodeSelector: map[string]string{LabelHostname: "n2"}}),
				mkPod(podOpts{name: "to-gone", cpu: "1", nodeSelector: map[string]string{LabelHostname: "gone"}}),
			},
			check: func(t *testing.T, res Result) {
				if got := scheduled(res)["to-n2"]; got != "n2" {
					t.Fatalf("to-n2 on %q", got)
				}
				wantUnschedulable(t, res, "to-gone", "fits no existing node")
			}},
		{name: "volume topology",
			pods:    []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1"})},
			volumes: map[types.UID][]Requirement{"default/p": {{Key: LabelZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"test-c"}}}},
			check: func(t *testing.T, res Result) {
				n := nodeOf(t, res, "p")
				if !slices.Equal(n.Zones, []string{"test-c"}) || !slices.Equal(n.CapacityTypes, []string{CapacityTypeOnDemand}) {
					t.Fatalf("zones %v capacity types %v, want test-c on-demand (no spot there)", n.Zones, n.CapacityTypes)
				}
			}},
		{name: "pool labels and pool-defined label values",
			pools: []NodePool{{Name: "team", InstanceTypes: testTypes(), Labels: map[string]string{"env": "prod"},
				Requirements: []Requirement{{Key: "team", Operator: corev1.NodeSelectorOpIn, Values: []string{"a", "b"}}}}},
			pods: []*corev1.Pod{
				mkPod(podOpts{name: "prod-b", cpu: "1", nodeSelector: map[string]string{"env": "prod", "team": "b"}}),
				mkPod(podOpts{name: "dev", cpu: "1", nodeSelector: map[string]string{"env": "dev"}}),
				mkPod(podOpts{name: "team-c", cpu: "1", nodeSelector: map[string]string{"team": "c"}}),
			},
			check: func(t *testing.T, res Result) {
				if n := nodeOf(t, res, "prod-b"); n.Labels["team"] != "b" || n.Labels["env"] != "prod" || n.Labels[LabelNodePool] != "team" {
					t.Fatalf("labels %v", n.Labels)
				}
				wantUnschedulable(t, res, "dev", "nodepool team")
				wantUnschedulable(t, res, "team-c", "nodepool team")
			}},
		{name: "bad requirement",
			pods: []*corev1.Pod{mkPod(podOpts{name: "p", required: []corev1.NodeSelectorRequirement{
				{Key: "autonode.dev/instance-cpu", Operator: corev1.NodeSelectorOpGt, Values: []string{"four"}}}})},
			check: func(t *testing.T, res Result) { wantUnschedulable(t, res, "p", "four") }},
	})
}

func TestTaintsAndPlacementOrder(t *testing.T) {
	tainted := defaultPool()
	tainted.Taints = []corev1.Taint{{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}
	tainted.StartupTaints = []corev1.Taint{{Key: "autonode.dev/agent-not-ready", Effect: corev1.TaintEffectNoSchedule}}
	tol := []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}
	noNew := defaultPool()
	zero := Resources{}
	noNew.Limits = &zero
	soft := existing("soft", "test-a", "4")
	soft.Taints = []corev1.Taint{{Key: "spare", Effect: corev1.TaintEffectPreferNoSchedule}}
	hard := existing("hard", "test-a", "4")
	hard.Taints = []corev1.Taint{{Key: "spare", Effect: corev1.TaintEffectNoSchedule}}
	inflight := existing("inflight", "test-a", "1500m")
	inflight.InFlight = true
	runScenarios(t, []scenario{
		{name: "a pool taint keeps pods without the toleration off",
			pools: []NodePool{tainted},
			pods: []*corev1.Pod{mkPod(podOpts{name: "plain", cpu: "1"}),
				mkPod(podOpts{name: "tolerant", cpu: "1", tolerations: tol})},
			check: func(t *testing.T, res Result) {
				wantUnschedulable(t, res, "plain", "taints not tolerated")
				if n := nodeOf(t, res, "tolerant"); len(n.StartupTaints) != 1 || len(n.Taints) != 1 {
					t.Fatalf("taints %v startup %v", n.Taints, n.StartupTaints)
				}
			}},
		{name: "a NoSchedule existing node is skipped",
			nodes: []ExistingNode{hard},
			pods:  []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1"})},
			check: func(t *testing.T, res Result) { nodeOf(t, res, "p") }},
		{name: "PreferNoSchedule is avoided while a new node is possible",
			nodes: []ExistingNode{soft},
			pods:  []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1"})},
			check: func(t *testing.T, res Result) { nodeOf(t, res, "p") }},
		{name: "PreferNoSchedule is tolerated as the last relaxation",
			nodes: []ExistingNode{soft},
			pools: []NodePool{noNew},
			pods:  []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1"})},
			check: func(t *testing.T, res Result) {
				if got := scheduled(res)["p"]; got != "soft" {
					t.Fatalf("p on %q, want soft", got)
				}
			}},
		{name: "registered nodes, then in-flight ones, then new",
			nodes: []ExistingNode{inflight, existing("ready", "test-b", "1500m")},
			pods:  replicas(3, podOpts{name: "p", cpu: "1"}),
			check: func(t *testing.T, res Result) {
				if len(res.Existing["ready"]) != 1 || len(res.Existing["inflight"]) != 1 || len(res.NewNodes) != 1 {
					t.Fatalf("got %v", scheduled(res))
				}
			}},
	})
}

func TestPodAffinity(t *testing.T) {
	db := map[string]string{"app": "db"}
	cache := mkPod(podOpts{name: "cache", cpu: "100m", labels: map[string]string{"app": "cache"}})
	loner := mkPod(podOpts{name: "loner", cpu: "100m", labels: map[string]string{"app": "loner"},
		anti: []corev1.PodAffinityTerm{{TopologyKey: LabelHostname, LabelSelector: sel("app", "x")}}})
	runScenarios(t, []scenario{
		{name: "zone affinity to its own kind lands in one zone",
			pods: replicas(4, podOpts{name: "db", cpu: "1500m", labels: db,
				affinity: []corev1.PodAffinityTerm{{TopologyKey: LabelZone, LabelSelector: sel("app", "db")}}}),
			check: func(t *testing.T, res Result) {
				wantAllScheduled(t, res)
				if z := zonesOf(res, res.NewNodes[0].Pods); len(z) != 1 {
					t.Fatalf("zones %v", z)
				}
			}},
		{name: "zone affinity to an existing pod",
			nodes: []ExistingNode{existing("n1", "test-b", "0", cache)},
			pods: replicas(2, podOpts{name: "web", cpu: "1",
				affinity: []corev1.PodAffinityTerm{{TopologyKey: LabelZone, LabelSelector: sel("app", "cache")}}}),
			check: func(t *testing.T, res Result) {
				wantAllScheduled(t, res)
				for _, n := range res.NewNodes {
					if !slices.Equal(n.Zones, []string{"test-b"}) {
						t.Fatalf("zones %v", n.Zones)
					}
				}
			}},
		{name: "affinity with nothing to match and no self match",
			pods: []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1",
				affinity: []corev1.PodAffinityTerm{{TopologyKey: LabelZone, LabelSelector: sel("app", "nowhere")}}})},
			check: func(t *testing.T, res Result) { wantUnschedulable(t, res, "p", "topology") }},
		{name: "hostname affinity keeps a team on one node",
			pods: replicas(3, podOpts{name: "team", cpu: "500m", labels: map[string]string{"team": "t"},
				affinity: []corev1.PodAffinityTerm{{TopologyKey: LabelHostname, LabelSelector: sel("team", "t")}}}),
			check: func(t *testing.T, res Result) {
				if len(res.NewNodes) != 1 || len(res.NewNodes[0].Pods) != 3 {
					t.Fatalf("got %v", scheduled(res))
				}
			}},
		{name: "hostname anti-affinity: one per node",
			pods: replicas(3, podOpts{name: "web", cpu: "100m", labels: map[string]string{"app": "web"},
				anti: []corev1.PodAffinityTerm{{TopologyKey: LabelHostname, LabelSelector: sel("app", "web")}}}),
			check: func(t *testing.T, res Result) {
				if len(res.NewNodes) != 3 {
					t.Fatalf("got %v", scheduled(res))
				}
			}},
		{name: "zone anti-affinity: one per zone, then no room",
			pods: replicas(4, podOpts{name: "zk", cpu: "100m", labels: map[string]string{"app": "zk"},
				anti: []corev1.PodAffinityTerm{{TopologyKey: LabelZone, LabelSelector: sel("app", "zk")}}}),
			check: func(t *testing.T, res Result) {
				if len(res.Unschedulable) != 1 || len(zonesOf(res, res.NewNodes[0].Pods)) != 1 || len(res.NewNodes) != 3 {
					t.Fatalf("got %v", scheduled(res))
				}
			}},
		{name: "an existing pod's anti-affinity repels",
			nodes: []ExistingNode{existing("n1", "test-a", "4", loner)},
			pods:  []*corev1.Pod{mkPod(podOpts{name: "x", cpu: "1", labels: map[string]string{"app": "x"}}), mkPod(podOpts{name: "y", cpu: "1"})},
			check: func(t *testing.T, res Result) {
				if w := scheduled(res); w["x"] == "n1" || w["y"] != "n1" {
					t.Fatalf("got %v", w)
				}
			}},
		{name: "anti-affinity across namespaces through an empty namespaceSelector",
			pods: []*corev1.Pod{
				mkPod(podOpts{name: "a", ns: "one", cpu: "100m", labels: map[string]string{"app": "s"}}),
				func() *corev1.Pod {
					p := mkPod(podOpts{name: "b", ns: "two", cpu: "100m", labels: map[string]string{"app": "s"},
						anti: []corev1.PodAffinityTerm{{TopologyKey: LabelHostname, LabelSelector: sel("app", "s")}}})
					p.Spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].NamespaceSelector = sel()
					return p
				}(),
			},
			check: func(t *testing.T, res Result) {
				if w := scheduled(res); w["a"] == w["b"] {
					t.Fatalf("got %v", w)
				}
			}},
		{name: "an unsupported topology key",
			pods: []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1",
				anti: []corev1.PodAffinityTerm{{TopologyKey: "rack", LabelSelector: sel("app", "p")}}})},
			check: func(t *testing.T, res Result) { wantUnschedulable(t, res, "p", "rack") }},
	})
}

func TestTopologySpread(t *testing.T) {
	spread := func(key string, skew int32, when corev1.UnsatisfiableConstraintAction) []corev1.TopologySpreadConstraint {
		return []corev1.TopologySpreadConstraint{{MaxSkew: skew, TopologyKey: key, WhenUnsatisfiable: when, LabelSelector: sel("app", "web")}}
	}
	web := map[string]string{"app": "web"}
	old := []*corev1.Pod{mkPod(podOpts{name: "old1", labels: web}), mkPod(podOpts{name: "old2", labels: web})}
	runScenarios(t, []scenario{
		{name: "zones within maxSkew 1",
			pods: replicas(6, podOpts{name: "web", cpu: "100m", labels: web, spread: spread(LabelZone, 1, corev1.DoNotSchedule)}),
			check: func(t *testing.T, res Result) {
				wantAllScheduled(t, res)
				var pods []*corev1.Pod
				for _, n := range res.NewNodes {
					pods = append(pods, n.Pods...)
				}
				if z := zonesOf(res, pods); len(z) != 3 || z["test-a"] != 2 {
					t.Fatalf("zones %v", z)
				}
			}},
		{name: "existing pods count",
			nodes: []ExistingNode{existing("n1", "test-a", "0", old...)},
			pods:  replicas(4, podOpts{name: "web", cpu: "100m", labels: web, spread: spread(LabelZone, 1, corev1.DoNotSchedule)}),
			check: func(t *testing.T, res Result) {
				var pods []*corev1.Pod
				for _, n := range res.NewNodes {
					pods = append(pods, n.Pods...)
				}
				if z := zonesOf(res, pods); z["test-a"] != 0 || z["test-b"] != 2 || z["test-c"] != 2 {
					t.Fatalf("zones %v", z)
				}
			}},
		{name: "hostname within maxSkew 2",
			pods: replicas(6, podOpts{name: "web", cpu: "100m", labels: web, spread: spread(LabelHostname, 2, corev1.DoNotSchedule)}),
			check: func(t *testing.T, res Result) {
				if len(res.NewNodes) != 3 {
					t.Fatalf("got %v", scheduled(res))
				}
			}},
		{name: "ScheduleAnyway is honoured while it can be",
			pods: replicas(3, podOpts{name: "web", cpu: "100m", labels: web, spread: spread(LabelZone, 1, corev1.ScheduleAnyway)}),
			check: func(t *testing.T, res Result) {
				var pods []*corev1.Pod
				for _, n := range res.NewNodes {
					pods = append(pods, n.Pods...)
				}
				if z := zonesOf(res, pods); len(z) != 3 {
					t.Fatalf("zones %v", z)
				}
			}},
		{name: "ScheduleAnyway gives way",
			pools: []NodePool{{Name: "one-zone", InstanceTypes: testTypes(), Requirements: []Requirement{
				{Key: LabelZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"test-a"}}}}},
			nodes: []ExistingNode{existing("n1", "test-b", "0", old...)},
			pods:  replicas(4, podOpts{name: "web", cpu: "100m", labels: web, spread: spread(LabelZone, 1, corev1.ScheduleAnyway)}),
			check: func(t *testing.T, res Result) { wantAllScheduled(t, res) }},
		{name: "DoNotSchedule does not",
			pools: []NodePool{{Name: "one-zone", InstanceTypes: testTypes(), Requirements: []Requirement{
				{Key: LabelZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"test-a"}}}}},
			nodes: []ExistingNode{existing("n1", "test-b", "0", old...)},
			pods:  replicas(4, podOpts{name: "web", cpu: "100m", labels: web, spread: spread(LabelZone, 1, corev1.DoNotSchedule)}),
			check: func(t *testing.T, res Result) {
				if len(res.Unschedulable) != 1 {
					t.Fatalf("got %v", scheduled(res))
				}
			}},
	})
}

func TestPreferences(t *testing.T) {
	zk := map[string]string{"app": "zk"}
	runScenarios(t, []scenario{
		{name: "preferred node affinity is honoured",
			pods: []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1", preferred: []corev1.PreferredSchedulingTerm{{Weight: 10,
				Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: LabelZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"test-c"}}}}}}})},
			check: func(t *testing.T, res Result) {
				if n := nodeOf(t, res, "p"); !slices.Equal(n.Zones, []string{"test-c"}) {
					t.Fatalf("zones %v", n.Zones)
				}
			}},
		{name: "preferred node affinity gives way",
			pods: []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1", preferred: []corev1.PreferredSchedulingTerm{{Weight: 10,
				Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: LabelZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"mars"}}}}}}})},
			check: func(t *testing.T, res Result) { wantAllScheduled(t, res) }},
		{name: "preferred anti-affinity spreads, then gives way",
			pods: replicas(5, podOpts{name: "zk", cpu: "100m", labels: zk, prefAnti: []corev1.WeightedPodAffinityTerm{{Weight: 1,
				PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: LabelZone, LabelSelector: sel("app", "zk")}}}}),
			check: func(t *testing.T, res Result) {
				wantAllScheduled(t, res)
				var pods []*corev1.Pod
				for _, n := range res.NewNodes {
					pods = append(pods, n.Pods...)
				}
				if z := zonesOf(res, pods); len(z) != 3 {
					t.Fatalf("zones %v", z)
				}
			}},
		{name: "an unsatisfiable preference does not take a satisfiable one with it",
			pods: replicas(5, podOpts{name: "zk", cpu: "100m", labels: zk, prefAnti: []corev1.WeightedPodAffinityTerm{
				{Weight: 10, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: LabelZone, LabelSelector: sel("app", "zk")}},
				{Weight: 1, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: LabelHostname, LabelSelector: sel("app", "zk")}},
			}}),
			check: func(t *testing.T, res Result) {
				if len(res.NewNodes) != 5 {
					t.Fatalf("got %v, want one node per pod", scheduled(res))
				}
			}},
		{name: "preferred affinity co-locates",
			pods: replicas(3, podOpts{name: "c", cpu: "100m", labels: zk, prefAff: []corev1.WeightedPodAffinityTerm{{Weight: 1,
				PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: LabelHostname, LabelSelector: sel("app", "zk")}}}}),
			check: func(t *testing.T, res Result) {
				if len(res.NewNodes) != 1 {
					t.Fatalf("got %v", scheduled(res))
				}
			}},
	})
}

func TestDaemonSetsPoolsAndLimits(t *testing.T) {
	daemon := mkPod(podOpts{name: "ds", cpu: "1"})
	armDaemon := mkPod(podOpts{name: "arm-ds", cpu: "1", nodeSelector: map[string]string{LabelArch: "arm64"}})
	amd := map[string]string{LabelArch: "amd64"}
	tainted := defaultPool()
	tainted.Taints = []corev1.Taint{{Key: "dedicated", Effect: corev1.TaintEffectNoSchedule}}
	limited := defaultPool()
	limited.Limits = &Resources{CPU: 4000, Memory: Unlimited, Pods: Unlimited, EphemeralStorage: Unlimited,
		NvidiaGPU: Unlimited, Neuron: Unlimited, NeuronCore: Unlimited, EFA: Unlimited}
	heavy := NodePool{Name: "heavy", Weight: 10, InstanceTypes: testTypes(), Requirements: []Requirement{
		{Key: LabelInstanceType, Operator: corev1.NodeSelectorOpIn, Values: []string{"l-8"}}}}
	cheap := NodePool{Name: "cheap", InstanceTypes: testTypes()[:1]}
	dear := NodePool{Name: "dear", InstanceTypes: testTypes()[1:2]}
	minValues := NodePool{Name: "flexible", InstanceTypes: testTypes(), Requirements: []Requirement{
		{Key: LabelInstanceType, Operator: corev1.NodeSelectorOpExists, MinValues: 3}}}
	runScenarios(t, []scenario{
		{name: "DaemonSet overhead sizes the node",
			daemons: []*corev1.Pod{daemon},
			pods:    []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1500m", nodeSelector: amd})},
			check: func(t *testing.T, res Result) {
				if n := nodeOf(t, res, "p"); n.InstanceTypes[0].Name != "m-4" || n.Overhead[CPU] != 1000 {
					t.Fatalf("got %s with overhead %s", n.InstanceTypes[0].Name, n.Overhead)
				}
			}},
		{name: "a DaemonSet that would not run there adds nothing",
			daemons: []*corev1.Pod{armDaemon},
			pods:    []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1500m", nodeSelector: amd})},
			check: func(t *testing.T, res Result) {
				if n := nodeOf(t, res, "p"); n.InstanceTypes[0].Name != "s-2" || !n.Overhead.IsZero() {
					t.Fatalf("got %s with overhead %s", n.InstanceTypes[0].Name, n.Overhead)
				}
			}},
		{name: "nor one that does not tolerate the pool's taints",
			pools:   []NodePool{tainted},
			daemons: []*corev1.Pod{daemon},
			pods: []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1500m", nodeSelector: amd,
				tolerations: []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}}})},
			check: func(t *testing.T, res Result) {
				if n := nodeOf(t, res, "p"); !n.Overhead.IsZero() {
					t.Fatalf("overhead %s", n.Overhead)
				}
			}},
		{name: "limits stop new capacity",
			pools: []NodePool{limited},
			pods:  replicas(3, podOpts{name: "p", cpu: "1500m", nodeSelector: amd}),
			check: func(t *testing.T, res Result) {
				if len(res.Unschedulable) != 1 {
					t.Fatalf("got %v", scheduled(res))
				}
			}},
		{name: "the heavier pool wins even when dearer",
			pools: []NodePool{defaultPool(), heavy},
			pods:  []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1"})},
			check: func(t *testing.T, res Result) {
				if n := nodeOf(t, res, "p"); n.NodePool != "heavy" {
					t.Fatalf("pool %s", n.NodePool)
				}
			}},
		{name: "among equal weights the cheaper pool wins",
			pools: []NodePool{dear, cheap},
			pods:  []*corev1.Pod{mkPod(podOpts{name: "p", cpu: "1"})},
			check: func(t *testing.T, res Result) {
				if n := nodeOf(t, res, "p"); n.NodePool != "cheap" {
					t.Fatalf("pool %s", n.NodePool)
				}
			}},
		{name: "minValues keeps choices open",
			pools: []NodePool{minValues},
			pods: []*corev1.Pod{mkPod(podOpts{name: "small", cpu: "1"}),
				mkPod(podOpts{name: "big", cpu: "7", required: []corev1.NodeSelectorRequirement{
					{Key: "autonode.dev/instance-family", Operator: corev1.NodeSelectorOpNotIn, Values: []string{"gpu"}}}})},
			check: func(t *testing.T, res Result) {
				if n := nodeOf(t, res, "small"); len(n.InstanceTypes) < 3 || n.Requirements[0].MinValues != 3 {
					t.Fatalf("types %v", n.Requirements[0])
				}
				wantUnschedulable(t, res, "big", "nodepool flexible")
			}},
	})
}

func TestSolveRejectsBadInput(t *testing.T) {
	if _, err := Solve(context.Background(), Input{Pods: []*corev1.Pod{nil}}); err == nil || !strings.Contains(err.Error(), "pod 0") {
		t.Fatalf("nil pod: %v", err)
	}
	bad := defaultPool()
	bad.Requirements = []Requirement{{Key: LabelZone, Operator: "Near", Values: []string{"x"}}}
	res, err := Solve(context.Background(), Input{Pods: []*corev1.Pod{mkPod(podOpts{name: "p"})}, NodePools: []NodePool{bad}})
	if err != nil {
		t.Fatal(err)
	}
	wantUnschedulable(t, res, "p", "nodepool default")
	res, err = Solve(context.Background(), Input{Pods: []*corev1.Pod{mkPod(podOpts{name: "p"})},
		NodePools: []NodePool{{Name: "empty"}}, Nodes: []ExistingNode{{Name: "bare"}}})
	if err != nil {
		t.Fatal(err)
	}
	wantUnschedulable(t, res, "p", "nodepool empty: no instance type")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Solve(ctx, diverseInput(1000)); err == nil {
		t.Fatal("Solve ignored a cancelled context")
	}
}

func TestIdenticalPodsShareAClass(t *testing.T) {
	in := diverseInput(1000)
	s := &solver{in: &in, groups: groups{byKey: map[string]*group{}}}
	if err := s.index(); err != nil {
		t.Fatal(err)
	}
	s.compilePools()
	classes, _, err := s.classify()
	if err != nil {
		t.Fatal(err)
	}
	// 30 request pairs; generic: 7 labels; spreads: 7 × 7; affinity: 7;
	// anti: 1. At 1000 pods most combinations repeat.
	if len(classes) >= 1000 || len(classes) < 30 {
		t.Fatalf("%d classes for 1000 pods", len(classes))
	}
}

func TestListedTypesAreCapped(t *testing.T) {
	pod := mkPod(podOpts{name: "p", cpu: "100m"})
	for _, tc := range []struct {
		name string
		reqs []Requirement
		want int
	}{
		{"capped", nil, MaxInstanceTypes},
		{"minValues asks for more", []Requirement{{Key: LabelInstanceType, Operator: corev1.NodeSelectorOpExists, MinValues: 100}}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{Pods: []*corev1.Pod{pod}, NodePools: []NodePool{{Name: "default", InstanceTypes: diverseTypes(400), Requirements: tc.reqs}}}
			res, err := Solve(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			verify(t, in, res)
			if got := len(res.NewNodes[0].InstanceTypes); got != tc.want {
				t.Fatalf("%d types listed, want %d", got, tc.want)
			}
		})
	}
}
