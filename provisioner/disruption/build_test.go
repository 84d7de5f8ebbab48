package disruption

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/scheduling"
)

func TestBuild(t *testing.T) {
	types := catalog()
	created := metav1.NewTime(t0.Add(-time.Hour))
	pool := &v1.NodePool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1.NodePoolSpec{
		Template: v1.NodeClaimTemplate{Spec: v1.NodeClaimTemplateSpec{NodeClassRef: v1.NodeClassReference{Name: "default"},
			Requirements: []v1.NodeSelectorRequirementWithMinValues{{Key: v1.LabelCapacityType, Operator: corev1.NodeSelectorOpIn, Values: []string{"on-demand"}}}}},
		Disruption: v1.Disruption{ConsolidateAfter: v1.After(time.Minute), Budgets: []v1.Budget{{Nodes: "20%"}}},
	}}
	bad := pool.DeepCopy()
	bad.Name = "bad"
	bad.Spec.Disruption.Budgets = []v1.Budget{{Nodes: "1", Schedule: ptr("nonsense"), Duration: &metav1.Duration{Duration: time.Hour}}}
	alloc := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3900m"), corev1.ResourceMemory: resource.MustParse("15Gi"),
		corev1.ResourcePods: resource.MustParse("58"), "hugepages-2Mi": resource.MustParse("1Gi")}
	claim := &v1.NodeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "claim-a", CreationTimestamp: created, Labels: map[string]string{v1.LabelNodePool: "p"},
			Annotations: map[string]string{AnnotationNodePoolHash: "abc", AnnotationNodePoolHashVersion: HashVersion}},
		Spec: v1.NodeClaimSpec{NodeClassRef: v1.NodeClassReference{Name: "default"}, ExpireAfter: &metav1.Duration{Duration: 336 * time.Hour},
			StartupTaints: []corev1.Taint{{Key: v1.StartupTaintAgentNotReady, Effect: corev1.TaintEffectNoSchedule}}},
		Status: v1.NodeClaimStatus{NodeName: "node-a", ImageID: "ami-1", Allocatable: alloc,
			Conditions: []metav1.Condition{{Type: v1.ConditionInitialized, Status: metav1.ConditionTrue}}},
	}
	inflight := &v1.NodeClaim{ObjectMeta: metav1.ObjectMeta{Name: "claim-b", CreationTimestamp: created, Labels: map[string]string{v1.LabelNodePool: "p"}},
		Spec: v1.NodeClaimSpec{NodeClassRef: v1.NodeClassReference{Name: "default"}}}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-a", Annotations: map[string]string{AnnotationDoNotDisrupt: "true"}, Labels: map[string]string{
			v1.LabelNodePool: "p", corev1.LabelInstanceTypeStable: "m.4x", corev1.LabelTopologyZone: "z1", v1.LabelCapacityType: "on-demand",
			corev1.LabelArchStable: "amd64"}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "dedicated", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{Allocatable: alloc, Conditions: []corev1.NodeCondition{
			{Type: "KernelReady", Status: corev1.ConditionFalse, LastTransitionTime: metav1.NewTime(t0.Add(-time.Minute))}}},
	}
	unmanaged := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "byo"}, Status: corev1.NodeStatus{Allocatable: alloc}}
	yes := true
	pods := []*corev1.Pod{
		testPod("web-1", 500, withLabels("app", "web")).Pod,
		testPod("ds-1", 100, func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", Name: "ds", Controller: &yes}}
		}).Pod,
		testPod("done", 100, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }).Pod,
		testPod("byo-pod", 100).Pod,
	}
	for _, p := range pods[:3] {
		p.Spec.NodeName = "node-a"
	}
	pods[3].Spec.NodeName = "byo"
	minAvail := intstr.FromInt32(1)
	pdbs := []*policyv1.PodDisruptionBudget{{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvail, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}}

	c, err := Build(Objects{
		NodePools: []*v1.NodePool{pool, bad}, NodeClaims: []*v1.NodeClaim{claim, inflight}, Nodes: []*corev1.Node{node, unmanaged},
		Pods: pods, PDBs: pdbs, SchedulingPools: map[string]scheduling.NodePool{"p": {Name: "p", InstanceTypes: types}},
	})
	if err == nil || !strings.Contains(err.Error(), "nodepool bad") {
		t.Fatalf("want an error naming nodepool bad, got %v", err)
	}
	if b := c.Pools["bad"].Budgets; len(b) != 1 || Allowed(b, v1.ReasonEmpty, 10, t0) != 0 || Allowed(b, v1.ReasonExpired, 10, t0) != 0 {
		t.Errorf("bad pool budgets %+v, want all reasons blocked", b)
	}
	p := c.Pools["p"]
	if p.Policy != v1.ConsolidationWhenEmptyOrUnderutilized || *p.ConsolidateAfter != time.Minute || p.TemplateHash != TemplateHash(pool) ||
		len(p.Requirements) != 1 || len(p.Budgets) != 1 || p.Budgets[0].Count(10) != 2 {
		t.Errorf("pool %+v", p)
	}
	if len(c.Nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(c.Nodes))
	}
	a := c.Nodes[0]
	if a.Name != "node-a" || a.NodeClaim != "claim-a" || a.Pool != "p" || a.InstanceType != "m.4x" || a.Price != 0.2 ||
		!a.Initialized || !a.DoNotDisrupt || a.ImageID != "ami-1" || a.TemplateHash != "abc" || *a.ExpireAfter != 336*time.Hour ||
		a.Allocatable[scheduling.CPU] != 3900 || len(a.Conditions) != 1 || len(a.Taints) != 1 {
		t.Errorf("node a = %+v", a)
	}
	if len(a.Pods) != 2 || a.Pods[1].DaemonSet != true || a.Empty() {
		t.Errorf("node a pods: %d, daemonset flag %v", len(a.Pods), a.Pods[1].DaemonSet)
	}
	if b := c.Nodes[1]; b.Initialized || b.Name != "claim-b" || len(b.Pods) != 0 {
		t.Errorf("in-flight claim %+v", b)
	}
	if byo := c.Nodes[2]; byo.Pool != "" || len(byo.Pods) != 1 {
		t.Errorf("unmanaged node %+v", byo)
	}
	if len(c.PDBs) != 1 || c.PDBs[0].Allowed != 0 {
		t.Errorf("pdbs %+v, want web allowing 0 (1 healthy, min 1)", c.PDBs)
	}
}
