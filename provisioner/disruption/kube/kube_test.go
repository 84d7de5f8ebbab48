package kube

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/disruption"
	"github.com/autonode/autonode/provisioner/scheduling"
	"github.com/autonode/autonode/sandbox/testenv"
)

const root = "../../.."

// types: 1 to 16 vCPU at $0.05 per vCPU-hour, on demand in z1.
func types() []*scheduling.InstanceType {
	var out []*scheduling.InstanceType
	for _, cpu := range []int64{1, 2, 4, 8, 16} {
		var r scheduling.Resources
		r[scheduling.CPU], r[scheduling.Memory], r[scheduling.Pods] = cpu*1000, cpu<<32, 110
		out = append(out, &scheduling.InstanceType{Name: fmt.Sprintf("m.%dx", cpu), Arch: "amd64", Capacity: r, Allocatable: r,
			Offerings: []scheduling.Offering{{Zone: "z1", CapacityType: "on-demand", Price: 0.05 * float64(cpu), Available: true}}})
	}
	return out
}

type resolver struct{}

func (resolver) SchedulingPools(_ context.Context, pools []*v1.NodePool) (map[string]scheduling.NodePool, error) {
	out := map[string]scheduling.NodePool{}
	for _, p := range pools {
		out[p.Name] = scheduling.NodePool{Name: p.Name, InstanceTypes: types()}
	}
	return out, nil
}

func (resolver) AMIs(context.Context) (map[string]map[string]string, error) {
	return map[string]map[string]string{"default": {"amd64": "ami-1"}}, nil
}

// launcher creates an Initialized NodeClaim per replacement, as the
// provisioning and lifecycle controllers would once the node joins.
type launcher struct {
	c    client.Client
	mu   sync.Mutex
	made []string
}

func (l *launcher) Launch(ctx context.Context, nn scheduling.NewNode) (string, error) {
	l.mu.Lock()
	name := fmt.Sprintf("replacement-%d", len(l.made))
	l.made = append(l.made, name)
	l.mu.Unlock()
	nc := &v1.NodeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1.LabelNodePool: nn.NodePool}},
		Spec: v1.NodeClaimSpec{NodeClassRef: v1.NodeClassReference{Name: "default"}}}
	if err := l.c.Create(ctx, nc); err != nil {
		return "", err
	}
	nc.Status.Conditions = []metav1.Condition{{Type: v1.ConditionInitialized, Status: metav1.ConditionTrue, Reason: "Test", LastTransitionTime: metav1.Now()}}
	return name, l.c.Status().Update(ctx, nc)
}

// TestRunnerAgainstAPIServer consolidates an underused 16-vCPU node on a
// real kube-apiserver: the Source reads the objects, the command is
// validated after the (fake) delay, the Node is tainted, the NodeClaim
// marked Disrupting, a replacement is launched and waited for, and the
// candidate's NodeClaim is deleted, with Events on both objects.
func TestRunnerAgainstAPIServer(t *testing.T) {
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
		Template:   v1.NodeClaimTemplate{Spec: v1.NodeClaimTemplateSpec{NodeClassRef: v1.NodeClassReference{Name: "default"}}},
		Disruption: v1.Disruption{ConsolidateAfter: v1.After(0), Budgets: []v1.Budget{{Nodes: "100%"}}},
	}}))
	alloc := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("16"), corev1.ResourceMemory: resource.MustParse("64Gi"), corev1.ResourcePods: resource.MustParse("110")}
	lbl := map[string]string{v1.LabelNodePool: "p", corev1.LabelInstanceTypeStable: "m.16x", corev1.LabelTopologyZone: "z1",
		v1.LabelCapacityType: "on-demand", corev1.LabelArchStable: "amd64", corev1.LabelHostname: "node-a"}
	claim := &v1.NodeClaim{ObjectMeta: metav1.ObjectMeta{Name: "claim-a", Labels: lbl},
		Spec: v1.NodeClaimSpec{NodeClassRef: v1.NodeClassReference{Name: "default"}}}
	must(c.Create(ctx, claim))
	claim.Status = v1.NodeClaimStatus{NodeName: "node-a", ImageID: "ami-1", Allocatable: alloc,
		Conditions: []metav1.Condition{{Type: v1.ConditionInitialized, Status: metav1.ConditionTrue, Reason: "Test", LastTransitionTime: metav1.Now()}}}
	must(c.Status().Update(ctx, claim))
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: lbl}}
	must(c.Create(ctx, node))
	node.Status = corev1.NodeStatus{Allocatable: alloc, Capacity: alloc,
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}}
	must(c.Status().Update(ctx, node))
	for i, cpu := range []string{"1500m", "1"} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-%d", i), Namespace: "default", Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "c", Image: "x", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse("1Gi")}}}}}}
		must(c.Create(ctx, p))
	}

	// A PDB that allows no disruption (its pods are not Ready: no kubelet
	// runs them) keeps the node: nothing is decided.
	src := &Source{Client: c, Resolver: resolver{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	minAvail := intstr.FromInt32(1)
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvail, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
	must(c.Create(ctx, pdb))
	eng0, err := disruption.New(disruption.Options{})
	must(err)
	cl, err := src.Cluster(ctx)
	must(err)
	if len(cl.PDBs) != 1 || cl.PDBs[0].Allowed != 0 || len(cl.Nodes) != 1 || len(cl.Nodes[0].Pods) != 2 {
		t.Fatalf("cluster from the apiserver: %d pdbs, %d nodes", len(cl.PDBs), len(cl.Nodes))
	}
	if cmd, err := eng0.Decide(ctx, cl, time.Now()); err != nil || cmd != nil {
		t.Fatalf("decided %v (%v) past a PDB allowing nothing", cmd, err)
	}
	must(c.Delete(ctx, pdb))

	clk := clocktesting.NewFakeClock(time.Now())
	rec := events.NewFakeRecorder(10)
	eng, err := disruption.New(disruption.Options{})
	must(err)
	l := &launcher{c: c}
	r := &disruption.Runner{
		Engine: eng, Ledger: disruption.NewLedger(), Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Source:   src,
		Executor: &Executor{Client: c, Launcher: l, PollInterval: 10 * time.Millisecond}, Recorder: Recorder{Events: rec},
	}
	done := make(chan *disruption.Command, 1)
	go func() {
		cmd, err := r.Step(ctx)
		if err != nil {
			t.Error(err)
		}
		done <- cmd
	}()
	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	clk.Step(15 * time.Second)
	cmd := <-done
	if cmd == nil || cmd.Method != disruption.MethodSingleNode || len(cmd.Replacements) != 1 || cmd.Candidates[0].NodeClaim != "claim-a" {
		t.Fatalf("want a single-node replacement of claim-a, got %v", cmd)
	}
	r.Wait()

	must(c.Get(ctx, client.ObjectKey{Name: "node-a"}, node))
	tainted := false
	for _, tt := range node.Spec.Taints {
		tainted = tainted || tt.Key == disruption.TaintDisrupted
	}
	if !tainted {
		t.Errorf("node-a taints %v, want %s", node.Spec.Taints, disruption.TaintDisrupted)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "claim-a"}, claim); err == nil {
		t.Errorf("claim-a still there (deletion %v)", claim.DeletionTimestamp)
	}
	if len(l.made) != 1 {
		t.Fatalf("replacements launched: %v", l.made)
	}
	var got []string
	for len(rec.Events) > 0 {
		got = append(got, <-rec.Events)
	}
	if len(got) != 2 {
		t.Errorf("events %v, want one on the NodeClaim and one on the Node", got)
	}
}
