package kubenode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/autonode/autonode/sandbox/testenv"
)

const providerID = "aws:///us-west-2a/i-0123456789abcdef0"

// cluster is a real apiserver with an admin client and an agent client that
// has only the permissions of deploy/rbac/agent.yaml.
type cluster struct {
	admin, agent kubernetes.Interface
}

func newCluster(t *testing.T) cluster {
	t.Helper()
	env := testenv.Start(t, testenv.Options{RBACManifests: []string{"../../deploy/rbac/agent.yaml"}})
	admin, err := kubernetes.NewForConfig(env.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	agent, err := kubernetes.NewForConfig(env.UserConfig(t, "autonode-agent", "autonode:agents"))
	if err != nil {
		t.Fatal(err)
	}
	return cluster{admin: admin, agent: agent}
}

func (c cluster) createNode(t *testing.T, name, providerID string, taints ...string) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{ProviderID: providerID}}
	for _, k := range taints {
		node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: k, Effect: corev1.TaintEffectNoSchedule})
	}
	if _, err := c.admin.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c cluster) node(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n, err := c.admin.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func hasTaint(n *corev1.Node, key string) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key })
}

// run starts the subsystem and returns a switch for the aggregate readiness.
func run(t *testing.T, c cluster, opts Options) (*Node, *atomic.Bool) {
	t.Helper()
	var allReady atomic.Bool
	opts.Client = c.agent
	opts.ProviderID = providerID
	opts.Version = "v1.2.3"
	opts.AllReady = func() error {
		if allReady.Load() {
			return nil
		}
		return errors.New("network: warming up")
	}
	opts.PollInterval = 10 * time.Millisecond
	opts.InitialBackoff = 10 * time.Millisecond
	opts.MaxBackoff = 100 * time.Millisecond
	opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	n := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return n, &allReady
}

// testWriter sends logs to t.Log, so they show only for failed tests.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTaintStaysUntilEverySubsystemIsReady(t *testing.T) {
	c := newCluster(t)
	c.createNode(t, "i-0123456789abcdef0", providerID, "example.com/other", StartupTaintKey)
	n, allReady := run(t, c, Options{InstanceID: "i-0123456789abcdef0"})

	eventually(t, "the node subsystem to be ready", n.Ready)
	node := c.node(t, "i-0123456789abcdef0")
	if got := node.Annotations[VersionAnnotation]; got != "v1.2.3" {
		t.Errorf("annotation = %q, want v1.2.3", got)
	}
	// Others are not ready: the taint must stay.
	time.Sleep(200 * time.Millisecond)
	if !hasTaint(c.node(t, "i-0123456789abcdef0"), StartupTaintKey) {
		t.Fatal("startup taint removed while a subsystem was not ready")
	}
	allReady.Store(true)
	eventually(t, "the startup taint to go", func() error {
		node := c.node(t, "i-0123456789abcdef0")
		if hasTaint(node, StartupTaintKey) {
			return errors.New("still tainted")
		}
		if !hasTaint(node, "example.com/other") {
			return fmt.Errorf("another taint was dropped: %v", node.Spec.Taints)
		}
		return nil
	})
}

func TestFindsNodeByProviderIDAcrossPages(t *testing.T) {
	c := newCluster(t)
	// Named after its DNS name and listed after other nodes, on page 3.
	for i := range 5 {
		c.createNode(t, fmt.Sprintf("a-other-%d", i), fmt.Sprintf("aws:///us-west-2a/i-00000000000000%03d", i))
	}
	c.createNode(t, "ip-10-0-0-4.us-west-2.compute.internal", providerID, StartupTaintKey)
	n, allReady := run(t, c, Options{InstanceID: "i-0123456789abcdef0", ListPageSize: 2})
	allReady.Store(true)
	eventually(t, "the node subsystem to be ready", n.Ready)
	eventually(t, "the startup taint to go", func() error {
		if hasTaint(c.node(t, "ip-10-0-0-4.us-west-2.compute.internal"), StartupTaintKey) {
			return errors.New("still tainted")
		}
		return nil
	})
	if got := n.NodeName(); got != "ip-10-0-0-4.us-west-2.compute.internal" {
		t.Errorf("NodeName() = %q", got)
	}
	for i := range 5 {
		if other := c.node(t, fmt.Sprintf("a-other-%d", i)); len(other.Annotations) != 0 {
			t.Errorf("node %s was annotated: %v", other.Name, other.Annotations)
		}
	}
}

func TestWaitsForRegistrationAndReregistration(t *testing.T) {
	c := newCluster(t)
	n, allReady := run(t, c, Options{InstanceID: "i-0123456789abcdef0"})
	allReady.Store(true)
	eventually(t, "not ready while no node exists", func() error {
		if err := n.Ready(); err == nil || !strings.Contains(err.Error(), "no Node has our providerID") {
			return fmt.Errorf("Ready() = %v", err)
		}
		return nil
	})
	c.createNode(t, "i-0123456789abcdef0", providerID, StartupTaintKey)
	eventually(t, "ready once registered", n.Ready)

	if err := c.admin.CoreV1().Nodes().Delete(context.Background(), "i-0123456789abcdef0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "not ready once deleted", func() error {
		if err := n.Ready(); err == nil {
			return errors.New("still ready")
		}
		return nil
	})
	// It comes back under another name: the agent must find it again.
	c.createNode(t, "ip-10-0-0-4.us-west-2.compute.internal", providerID, StartupTaintKey)
	eventually(t, "re-registered node converged", func() error {
		node := c.node(t, "ip-10-0-0-4.us-west-2.compute.internal")
		if node.Annotations[VersionAnnotation] != "v1.2.3" || hasTaint(node, StartupTaintKey) {
			return fmt.Errorf("annotations %v taints %v", node.Annotations, node.Spec.Taints)
		}
		return n.Ready()
	})
}

func TestReplacedByAnotherInstanceIsNotReady(t *testing.T) {
	c := newCluster(t)
	c.createNode(t, "i-0123456789abcdef0", providerID)
	n, _ := run(t, c, Options{InstanceID: "i-0123456789abcdef0"})
	eventually(t, "ready", n.Ready)
	// providerID is immutable, but the name can come back with another one.
	if err := c.admin.CoreV1().Nodes().Delete(context.Background(), "i-0123456789abcdef0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.createNode(t, "i-0123456789abcdef0", "aws:///us-west-2b/i-0fedcba9876543210")
	eventually(t, "not ready once the name belongs to another instance", func() error {
		if err := n.Ready(); err == nil || !strings.Contains(err.Error(), "no Node has our providerID") {
			return fmt.Errorf("Ready() = %v", err)
		}
		return nil
	})
	if got := c.node(t, "i-0123456789abcdef0").Annotations[VersionAnnotation]; got != "" {
		t.Errorf("the agent annotated another instance's node: %q", got)
	}
}
