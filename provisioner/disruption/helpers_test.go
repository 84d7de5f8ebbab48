package disruption

import (
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// t0 is the tests' "now"; nodes are created a day earlier.
var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

const gi = int64(1) << 30

// itype makes a type with cpu vCPU, 4 GiB per vCPU, 110 pods, on-demand in
// z1 and z2 at price.
func itype(name string, cpu int64, price float64) *scheduling.InstanceType {
	var r scheduling.Resources
	r[scheduling.CPU], r[scheduling.Memory], r[scheduling.Pods] = cpu*1000, cpu*4*gi, 110
	it := &scheduling.InstanceType{Name: name, Arch: "amd64", Capacity: r, Allocatable: r}
	for _, z := range []string{"z1", "z2"} {
		it.Offerings = append(it.Offerings, scheduling.Offering{Zone: z, CapacityType: "on-demand", Price: price, Available: true})
	}
	return it
}

// catalog: 1, 2, 4, 8 and 16 vCPU types at $0.05 per vCPU-hour.
func catalog() []*scheduling.InstanceType {
	var out []*scheduling.InstanceType
	for _, c := range []int64{1, 2, 4, 8, 16} {
		out = append(out, itype(fmt.Sprintf("m.%dx", c), c, 0.05*float64(c)))
	}
	return out
}

func typeNamed(types []*scheduling.InstanceType, name string) *scheduling.InstanceType {
	for _, t := range types {
		if t.Name == name {
			return t
		}
	}
	panic("no type " + name)
}

func testPool(name string, types []*scheduling.InstanceType) *Pool {
	zero := time.Duration(0)
	return &Pool{
		Name: name, Policy: v1.ConsolidationWhenEmptyOrUnderutilized, ConsolidateAfter: &zero,
		Budgets:    []Budget{{Nodes: 100, Percent: true}},
		Scheduling: scheduling.NodePool{Name: name, InstanceTypes: types},
	}
}

func testNode(name, pool string, it *scheduling.InstanceType, pods ...*Pod) *Node {
	n := &Node{
		Name: name, NodeClaim: name, Pool: pool, NodeClass: "default", InstanceType: it.Name, Zone: "z1",
		CapacityType: "on-demand", Arch: "amd64", Price: it.Offerings[0].Price, Allocatable: it.Allocatable,
		Labels: map[string]string{
			corev1.LabelHostname: name, scheduling.LabelZone: "z1", scheduling.LabelInstanceType: it.Name,
			scheduling.LabelCapacityType: "on-demand", scheduling.LabelArch: "amd64", scheduling.LabelNodePool: pool,
		},
		Created: t0.Add(-24 * time.Hour), Initialized: true, TemplateHashVersion: HashVersion,
		Pods: pods,
	}
	for _, p := range pods {
		p.Pod.Spec.NodeName = name
	}
	return n
}

// testPod requests cpu millicores and 1 GiB per 1000m.
func testPod(name string, cpu int64, mods ...func(*corev1.Pod)) *Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name),
			Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU:    *resource.NewMilliQuantity(cpu, resource.DecimalSI),
			corev1.ResourceMemory: *resource.NewQuantity(cpu*gi/1000, resource.BinarySI),
		}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	for _, m := range mods {
		m(p)
	}
	return NewPod(p)
}

func withLabels(kv ...string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		for i := 0; i+1 < len(kv); i += 2 {
			p.Labels[kv[i]] = kv[i+1]
		}
	}
}

func withAnnotation(k, v string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[k] = v
	}
}

func daemonPod(name string) *Pod {
	p := testPod(name, 100)
	p.DaemonSet = true
	return p
}

func cluster(pools []*Pool, nodes ...*Node) *Cluster {
	c := &Cluster{Pools: map[string]*Pool{}, Nodes: nodes}
	for _, p := range pools {
		c.Pools[p.Name] = p
	}
	return c
}

func pdb(name string, allowed int, kv ...string) *PDB {
	set := labels.Set{}
	for i := 0; i+1 < len(kv); i += 2 {
		set[kv[i]] = kv[i+1]
	}
	return &PDB{Namespace: "default", Name: name, Selector: labels.SelectorFromSet(set), Allowed: allowed}
}

func mustEngine(o Options) *Engine {
	e, err := New(o)
	if err != nil {
		panic(err)
	}
	return e
}

func candidateNames(cmd *Command) []string {
	if cmd == nil {
		return nil
	}
	var out []string
	for _, n := range cmd.Candidates {
		out = append(out, n.Name)
	}
	return out
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
