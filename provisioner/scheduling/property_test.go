package scheduling

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

// randomInput draws a cluster: a few pools over random catalogs with
// requirements, taints and limits; existing nodes with pods (some holding
// anti-affinity); DaemonSets; and Deployments of pods with random requests
// and constraints of every kind the scheduler handles.
func randomInput(r *rand.Rand) Input {
	zones := []string{"test-a", "test-b", "test-c"}
	var catalog []*InstanceType
	for i := range 4 + r.IntN(8) {
		cpu := int64(1 << r.IntN(5))
		mem := cpu * int64(1<<r.IntN(3)) * 2
		var capa Resources
		capa[CPU], capa[Memory], capa[Pods], capa[EphemeralStorage] = cpu*1000, mem<<30, 4+int64(r.IntN(30)), 40<<30
		if r.IntN(5) == 0 {
			capa[NvidiaGPU] = int64(1 + r.IntN(4))
		}
		alloc := capa
		alloc[CPU] -= 100
		alloc[Memory] -= 300 << 20
		alloc[EphemeralStorage] -= 4 << 30
		arch := []string{"amd64", "arm64"}[r.IntN(2)]
		it := &InstanceType{Name: fmt.Sprintf("t%d", i), Arch: arch, Capacity: capa, Allocatable: alloc,
			Labels: map[string]string{"autonode.dev/instance-cpu": fmt.Sprint(cpu)}}
		price := float64(cpu)*0.04 + float64(mem)*0.005 + float64(capa[NvidiaGPU])*0.5 + r.Float64()*0.02
		for _, z := range zones {
			for _, ct := range []string{CapacityTypeOnDemand, CapacityTypeSpot} {
				if r.IntN(4) > 0 {
					p := price
					if ct == CapacityTypeSpot {
						p *= 0.4
					}
					it.Offerings = append(it.Offerings, Offering{Zone: z, CapacityType: ct, Price: p, Available: r.IntN(6) > 0})
				}
			}
		}
		catalog = append(catalog, it)
	}
	var in Input
	for i := range 1 + r.IntN(3) {
		p := NodePool{Name: fmt.Sprintf("pool%d", i), Weight: int32(r.IntN(3))}
		for _, it := range catalog {
			if r.IntN(4) > 0 {
				p.InstanceTypes = append(p.InstanceTypes, it)
			}
		}
		if r.IntN(3) == 0 {
			p.Requirements = append(p.Requirements, Requirement{Key: LabelZone, Operator: corev1.NodeSelectorOpIn, Values: zones[:1+r.IntN(3)]})
		}
		if r.IntN(3) == 0 {
			p.Requirements = append(p.Requirements, Requirement{Key: LabelCapacityType, Operator: corev1.NodeSelectorOpIn, Values: []string{CapacityTypeOnDemand}})
		}
		if r.IntN(3) == 0 {
			p.Requirements = append(p.Requirements, Requirement{Key: "team", Operator: corev1.NodeSelectorOpIn, Values: []string{"red", "blue"}})
		}
		if r.IntN(4) == 0 {
			p.Requirements = append(p.Requirements, Requirement{Key: LabelInstanceType, Operator: corev1.NodeSelectorOpExists, MinValues: 2})
		}
		if r.IntN(3) == 0 {
			p.Taints = []corev1.Taint{{Key: "dedicated", Value: "x", Effect: corev1.TaintEffectNoSchedule}}
		}
		if r.IntN(3) == 0 {
			l := NoLimits()
			l[CPU] = int64(8000 + r.IntN(128000))
			l[Memory] = int64(16+r.IntN(512)) << 30
			p.Limits = &l
		}
		p.Labels = map[string]string{"pool": p.Name}
		in.NodePools = append(in.NodePools, p)
	}
	app := func(k int) map[string]string { return map[string]string{"app": fmt.Sprintf("app%d", k)} }
	for i := range r.IntN(4) {
		e := existing(fmt.Sprintf("node%d", i), zones[r.IntN(3)], fmt.Sprintf("%dm", r.IntN(6000)))
		for j := range r.IntN(4) {
			o := podOpts{name: fmt.Sprintf("old%d-%d", i, j), cpu: "100m", labels: app(r.IntN(6))}
			if r.IntN(3) == 0 {
				o.anti = []corev1.PodAffinityTerm{{TopologyKey: []string{LabelZone, LabelHostname}[r.IntN(2)], LabelSelector: sel("app", fmt.Sprintf("app%d", r.IntN(6)))}}
			}
			e.Pods = append(e.Pods, mkPod(o))
		}
		if r.IntN(4) == 0 {
			e.Taints = []corev1.Taint{{Key: "dedicated", Value: "x", Effect: corev1.TaintEffectNoSchedule}}
		}
		e.InFlight = r.IntN(3) == 0
		in.Nodes = append(in.Nodes, e)
	}
	for i := range r.IntN(3) {
		d := podOpts{name: fmt.Sprintf("ds%d", i), cpu: fmt.Sprintf("%dm", 50+r.IntN(400)), mem: fmt.Sprintf("%dMi", 50+r.IntN(500))}
		if r.IntN(2) == 0 {
			d.nodeSelector = map[string]string{LabelArch: []string{"amd64", "arm64"}[r.IntN(2)]}
		}
		if r.IntN(2) == 0 {
			d.tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
		}
		in.DaemonSets = append(in.DaemonSets, mkPod(d))
	}
	in.VolumeRequirements = map[types.UID][]Requirement{}
	for k := range 3 + r.IntN(10) {
		o := podOpts{labels: app(k), cpu: fmt.Sprintf("%dm", 100+r.IntN(4000)), mem: fmt.Sprintf("%dMi", 64+r.IntN(16000))}
		if r.IntN(8) == 0 {
			o.extra = gpu(fmt.Sprint(1 + r.IntN(2)))
		}
		zoneFree := true
		switch r.IntN(6) {
		case 0:
			o.nodeSelector = map[string]string{LabelArch: []string{"amd64", "arm64"}[r.IntN(2)]}
		case 1:
			o.nodeSelector = map[string]string{LabelZone: zones[r.IntN(3)]}
			zoneFree = false
		case 2:
			o.nodeSelector = map[string]string{"team": "blue"}
		case 3:
			o.required = []corev1.NodeSelectorRequirement{{Key: "autonode.dev/instance-cpu", Operator: corev1.NodeSelectorOpGt, Values: []string{fmt.Sprint(r.IntN(8))}}}
		case 4:
			o.required = []corev1.NodeSelectorRequirement{{Key: LabelCapacityType, Operator: corev1.NodeSelectorOpNotIn, Values: []string{CapacityTypeSpot}}}
		}
		if r.IntN(3) == 0 {
			o.tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "x", Effect: corev1.TaintEffectNoSchedule}}
		}
		name := fmt.Sprintf("app%d", k)
		key := []string{LabelZone, LabelHostname}[r.IntN(2)]
		switch r.IntN(8) {
		case 0:
			if key == LabelHostname || zoneFree {
				o.spread = []corev1.TopologySpreadConstraint{{MaxSkew: int32(1 + r.IntN(2)), TopologyKey: key,
					WhenUnsatisfiable: []corev1.UnsatisfiableConstraintAction{corev1.DoNotSchedule, corev1.ScheduleAnyway}[r.IntN(2)],
					LabelSelector:     sel("app", name)}}
			}
		case 1:
			o.affinity = []corev1.PodAffinityTerm{{TopologyKey: key, LabelSelector: sel("app", name)}}
		case 2:
			o.anti = []corev1.PodAffinityTerm{{TopologyKey: key, LabelSelector: sel("app", name)}}
		case 3:
			o.prefAnti = []corev1.WeightedPodAffinityTerm{{Weight: 5, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: key, LabelSelector: sel("app", name)}}}
		case 4:
			o.preferred = []corev1.PreferredSchedulingTerm{{Weight: 3, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: LabelZone, Operator: corev1.NodeSelectorOpIn, Values: []string{zones[r.IntN(3)]}}}}}}
		case 5:
			o.affinity = []corev1.PodAffinityTerm{{TopologyKey: key, LabelSelector: sel("app", fmt.Sprintf("app%d", r.IntN(6)))}}
		}
		vol := r.IntN(6) == 0 && zoneFree && o.spread == nil
		for i := range 1 + r.IntN(8) {
			o.name = fmt.Sprintf("%s-%d", name, i)
			p := mkPod(o)
			if vol {
				in.VolumeRequirements[p.UID] = []Requirement{{Key: LabelZone, Operator: corev1.NodeSelectorOpIn, Values: []string{zones[k%3]}}}
			}
			in.Pods = append(in.Pods, p)
		}
	}
	r.Shuffle(len(in.Pods), func(i, j int) { in.Pods[i], in.Pods[j] = in.Pods[j], in.Pods[i] })
	return in
}

// TestPropertyPlacementsHonourHardConstraints: on seeded random clusters,
// every placement satisfies every hard constraint, stays within capacity
// (the allocatable of every listed type, less its DaemonSet overhead) and
// within the pools' limits; see verify.
func TestPropertyPlacementsHonourHardConstraints(t *testing.T) {
	runs := 400
	if testing.Short() {
		runs = 50
	}
	placed, total := 0, 0
	for seed := range uint64(runs) {
		r := rand.New(rand.NewPCG(seed, 99))
		in := randomInput(r)
		res, err := Solve(context.Background(), in)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) { verify(t, in, res) })
		total += len(in.Pods)
		placed += len(in.Pods) - len(res.Unschedulable)
	}
	// Guard against a solver that passes by placing nothing. (Many pods
	// cannot be placed: untolerated taints, minValues, affinity to nothing.)
	if placed*10 < total*4 {
		t.Fatalf("only %d of %d pods placed across the runs", placed, total)
	}
	t.Logf("%d of %d pods placed", placed, total)
}

// TestPropertyUnconstrainedPodsAllFit: with no constraints and no limits,
// every pod that fits some type is placed.
func TestPropertyUnconstrainedPodsAllFit(t *testing.T) {
	for seed := range uint64(50) {
		r := rand.New(rand.NewPCG(seed, 5))
		var pods []*corev1.Pod
		for i := range 50 + r.IntN(200) {
			pods = append(pods, mkPod(podOpts{name: fmt.Sprint(i), cpu: fmt.Sprintf("%dm", 10+r.IntN(7000)),
				mem: resource.NewQuantity(int64(r.IntN(30<<10))<<20, resource.BinarySI).String()}))
		}
		in := Input{Pods: pods, NodePools: []NodePool{defaultPool()}}
		res, err := Solve(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		verify(t, in, res)
		wantAllScheduled(t, res)
	}
}
