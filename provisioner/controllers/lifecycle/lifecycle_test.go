package lifecycle

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/cloud"
	"github.com/autonode/autonode/provisioner/controllers/claimutil"
)

func TestNotInitialized(t *testing.T) {
	t.Parallel()
	startup := corev1.Taint{Key: v1.StartupTaintAgentNotReady, Effect: corev1.TaintEffectNoSchedule}
	claim := &v1.NodeClaim{Spec: v1.NodeClaimSpec{
		StartupTaints: []corev1.Taint{startup},
		Resources: v1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("1"), "nvidia.com/gpu": resource.MustParse("1"),
		}},
	}}
	ready := []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	gpu := corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")}
	for _, tt := range []struct {
		name string
		node corev1.Node
		want string
	}{
		{"initialized", corev1.Node{Status: corev1.NodeStatus{Conditions: ready, Allocatable: gpu}}, ""},
		{"not ready", corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse}}, Allocatable: gpu}}, "not Ready"},
		{"no ready condition", corev1.Node{Status: corev1.NodeStatus{Allocatable: gpu}}, "not Ready"},
		{"startup taint", corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{startup}}, Status: corev1.NodeStatus{Conditions: ready, Allocatable: gpu}}, "startup taint"},
		{"not-ready taint not yet lifted", corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule}}}, Status: corev1.NodeStatus{Conditions: ready, Allocatable: gpu}}, "node.kubernetes.io/not-ready:NoSchedule"},
		{"cloud provider uninitialized", corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: claimutil.TaintCloudProviderUninitialized, Value: "true", Effect: corev1.TaintEffectNoSchedule}}}, Status: corev1.NodeStatus{Conditions: ready, Allocatable: gpu}}, "uninitialized"},
		{"gpu not advertised", corev1.Node{Status: corev1.NodeStatus{Conditions: ready}}, "nvidia.com/gpu"},
		{"gpu advertised as zero", corev1.Node{Status: corev1.NodeStatus{Conditions: ready, Allocatable: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("0")}}}, "nvidia.com/gpu"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := notInitialized(claim, &tt.node)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("notInitialized = %q, want %q", got, tt.want)
			}
		})
	}
}

// unusedCloud fails the test if a launch is attempted.
type unusedCloud struct{ t *testing.T }

func (u unusedCloud) ResolveNodeClass(context.Context, *v1.NodeClass) (*cloud.ResolvedNodeClass, error) {
	u.t.Error("ResolveNodeClass called")
	return nil, nil
}

func (u unusedCloud) Launch(context.Context, *v1.NodeClaim, *cloud.ResolvedNodeClass) (*cloud.Launched, error) {
	u.t.Error("Launch called")
	return nil, nil
}

// TestRegistrationTimeout checks the liveness rule: a launched claim whose
// Node has not registered is kept until RegistrationTTL has passed since
// the launch, and deleted after.
func TestRegistrationTimeout(t *testing.T) {
	t.Parallel()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	launchedAt := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	claim := &v1.NodeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "c", Finalizers: []string{claimutil.TerminationFinalizer}},
		Status: v1.NodeClaimStatus{
			ProviderID: "aws:///us-west-2a/i-0123456789abcdef0",
			Conditions: []metav1.Condition{{Type: v1.ConditionLaunched, Status: metav1.ConditionTrue, Reason: "Launched", LastTransitionTime: metav1.NewTime(launchedAt)}},
		},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(claim).WithStatusSubresource(claim).
		WithIndex(&corev1.Node{}, claimutil.IndexNodeProviderID, func(o client.Object) []string { return []string{o.(*corev1.Node).Spec.ProviderID} }).
		Build()
	now := launchedAt.Add(14 * time.Minute)
	ctrl := New(c, c, unusedCloud{t}, events.NewFakeRecorder(10), Options{Now: func() time.Time { return now }})
	ctx := t.Context()
	get := func() (*v1.NodeClaim, error) {
		var got v1.NodeClaim
		err := c.Get(ctx, client.ObjectKey{Name: "c"}, &got)
		return &got, err
	}
	cur, _ := get()
	res, err := ctrl.Reconcile(ctx, cur)
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != time.Minute {
		t.Errorf("requeue after %s, want the minute left", res.RequeueAfter)
	}
	if cur, err = get(); err != nil || cur.DeletionTimestamp != nil {
		t.Fatalf("claim deleted before its registration deadline (err %v)", err)
	}
	now = launchedAt.Add(15*time.Minute + time.Second)
	if _, err := ctrl.Reconcile(ctx, cur); err != nil {
		t.Fatal(err)
	}
	cur, err = get()
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if err == nil && cur.DeletionTimestamp == nil {
		t.Error("claim still there after its registration deadline")
	}
}
