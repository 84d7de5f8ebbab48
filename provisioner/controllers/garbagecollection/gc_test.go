package garbagecollection

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/cloud"
)

// fakeCloud holds instances by id; terminated ones are gone.
type fakeCloud struct {
	instances  map[string]*cloud.Instance
	terminated []string
}

func (f *fakeCloud) List(context.Context) ([]*cloud.Instance, error) {
	var out []*cloud.Instance
	for _, i := range f.instances {
		out = append(out, i)
	}
	return out, nil
}

func (f *fakeCloud) Get(_ context.Context, id string) (*cloud.Instance, error) {
	if i, ok := f.instances[id]; ok {
		return i, nil
	}
	return nil, fmt.Errorf("instance %s: %w", id, cloud.ErrInstanceNotFound)
}

func (f *fakeCloud) Terminate(_ context.Context, id string) error {
	if _, ok := f.instances[id]; !ok {
		return fmt.Errorf("instance %s: %w", id, cloud.ErrInstanceNotFound)
	}
	delete(f.instances, id)
	f.terminated = append(f.terminated, id)
	return nil
}

func TestCollect(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	inst := func(id, claim string, age time.Duration) *cloud.Instance {
		return &cloud.Instance{ID: id, Zone: "us-west-2a", State: "running", LaunchTime: now.Add(-age), Tags: map[string]string{v1.TagNodeClaim: claim}}
	}
	launched := []metav1.Condition{{Type: v1.ConditionLaunched, Status: metav1.ConditionTrue, Reason: "Launched", LastTransitionTime: metav1.NewTime(now)}}
	claim := func(name, providerID string, conds []metav1.Condition) *v1.NodeClaim {
		return &v1.NodeClaim{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: v1.NodeClaimStatus{ProviderID: providerID, Conditions: conds}}
	}
	fc := &fakeCloud{instances: map[string]*cloud.Instance{
		"i-owned":     inst("i-owned", "a", time.Hour),
		"i-orphan":    inst("i-orphan", "gone", time.Hour),
		"i-young":     inst("i-young", "gone", 10*time.Second),
		"i-duplicate": inst("i-duplicate", "a", time.Hour), // a second launch for claim a
		"i-launching": inst("i-launching", "b", time.Hour), // claim b's status not written yet
	}}
	scheme := runtime.NewScheme()
	if err := v1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		claim("a", cloud.ProviderID("us-west-2a", "i-owned"), launched),
		claim("b", "", nil),
		claim("lost", cloud.ProviderID("us-west-2a", "i-vanished"), launched),
		claim("unlaunched", cloud.ProviderID("us-west-2a", "i-not-yet"), nil),
	).Build()
	g := New(c, fc, events.NewFakeRecorder(10), Options{Now: func() time.Time { return now }})
	if err := g.Collect(t.Context()); err != nil {
		t.Fatal(err)
	}
	slices.Sort(fc.terminated)
	if want := []string{"i-duplicate", "i-orphan"}; !slices.Equal(fc.terminated, want) {
		t.Errorf("terminated %v, want %v", fc.terminated, want)
	}
	for name, wantGone := range map[string]bool{"a": false, "b": false, "lost": true, "unlaunched": false} {
		err := c.Get(t.Context(), client.ObjectKey{Name: name}, &v1.NodeClaim{})
		if gone := apierrors.IsNotFound(err); gone != wantGone {
			t.Errorf("nodeclaim %s gone = %v, want %v (err %v)", name, gone, wantGone, err)
		}
	}
}
