package scheduling

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// diversePods re-creates the "diverse" workload: one fifth each of
// generic pods, zone spread (maxSkew 1, DoNotSchedule) selecting a random
// my-label value, the same on hostname, required zone affinity to the pod's
// own random my-affinity label, and required hostname anti-affinity to
// app=nginx (one per node). The remainder of count/5 are generic pods.
func diversePods(count int, seed uint64) []*corev1.Pod {
	r := rand.New(rand.NewPCG(seed, 42))
	letter := func() string { return string(rune('a' + r.IntN(7))) }
	cpu := func() string { return fmt.Sprintf("%dm", []int{100, 250, 500, 1000, 1500}[r.IntN(5)]) }
	mem := func() string { return fmt.Sprintf("%dMi", []int{100, 256, 512, 1024, 2048, 4096}[r.IntN(6)]) }
	var pods []*corev1.Pod
	add := func(o podOpts) {
		o.name = fmt.Sprintf("p%d", len(pods))
		o.cpu, o.mem = cpu(), mem()
		pods = append(pods, mkPod(o))
	}
	fifth := count / 5
	for range fifth {
		add(podOpts{labels: map[string]string{"my-label": letter()}})
	}
	for _, key := range []string{LabelZone, LabelHostname} {
		for range fifth {
			add(podOpts{labels: map[string]string{"my-label": letter()}, spread: []corev1.TopologySpreadConstraint{{
				MaxSkew: 1, TopologyKey: key, WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: sel("my-label", letter())}}})
		}
	}
	for range fifth {
		l := map[string]string{"my-affinity": letter()}
		add(podOpts{labels: l, affinity: []corev1.PodAffinityTerm{{TopologyKey: LabelZone, LabelSelector: sel("my-affinity", l["my-affinity"])}}})
	}
	for range fifth {
		add(podOpts{labels: map[string]string{"app": "nginx"}, anti: []corev1.PodAffinityTerm{{TopologyKey: LabelHostname, LabelSelector: sel("app", "nginx")}}})
	}
	for len(pods) < count {
		add(podOpts{labels: map[string]string{"my-label": letter()}})
	}
	return pods
}

func diverseInput(count int) Input {
	return Input{Pods: diversePods(count, 1), NodePools: []NodePool{{Name: "default", InstanceTypes: diverseTypes(400)}}}
}

// BenchmarkDiverse times Solve alone on the diverse workload and reports
// pods/s, node count and $/h of the result.
func BenchmarkDiverse(b *testing.B) {
	for _, n := range []int{1000, 2000, 5000, 20000} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			in := diverseInput(n)
			var res Result
			var total time.Duration
			for b.Loop() {
				start := time.Now()
				var err error
				res, err = Solve(context.Background(), in)
				total += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				if len(res.Unschedulable) > 0 {
					b.Fatalf("%d pods unschedulable, first: %v", len(res.Unschedulable), res.Unschedulable[0].Err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "pods/s")
			b.ReportMetric(float64(len(res.NewNodes)), "nodes")
			b.ReportMetric(res.Cost(), "$/h")
		})
	}
}

// preferencePods re-creates the preferences workload of Karpenter's
// benchmark: app=nginx pods that prefer zone-1, prefer (weight 10) no other
// nginx pod in their zone, which only three can have, and prefer (weight 1)
// no other nginx pod on their node.
func preferencePods(count int, seed uint64) []*corev1.Pod {
	r := rand.New(rand.NewPCG(seed, 43))
	var pods []*corev1.Pod
	for i := range count {
		pods = append(pods, mkPod(podOpts{name: fmt.Sprintf("p%d", i), labels: map[string]string{"app": "nginx"},
			cpu: fmt.Sprintf("%dm", []int{100, 250, 500, 1000, 1500}[r.IntN(5)]),
			mem: fmt.Sprintf("%dMi", []int{100, 256, 512, 1024, 2048, 4096}[r.IntN(6)]),
			preferred: []corev1.PreferredSchedulingTerm{{Weight: 1, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: LabelZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"zone-1"}}}}}},
			prefAnti: []corev1.WeightedPodAffinityTerm{
				{Weight: 10, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: LabelZone, LabelSelector: sel("app", "nginx")}},
				{Weight: 1, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: LabelHostname, LabelSelector: sel("app", "nginx")}},
			}}))
	}
	return pods
}

// BenchmarkPreferences times Solve on 4,000 preference pods.
func BenchmarkPreferences(b *testing.B) {
	in := Input{Pods: preferencePods(4000, 1), NodePools: []NodePool{{Name: "default", InstanceTypes: diverseTypes(400)}}}
	var res Result
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		var err error
		res, err = Solve(context.Background(), in)
		total += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Unschedulable) > 0 {
			b.Fatalf("%d pods unschedulable, first: %v", len(res.Unschedulable), res.Unschedulable[0].Err)
		}
	}
	b.ReportMetric(float64(len(in.Pods))*float64(b.N)/total.Seconds(), "pods/s")
	b.ReportMetric(float64(len(res.NewNodes)), "nodes")
	b.ReportMetric(res.Cost(), "$/h")
}

func TestDiverseWorkloadIsValid(t *testing.T) {
	for _, n := range []int{100, 1000} {
		in := diverseInput(n)
		res, err := Solve(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Unschedulable) > 0 {
			t.Fatalf("%d pods unschedulable, first: %v", len(res.Unschedulable), res.Unschedulable[0].Err)
		}
		verify(t, in, res)
		t.Logf("%d pods: %d nodes, $%.2f/h", n, len(res.NewNodes), res.Cost())
	}
}
