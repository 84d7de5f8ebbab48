package disruption

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/autonode/autonode/agent/nodeconfig"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// generalTypes reads the general-purpose types (c, m and r families of
// generation 5 or later, amd64, 2 to 8 vCPU so that 10,000 pods make about
// 1,000 nodes, no accelerators, not metal) of the shared
// instance table, with agent/nodeconfig's allocatable, on demand in three
// zones at the table's price.
func generalTypes(tb testing.TB) []*scheduling.InstanceType {
	tb.Helper()
	var f *os.File
	var err error
	for _, p := range []string{"../../shared/data/ec2-instance-types.csv", "../../../shared/data/ec2-instance-types.csv"} {
		if f, err = os.Open(p); !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if errors.Is(err, fs.ErrNotExist) && os.Getenv("CI") != "true" {
		tb.Skip("instance-type data missing; skipping outside CI")
	}
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) < 2 {
		tb.Fatalf("reading instance-type data: %v", err)
	}
	col := map[string]int{}
	for i, c := range rows[0] {
		col[c] = i
	}
	var out []*scheduling.InstanceType
	for _, row := range rows[1:] {
		get := func(c string) string { return row[col[c]] }
		gen, _ := strconv.Atoi(get("generation"))
		price, err := strconv.ParseFloat(get("price_usd_hour_us_east_1"), 64)
		if err != nil || gen < 5 || get("arch") != "amd64" || get("gpu_count") != "0" || get("accelerator_count") != "0" ||
			get("bare_metal") == "true" || !slices.Contains([]string{"c", "m", "r"}, get("category")) {
			continue
		}
		vcpu, _ := strconv.Atoi(get("vcpu"))
		if vcpu < 2 || vcpu > 8 {
			continue
		}
		mem, _ := strconv.ParseInt(get("memory_mib"), 10, 64)
		maxPods, _ := strconv.Atoi(get("max_pods_eni"))
		if maxPods == 0 {
			maxPods = 110
		}
		nc := nodeconfig.NodeCapacity{VCPUs: vcpu, MemoryMiB: mem, EphemeralStorage: resource.MustParse("20Gi"), MaxPods: maxPods}
		capList, err1 := nodeconfig.Capacity(nc, nodeconfig.AllocatableOptions{})
		allocList, err2 := nodeconfig.Allocatable(nc, nodeconfig.AllocatableOptions{})
		if err1 != nil || err2 != nil {
			continue
		}
		it := &scheduling.InstanceType{Name: row[0], Arch: "amd64", Capacity: modelled(capList), Allocatable: modelled(allocList)}
		for _, z := range []string{"us-east-1a", "us-east-1b", "us-east-1c"} {
			it.Offerings = append(it.Offerings, scheduling.Offering{Zone: z, CapacityType: "on-demand", Price: price, Available: true})
		}
		out = append(out, it)
	}
	if len(out) < 20 {
		tb.Fatalf("only %d general-purpose types in the table", len(out))
	}
	return out
}

// benchPods are Deployments of 10 replicas with CPU from {250m, 500m, 1, 2}
// and 1-4 GiB per vCPU.
func benchPods(count int, r *rand.Rand) []*corev1.Pod {
	var pods []*corev1.Pod
	for len(pods) < count {
		app := fmt.Sprintf("app%d", len(pods)/10)
		cpu := []int64{250, 500, 1000, 2000}[r.IntN(4)]
		mem := cpu * int64(1+r.IntN(4)) * gi / 1000
		for range 10 {
			i := len(pods)
			pods = append(pods, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: "default", UID: types.UID(fmt.Sprintf("p%d", i)),
					Labels: map[string]string{"app": app}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU: *resource.NewMilliQuantity(cpu, resource.DecimalSI), corev1.ResourceMemory: *resource.NewQuantity(mem, resource.BinarySI),
				}}}}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
			})
			if len(pods) == count {
				break
			}
		}
	}
	return pods
}

// provisioned is the cluster the scheduler makes for pods from scratch.
func provisioned(tb testing.TB, its []*scheduling.InstanceType, pods []*corev1.Pod) *Cluster {
	tb.Helper()
	p := testPool("default", its)
	p.Budgets = []Budget{{Nodes: 10, Percent: true}}
	c := cluster([]*Pool{p})
	res, err := scheduling.Solve(context.Background(), scheduling.Input{Pods: pods, NodePools: []scheduling.NodePool{p.Scheduling}})
	if err != nil || len(res.Unschedulable) > 0 {
		tb.Fatalf("provisioning: %v %v", err, res.Unschedulable)
	}
	for i, nn := range res.NewNodes {
		n := launchCheapest(c, nn, fmt.Sprintf("n%d", i))
		for _, pod := range nn.Pods {
			bindPod(n, pod)
		}
	}
	return c
}

func launchCheapest(c *Cluster, nn scheduling.NewNode, name string) *Node {
	var best *scheduling.InstanceType
	var zone string
	price := 0.0
	for _, it := range nn.InstanceTypes {
		for _, o := range it.Offerings {
			if o.Available && slices.Contains(nn.Zones, o.Zone) && slices.Contains(nn.CapacityTypes, o.CapacityType) && (best == nil || o.Price < price) {
				best, zone, price = it, o.Zone, o.Price
			}
		}
	}
	n := testNode(name, nn.NodePool, best)
	n.Zone, n.Price, n.Labels[scheduling.LabelZone] = zone, price, zone
	c.Nodes = append(c.Nodes, n)
	return n
}

func bindPod(n *Node, pod *corev1.Pod) {
	pod.Spec.NodeName = n.Name
	n.Pods = append(n.Pods, NewPod(pod))
}

func cost(c *Cluster) float64 {
	s := 0.0
	for _, n := range c.Nodes {
		s += n.Price
	}
	return s
}

// apply carries a command out at once: replacements launch as their
// cheapest offering, pods move where the plan put them.
func apply(tb testing.TB, c *Cluster, cmd *Command, seq *int) {
	tb.Helper()
	launched := map[string]*Node{}
	for _, nn := range cmd.Replacements {
		*seq++
		launched[nn.Name] = launchCheapest(c, nn, fmt.Sprintf("r%d", *seq))
	}
	gone := map[*Node]bool{}
	for _, n := range cmd.Candidates {
		gone[n] = true
	}
	byName := map[string]*Node{}
	for _, n := range c.Nodes {
		byName[n.Name] = n
	}
	for _, n := range cmd.Candidates {
		for _, p := range n.Reschedulable() {
			dest := launched[cmd.Placement[p.Pod.UID]]
			if dest == nil {
				dest = byName[cmd.Placement[p.Pod.UID]]
			}
			if dest == nil || gone[dest] {
				tb.Fatalf("pod %s has no place in %s", p.Pod.Name, cmd.Decision())
			}
			bindPod(dest, p.Pod)
		}
	}
	c.Nodes = slices.DeleteFunc(c.Nodes, func(n *Node) bool { return gone[n] })
}

// BenchmarkDecide times one decision round on a cluster of about 1,000
// nodes and 10,000 pods: "packed" as the scheduler made it (nothing to do:
// every candidate is examined), and "scaled-in" after 30% of the pods went
// (a command is found). autonode prunes candidates whose replacement
// cannot pay by a price lower bound before simulating; baseline simulates
// every candidate, as Karpenter does.
func BenchmarkDecide(b *testing.B) {
	its := generalTypes(b)
	for _, scen := range []string{"packed", "scaled-in"} {
		r := rand.New(rand.NewPCG(1, 2))
		pods := benchPods(10000, r)
		c := provisioned(b, its, pods)
		if scen == "scaled-in" {
			for _, n := range c.Nodes {
				n.Pods = slices.DeleteFunc(n.Pods, func(*Pod) bool { return r.IntN(10) < 3 })
			}
		}
		for _, variant := range []string{"autonode", "baseline"} {
			b.Run(fmt.Sprintf("nodes=%d/pods=10000/%s/%s", len(c.Nodes), scen, variant), func(b *testing.B) {
				e := mustEngine(Options{})
				e.noPrune = variant == "baseline"
				var cmd *Command
				cpu0 := cpuTime()
				for b.Loop() {
					var err error
					if cmd, err = e.Decide(context.Background(), c, t0); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/decision")
				// CPU time is what a busy shared machine does not inflate.
				b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/decision")
				if cmd != nil {
					b.ReportMetric(float64(len(cmd.Candidates)), "candidates")
					b.ReportMetric(cmd.Savings(), "$/h-saved")
				}
			})
		}
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScaleIn is Karpenter's consolidation scenario: 1,000 pods
// provisioned, scaled down to 700, then consolidation runs until it finds
// nothing more. It reports the cluster's $/h at 1,000 pods, after the
// scale-in before consolidation, and after; a lower bound for 700 pods (their
// CPU or memory at the cheapest allocatable $/unit, whichever is more); the
// commands; and the total decision time.
func BenchmarkScaleIn(b *testing.B) {
	its := generalTypes(b)
	for b.Loop() {
		r := rand.New(rand.NewPCG(7, 8))
		pods := benchPods(1000, r)
		c := provisioned(b, its, pods)
		before := cost(c)
		nodesBefore := len(c.Nodes)
		// Scale every Deployment from 10 to 7 replicas.
		for _, n := range c.Nodes {
			n.Pods = slices.DeleteFunc(n.Pods, func(p *Pod) bool {
				i, _ := strconv.Atoi(p.Pod.Name[1:])
				return i%10 >= 7
			})
		}
		scaled := cost(c)
		e := mustEngine(Options{})
		var decide time.Duration
		commands, seq := 0, 0
		for {
			start := time.Now()
			cmd, err := e.Decide(context.Background(), c, t0)
			decide += time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			if cmd == nil {
				break
			}
			commands++
			apply(b, c, cmd, &seq)
		}
		var cpu, mem float64
		for _, n := range c.Nodes {
			for _, p := range n.Pods {
				cpu += float64(p.Requests[scheduling.CPU])
				mem += float64(p.Requests[scheduling.Memory])
			}
		}
		r0 := mustEngine(Options{}).newRound(c, t0)
		b.ReportMetric(max(cpu*r0.perUnit[scheduling.CPU], mem*r0.perUnit[scheduling.Memory]), "$/h-700pods-bound")
		b.ReportMetric(before, "$/h-1000pods")
		b.ReportMetric(scaled, "$/h-700pods-before")
		b.ReportMetric(cost(c), "$/h-700pods-after")
		b.ReportMetric(float64(nodesBefore), "nodes-before")
		b.ReportMetric(float64(len(c.Nodes)), "nodes-after")
		b.ReportMetric(float64(commands), "commands")
		b.ReportMetric(decide.Seconds(), "s-deciding")
	}
}
