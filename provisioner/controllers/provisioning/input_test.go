package provisioning

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/cloud"
	"github.com/autonode/autonode/provisioner/controllers/claimutil"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// staticCloud resolves every NodeClass to the same instance types.
type staticCloud []*cloud.InstanceType

func (s staticCloud) ResolveNodeClass(_ context.Context, nc *v1.NodeClass) (*cloud.ResolvedNodeClass, error) {
	return &cloud.ResolvedNodeClass{Name: nc.Name}, nil
}

func (s staticCloud) InstanceTypes(context.Context, *cloud.ResolvedNodeClass) ([]*cloud.InstanceType, error) {
	return s, nil
}

// TestBuildInputJoiningNode plans a pod nominated onto a claim whose Node
// has just joined: whether the round keeps it there or makes a duplicate
// claim depends on how the Node's taints are modelled at each step.
func TestBuildInputJoiningNode(t *testing.T) {
	t.Parallel()
	startup := corev1.Taint{Key: v1.StartupTaintAgentNotReady, Effect: corev1.TaintEffectNoSchedule}
	// The TaintNodesByCondition admission plugin puts this on every new
	// Node; the node lifecycle controller lifts it a while after Ready.
	notReady := corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule}
	other := corev1.Taint{Key: "example.com/dedicated", Effect: corev1.TaintEffectNoSchedule}
	for _, tt := range []struct {
		name        string
		initialized bool
		taints      []corev1.Taint
		// boundMeanwhile: kube-scheduler binds the pod between the
		// round's listing of pending pods and of each node's pods.
		boundMeanwhile bool
		wantNew        int
	}{
		{"registered, startup and not-ready taints still on", false, []corev1.Taint{startup, notReady}, false, 0},
		{"registered, only not-ready left", false, []corev1.Taint{notReady}, false, 0},
		{"initialized, clean", true, nil, false, 0},
		{"initialized, pod bound since it was listed pending", true, nil, true, 0},
		// Lifecycle only initializes once the ephemeral taints are gone
		// (TestNotInitialized), because from then on the Node's taints are
		// taken as they are: a pod kept off by one needs another node.
		{"initialized, not-ready back", true, []corev1.Taint{notReady}, false, 1},
		{"registered, a taint that does not go away", false, []corev1.Taint{startup, other}, false, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := solveJoining(t, tt.initialized, tt.taints, tt.boundMeanwhile)
			if len(got.NewNodes) != tt.wantNew {
				t.Fatalf("%d new nodes, want %d (existing %v, unschedulable %v)", len(got.NewNodes), tt.wantNew, got.Existing, got.Unschedulable)
			}
			wantPlanned := 1
			if tt.boundMeanwhile || tt.wantNew > 0 {
				wantPlanned = 0 // bound already, or planned elsewhere
			}
			if len(got.Existing["i-joining"]) != wantPlanned {
				t.Errorf("pod not planned onto the joining node: %v", got.Existing)
			}
		})
	}
}

func solveJoining(t *testing.T, initialized bool, taints []corev1.Taint, boundMeanwhile bool) scheduling.Result {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	its := staticCloud{{
		Name: "m5.large", Arch: "amd64",
		Labels:      map[string]string{corev1.LabelInstanceTypeStable: "m5.large", corev1.LabelArchStable: "amd64", corev1.LabelOSStable: "linux"},
		Capacity:    list("cpu", "2", "memory", "8Gi", "pods", "29"),
		Allocatable: list("cpu", "1930m", "memory", "7Gi", "pods", "29"),
		Offerings:   []cloud.Offering{{Zone: "us-west-2a", CapacityType: "on-demand", Price: 0.096, Available: true}},
	}}
	pool := &v1.NodePool{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: v1.NodePoolSpec{Template: v1.NodeClaimTemplate{Spec: v1.NodeClaimTemplateSpec{
			NodeClassRef: v1.NodeClassReference{Name: "default"},
		}}},
	}
	class := &v1.NodeClass{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	const providerID = "aws:///us-west-2a/i-joining"
	claim := &v1.NodeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "p-abc", Labels: map[string]string{v1.LabelNodePool: "p"}},
		Spec: v1.NodeClaimSpec{
			StartupTaints: []corev1.Taint{{Key: v1.StartupTaintAgentNotReady, Effect: corev1.TaintEffectNoSchedule}},
			NodeClassRef:  v1.NodeClassReference{Name: "default"},
		},
		Status: v1.NodeClaimStatus{ProviderID: providerID, NodeName: "i-joining", Capacity: its[0].Capacity, Allocatable: its[0].Allocatable},
	}
	claimutil.SetCondition(claim, v1.ConditionRegistered, metav1.ConditionTrue, "Registered", "")
	if initialized {
		claimutil.SetCondition(claim, v1.ConditionInitialized, metav1.ConditionTrue, "Initialized", "")
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "i-joining", Labels: map[string]string{
			corev1.LabelHostname: "i-joining", v1.LabelNodePool: "p", corev1.LabelInstanceTypeStable: "m5.large",
			corev1.LabelTopologyZone: "us-west-2a", corev1.LabelArchStable: "amd64", corev1.LabelOSStable: "linux",
		}},
		Spec: corev1.NodeSpec{ProviderID: providerID, Taints: taints},
		Status: corev1.NodeStatus{
			Allocatable: its[0].Allocatable,
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", UID: "web-uid"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
			// More than half the node: counted twice, it needs a second.
			Requests: list("cpu", "1200m", "memory", "1Gi"),
		}}}},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable}}},
	}
	inCache := pod
	if boundMeanwhile {
		inCache = pod.DeepCopy()
		inCache.Spec.NodeName = node.Name
		inCache.Status = corev1.PodStatus{Phase: corev1.PodRunning}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(pool, class, claim, node, inCache, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}}).
		WithIndex(&corev1.Pod{}, claimutil.IndexPodNodeName, func(o client.Object) []string { return []string{o.(*corev1.Pod).Spec.NodeName} }).
		Build()
	p := New(c, its, events.NewFakeRecorder(10), Options{})
	cluster, err := p.BuildInput(t.Context(), []*corev1.Pod{pod})
	if err != nil {
		t.Fatal(err)
	}
	res, err := scheduling.Solve(t.Context(), cluster.Input)
	if err != nil {
		t.Fatal(err)
	}
	return res
}
