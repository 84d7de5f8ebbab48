package testenv_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/autonode/autonode/sandbox/testenv"
)

const agentRBAC = "../../deploy/rbac/agent.yaml"

// pollTimeout bounds waits for the control plane to act; it guards against
// hangs and asserts nothing about speed.
const pollTimeout = 2 * time.Minute

func clientset(t *testing.T, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func eventually(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), pollTimeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// TestAPIServerRBACAndRestart checks that users are bound only by applied
// RBAC, and that clients keep working across an apiserver restart.
func TestAPIServerRBACAndRestart(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{RBACManifests: []string{agentRBAC}})
	ctx := t.Context()

	// Apply: several documents, empty ones, and a namespaced object without
	// a namespace, which lands in "default". Applying twice is a no-op.
	manifest := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(manifest, []byte(strings.Join([]string{
		"# leading comment",
		"---",
		"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: v",
		"---",
		"---",
		"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: applied-ns",
		"---",
	}, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	env.Apply(t, manifest, manifest)
	admin := clientset(t, env.AdminConfig())
	if cm, err := admin.CoreV1().ConfigMaps(metav1.NamespaceDefault).Get(ctx, "applied", metav1.GetOptions{}); err != nil || cm.Data["k"] != "v" {
		t.Errorf("applied ConfigMap: %v, %v", cm.Data, err)
	}
	if _, err := admin.CoreV1().Namespaces().Get(ctx, "applied-ns", metav1.GetOptions{}); err != nil {
		t.Errorf("applied Namespace: %v", err)
	}

	agent := clientset(t, env.UserConfig(t, "agent-x", "autonode:agents"))
	nobody := clientset(t, env.UserConfig(t, "nobody"))

	tests := []struct {
		name      string
		list      func() error
		forbidden bool
	}{
		{"agent lists nodes", func() error {
			_, err := agent.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		}, false},
		{"agent lists secrets", func() error {
			_, err := agent.CoreV1().Secrets(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
			return err
		}, true},
		{"user without groups lists nodes", func() error {
			_, err := nobody.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.list()
			if tt.forbidden && !apierrors.IsForbidden(err) {
				t.Errorf("got %v, want Forbidden", err)
			}
			if !tt.forbidden && err != nil {
				t.Errorf("got %v, want success", err)
			}
		})
	}

	t.Run("restart", func(t *testing.T) {
		host := env.Host()
		env.RestartAPIServer(t)
		if env.Host() != host {
			t.Fatalf("apiserver moved from %s to %s", host, env.Host())
		}
		// The same client, with its old connections gone, works again.
		eventually(t, "the agent client to list nodes after restart", func(ctx context.Context) (bool, error) {
			_, err := agent.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err == nil, nil
		})
		// A fresh user still authenticates: the client CA survived.
		if _, err := clientset(t, env.UserConfig(t, "agent-y", "autonode:agents")).CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("new agent user after restart: %v", err)
		}
	})
}

// TestSchedulerAndControllerManager checks that the optional components act:
// a ReplicaSet gets pods (controller-manager) and they are bound to a Node
// (scheduler).
func TestSchedulerAndControllerManager(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t, testenv.Options{Scheduler: true, ControllerManager: true})
	cs := clientset(t, env.AdminConfig())
	ctx := t.Context()

	// A fake Node, standing in for a kubelet: Ready, with room for pods.
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "fake-node-1"}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("4"),
		corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	// The controller-manager's node controllers update the Node too.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Capacity, n.Status.Allocatable = resources, resources
		n.Status.Conditions = []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
		}}
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("making node %s Ready: %v", node.Name, err)
	}

	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sched"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "demo"}
	podSpec := corev1.PodSpec{Containers: []corev1.Container{{
		Name: "main", Image: "registry.invalid/pause:1",
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}},
	}}}

	t.Run("scheduler binds a pod", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "solo", Namespace: ns.Name}, Spec: podSpec}
		if _, err := cs.CoreV1().Pods(ns.Name).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "pod solo to be bound", func(ctx context.Context) (bool, error) {
			p, err := cs.CoreV1().Pods(ns.Name).Get(ctx, "solo", metav1.GetOptions{})
			return err == nil && p.Spec.NodeName == node.Name, err
		})
	})

	t.Run("controller-manager runs a ReplicaSet", func(t *testing.T) {
		rs := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: ns.Name},
			Spec: appsv1.ReplicaSetSpec{
				Replicas: ptr.To[int32](2),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec},
			},
		}
		rs, err := cs.AppsV1().ReplicaSets(ns.Name).Create(ctx, rs, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "two bound pods owned by ReplicaSet demo", func(ctx context.Context) (bool, error) {
			pods, err := cs.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{LabelSelector: "app=demo"})
			if err != nil {
				return false, err
			}
			bound := 0
			for _, p := range pods.Items {
				if metav1.IsControlledBy(&p, rs) && p.Spec.NodeName == node.Name {
					bound++
				}
			}
			return bound == 2, nil
		})
	})
}
