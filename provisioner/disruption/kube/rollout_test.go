package kube

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/disruption"
	"github.com/autonode/autonode/sandbox/testenv"
)

// newAMI resolves every class to ami-new.
type newAMI struct{ resolver }

func (newAMI) AMIs(context.Context) (map[string]map[string]string, error) {
	return map[string]map[string]string{"default": {"amd64": "ami-new"}}, nil
}

// TestAMIRolloutWithinBudget changes the resolved AMI under three nodes of
// a pool whose Drifted budget is 1, on a real kube-apiserver. While one
// command is still in flight, the next round must not start another; once
// it is done, the next node goes, oldest first, until none runs the old AMI.
func TestAMIRolloutWithinBudget(t *testing.T) {
	env := testenv.Start(t, testenv.Options{CRDDirectoryPaths: []string{filepath.Join(root, "deploy/crds")}})
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(env.AdminConfig(), client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Create(ctx, &v1.NodePool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1.NodePoolSpec{
		Template: v1.NodeClaimTemplate{Spec: v1.NodeClaimTemplateSpec{NodeClassRef: v1.NodeClassReference{Name: "default"}}},
		Disruption: v1.Disruption{ConsolidateAfter: v1.NillableDuration{}, Budgets: []v1.Budget{
			{Nodes: "100%"}, {Nodes: "1", Reasons: []v1.DisruptionReason{v1.ReasonDrifted}}}},
	}}))
	alloc := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi"), corev1.ResourcePods: resource.MustParse("110")}
	mkClaim := func(name, ami string) {
		t.Helper()
		nc := &v1.NodeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1.LabelNodePool: "p",
			corev1.LabelInstanceTypeStable: "m.4x", corev1.LabelTopologyZone: "z1", v1.LabelCapacityType: "on-demand", corev1.LabelArchStable: "amd64"}},
			Spec: v1.NodeClaimSpec{NodeClassRef: v1.NodeClassReference{Name: "default"}}}
		must(c.Create(ctx, nc))
		nc.Status = v1.NodeClaimStatus{ImageID: ami, Allocatable: alloc, Conditions: []metav1.Condition{
			{Type: v1.ConditionInitialized, Status: metav1.ConditionTrue, Reason: "Test", LastTransitionTime: metav1.Now()}}}
		must(c.Status().Update(ctx, nc))
	}
	for i := range 3 {
		mkClaim(fmt.Sprintf("old-%d", i), "ami-old")
	}
	// Deleting is held until the test releases it, so the command stays
	// in flight across the next round.
	release := make(chan struct{})
	ex := &heldExecutor{Executor: &Executor{Client: c, PollInterval: 10 * time.Millisecond}, release: release}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := disruption.New(disruption.Options{})
	must(err)
	r := &disruption.Runner{Engine: eng, Ledger: disruption.NewLedger(), Clock: clocktesting.NewFakeClock(time.Now()), Logger: logger,
		Source:   &Source{Client: c, Resolver: newAMI{}, Logger: logger},
		Executor: ex}
	for round := range 3 {
		cmd, err := r.Step(ctx)
		must(err)
		if cmd == nil || cmd.Method != disruption.MethodDrift || cmd.Candidates[0].NodeClaim != fmt.Sprintf("old-%d", round) {
			t.Fatalf("round %d: want drift of old-%d, got %v", round, round, cmd)
		}
		// The command is still in flight: the budget of 1 is taken.
		if next, err := r.Step(ctx); err != nil || next != nil {
			t.Fatalf("round %d: second command %v (%v) while one is in flight with a Drifted budget of 1", round, next, err)
		}
		release <- struct{}{}
		r.Wait()
	}
	if cmd, err := r.Step(ctx); err != nil || cmd != nil {
		t.Fatalf("after the rollout: %v %v", cmd, err)
	}
	var claims v1.NodeClaimList
	must(c.List(ctx, &claims))
	for _, nc := range claims.Items {
		if nc.Status.ImageID != "ami-new" {
			t.Errorf("nodeclaim %s still runs %s", nc.Name, nc.Status.ImageID)
		}
	}
}

// heldExecutor waits for a release before each delete.
type heldExecutor struct {
	*Executor
	release chan struct{}
}

func (h *heldExecutor) Delete(ctx context.Context, cmd *disruption.Command) error {
	select {
	case <-h.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return h.Executor.Delete(ctx, cmd)
}
