package diagnostics

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/autonode/autonode/health/diagnostics/v1alpha1"
	"github.com/autonode/autonode/sandbox/s3"
	"github.com/autonode/autonode/sandbox/testenv"
)

// cluster is a real apiserver with the NodeDiagnostic CRD and the agent's
// RBAC, an admin client, and an S3 emulator.
type cluster struct {
	env    *testenv.Env
	scheme *runtime.Scheme
	admin  client.Client
	s3     *s3Fixture
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	env := testenv.Start(t, testenv.Options{
		CRDDirectoryPaths: []string{"../../deploy/crds"},
		RBACManifests:     []string{"../../deploy/rbac/agent.yaml"},
	})
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(env.AdminConfig(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{env: env, scheme: scheme, admin: admin, s3: newS3(t)}
}

// agentClient is a client for the agent of node, bound only by
// deploy/rbac/agent.yaml.
func (c *cluster) agentClient(t *testing.T, node string) client.Client {
	t.Helper()
	cl, err := client.New(c.env.UserConfig(t, "autonode-agent:"+node, "autonode:agents"), client.Options{Scheme: c.scheme})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func uniqueNode(t *testing.T) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "i-" + hex.EncodeToString(b[:])
}

// nodeOptions are Options whose paths are all under a fresh folder; the
// capture reads fixtures, not the host.
func nodeOptions(t *testing.T, node string) Options {
	root := t.TempDir()
	return Options{
		NodeName:   node,
		LogRoot:    root,
		SupportDir: filepath.Join(root, "support"),
		Collector: CollectorOptions{
			JournalDir: filepath.Join(root, "no-journal"),
			KmsgPath:   writeKmsgFixture(t),
			State:      map[string]StateFunc{"ipam.json": func(context.Context) ([]byte, error) { return []byte(`{}`), nil }},
			Containerd: func(context.Context) ([]byte, error) { return []byte("containerd fixture"), nil },
		},
		UploadAttempts: 2,
		UploadBackoff:  time.Millisecond,
	}
}

func (c *cluster) create(t *testing.T, node, dest string) *v1alpha1.NodeDiagnostic {
	t.Helper()
	nd := &v1alpha1.NodeDiagnostic{
		ObjectMeta: metav1.ObjectMeta{Name: node},
		Spec: v1alpha1.NodeDiagnosticSpec{LogCapture: &v1alpha1.LogCapture{
			Destination: dest, Categories: []v1alpha1.Category{v1alpha1.CategoryRuntime}}},
	}
	if err := c.admin.Create(context.Background(), nd); err != nil {
		t.Fatalf("creating nodediagnostic %s: %v", node, err)
	}
	return nd
}

// reconcile runs one reconcile of node's NodeDiagnostic, as the agent, and
// returns the object afterwards.
func (c *cluster) reconcile(t *testing.T, r *Reconciler, node string) *v1alpha1.NodeDiagnostic {
	t.Helper()
	ctx := context.Background()
	nd := &v1alpha1.NodeDiagnostic{}
	if err := c.admin.Get(ctx, client.ObjectKey{Name: node}, nd); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(ctx, nd); err != nil {
		t.Fatalf("reconcile %s: %v", node, err)
	}
	if err := c.admin.Get(ctx, client.ObjectKey{Name: node}, nd); err != nil {
		t.Fatal(err)
	}
	return nd
}

func logCapture(t *testing.T, nd *v1alpha1.NodeDiagnostic) v1alpha1.CaptureStatus {
	t.Helper()
	for _, cs := range nd.Status.CaptureStatuses {
		if cs.Type == v1alpha1.CaptureTypeLogCapture {
			return cs
		}
	}
	t.Fatalf("nodediagnostic %s has no LogCapture status: %+v", nd.Name, nd.Status)
	return v1alpha1.CaptureStatus{}
}

func bundles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestPrivilegedReconcile(t *testing.T) {
	c := startCluster(t)

	t.Run("kept on the node, not redone, retention", func(t *testing.T) {
		node := uniqueNode(t)
		opts := nodeOptions(t, node)
		opts.Keep = 2
		r := NewReconciler(c.agentClient(t, node), c.agentClient(t, node), opts)
		c.create(t, node, v1alpha1.DestinationNode)

		nd := c.reconcile(t, r, node)
		cs := logCapture(t, nd)
		cond := meta.FindStatusCondition(nd.Status.Conditions, v1alpha1.ConditionSucceeded)
		if cs.State != v1alpha1.CaptureSucceeded || cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != v1alpha1.ReasonStoredOnNode {
			t.Fatalf("status %+v", nd.Status)
		}
		if !meta.IsStatusConditionTrue(nd.Status.Conditions, v1alpha1.ConditionStarted) || nd.Status.ObservedGeneration != nd.Generation {
			t.Fatalf("status %+v", nd.Status)
		}
		want := "/api/v1/nodes/" + node + "/proxy/logs/support/" + filepath.Base(cs.NodePath)
		if cs.Location != want || filepath.Dir(cs.NodePath) != opts.SupportDir || cs.SizeBytes <= 0 {
			t.Fatalf("location %q, path %q, size %d; want location %q", cs.Location, cs.NodePath, cs.SizeBytes, want)
		}
		f, err := os.Open(cs.NodePath)
		if err != nil {
			t.Fatal(err)
		}
		files := readBundle(t, f)
		f.Close()
		for _, name := range []string{JournalAbsentFile, "runtime/containerd.txt", "state/ipam.json", "manifest.json"} {
			if _, ok := files[name]; !ok {
				t.Errorf("bundle lacks %s; has %v", name, keys(files))
			}
		}

		// Level-based: the finished capture of this generation stays done.
		again := c.reconcile(t, r, node)
		if got := bundles(t, opts.SupportDir); len(got) != 1 || again.ResourceVersion != nd.ResourceVersion {
			t.Fatalf("a second reconcile captured again: %v, resourceVersion %s -> %s", got, nd.ResourceVersion, again.ResourceVersion)
		}

		// Each spec change captures anew; only Keep bundles stay.
		for i, cats := range [][]v1alpha1.Category{{v1alpha1.CategoryDevices}, {v1alpha1.CategoryRuntime, v1alpha1.CategoryDevices}} {
			again.Spec.LogCapture.Categories = cats
			if err := c.admin.Update(context.Background(), again); err != nil {
				t.Fatal(err)
			}
			again = c.reconcile(t, r, node)
			if again.Status.ObservedGeneration != int64(i+2) || logCapture(t, again).State != v1alpha1.CaptureSucceeded {
				t.Fatalf("after spec change %d: %+v", i, again.Status)
			}
		}
		got := bundles(t, opts.SupportDir)
		if len(got) != 2 || !strings.Contains(got[0]+got[1], "-g3-") || strings.Contains(got[0]+got[1], "-g1-") {
			t.Fatalf("support folder %v, want the bundles of generations 2 and 3", got)
		}
	})

	t.Run("uploaded to a presigned URL", func(t *testing.T) {
		node := uniqueNode(t)
		opts := nodeOptions(t, node)
		r := NewReconciler(c.agentClient(t, node), c.agentClient(t, node), opts)
		c.create(t, node, c.s3.presign(t, node+"/bundle.tar.gz"))
		nd := c.reconcile(t, r, node)
		cs := logCapture(t, nd)
		if cs.State != v1alpha1.CaptureSucceeded || cs.Reason != v1alpha1.ReasonUploaded || strings.Contains(cs.Location, "?") ||
			!strings.HasSuffix(cs.Location, "/"+testBucket+"/"+node+"/bundle.tar.gz") {
			t.Fatalf("status %+v", nd.Status)
		}
		obj, ok := c.s3.server.Object(testBucket, node+"/bundle.tar.gz")
		if !ok || int64(len(obj)) != cs.SizeBytes {
			t.Fatalf("stored %d bytes (found %v), status says %d", len(obj), ok, cs.SizeBytes)
		}
		if files := readBundle(t, strings.NewReader(string(obj))); files["runtime/containerd.txt"] != "containerd fixture" {
			t.Fatalf("uploaded bundle holds %v", keys(files))
		}
		if got := bundles(t, opts.SupportDir); len(got) != 0 {
			t.Fatalf("uploaded bundle left on the node: %v", got)
		}
	})

	failures := []struct {
		name   string
		fault  s3.Fault
		tamper bool
		max    int64
		reason string
		puts   int
		detail string
	}{
		{name: "upload fails with 500", fault: s3.Fault{ServerErrorFraction: 1}, reason: v1alpha1.ReasonUploadFailed, puts: 2, detail: "HTTP 500 InternalError"},
		{name: "tampered URL", tamper: true, reason: v1alpha1.ReasonUploadFailed, puts: 1, detail: "SignatureDoesNotMatch"},
		{name: "bundle too large", max: 16, reason: v1alpha1.ReasonBundleTooLarge, puts: 0, detail: "exceeds the 16-byte limit"},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			node := uniqueNode(t)
			f := newS3(t)
			f.server.SetFault(tc.fault)
			opts := nodeOptions(t, node)
			opts.MaxUploadBytes = tc.max
			r := NewReconciler(c.agentClient(t, node), c.agentClient(t, node), opts)
			dest := f.presign(t, node+"/bundle.tar.gz")
			if tc.tamper {
				dest = tamperSignature(dest)
			}
			c.create(t, node, dest)
			nd := c.reconcile(t, r, node)
			cs := logCapture(t, nd)
			cond := meta.FindStatusCondition(nd.Status.Conditions, v1alpha1.ConditionSucceeded)
			if cs.State != v1alpha1.CaptureFailed || cs.Reason != tc.reason || cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != tc.reason {
				t.Fatalf("status %+v", nd.Status)
			}
			if !strings.Contains(cs.Message, tc.detail) || !strings.Contains(cs.Message, "kubectl get --raw "+cs.Location) ||
				strings.Contains(cs.Message, "X-Amz-Signature") {
				t.Fatalf("message %q", cs.Message)
			}
			if _, err := os.Stat(cs.NodePath); err != nil || !strings.HasPrefix(cs.Location, "/api/v1/nodes/"+node+"/proxy/logs/support/") {
				t.Fatalf("bundle not kept on the node: %v (location %q)", err, cs.Location)
			}
			if n := f.server.Calls(http.MethodPut); n != tc.puts {
				t.Fatalf("%d PUTs, want %d", n, tc.puts)
			}
		})
	}

	t.Run("subsystem watches its own NodeDiagnostic", func(t *testing.T) {
		node := uniqueNode(t)
		d, err := New(c.env.UserConfig(t, "autonode-agent:"+node, "autonode:agents"), nodeOptions(t, node))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
		c.create(t, "other-"+node, v1alpha1.DestinationNode) // another node's: ignored
		c.create(t, node, v1alpha1.DestinationNode)
		var nd v1alpha1.NodeDiagnostic
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			if err := c.admin.Get(ctx, client.ObjectKey{Name: node}, &nd); err != nil {
				return false, err
			}
			return meta.IsStatusConditionTrue(nd.Status.Conditions, v1alpha1.ConditionSucceeded), nil
		})
		if err != nil {
			t.Fatalf("waiting for Succeeded: %v (status %+v)", err, nd.Status)
		}
		if err := d.Ready(); err != nil {
			t.Fatalf("Ready after a capture: %v", err)
		}
		var other v1alpha1.NodeDiagnostic
		if err := c.admin.Get(ctx, client.ObjectKey{Name: "other-" + node}, &other); err != nil || len(other.Status.Conditions) != 0 {
			t.Fatalf("another node's NodeDiagnostic was touched: %+v, %v", other.Status, err)
		}
	})

	t.Run("schema validation", func(t *testing.T) {
		for _, tc := range []struct {
			name, dest string
			cats       []v1alpha1.Category
			ok         bool
		}{
			{"https", "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=x", nil, true},
			{"node with categories", "node", []v1alpha1.Category{v1alpha1.CategoryAll, v1alpha1.CategoryStorage}, true},
			{"ftp", "ftp://host/x", nil, false},
			{"Node capitalised", "Node", nil, false},
			{"empty", "", nil, false},
			{"unknown category", "node", []v1alpha1.Category{"Kernel"}, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				nd := &v1alpha1.NodeDiagnostic{ObjectMeta: metav1.ObjectMeta{Name: uniqueNode(t)},
					Spec: v1alpha1.NodeDiagnosticSpec{LogCapture: &v1alpha1.LogCapture{Destination: tc.dest, Categories: tc.cats}}}
				err := c.admin.Create(context.Background(), nd)
				if (err == nil) != tc.ok || (err != nil && !apierrors.IsInvalid(err)) {
					t.Fatalf("create: %v, want ok=%v", err, tc.ok)
				}
			})
		}
	})
}

func TestNeedsCapture(t *testing.T) {
	cond := func(s metav1.ConditionStatus, gen int64) []metav1.Condition {
		return []metav1.Condition{{Type: v1alpha1.ConditionSucceeded, Status: s, ObservedGeneration: gen}}
	}
	for _, tc := range []struct {
		name     string
		gen, obs int64
		conds    []metav1.Condition
		want     bool
	}{
		{"new", 1, 0, nil, true},
		{"done", 1, 1, cond(metav1.ConditionTrue, 1), false},
		{"failed stays failed", 1, 1, cond(metav1.ConditionFalse, 1), false},
		{"interrupted", 1, 1, cond(metav1.ConditionUnknown, 1), true},
		{"spec changed", 2, 1, cond(metav1.ConditionTrue, 1), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nd := &v1alpha1.NodeDiagnostic{ObjectMeta: metav1.ObjectMeta{Generation: tc.gen},
				Status: v1alpha1.NodeDiagnosticStatus{ObservedGeneration: tc.obs, Conditions: tc.conds}}
			if got := needsCapture(nd); got != tc.want {
				t.Fatalf("needsCapture = %v, want %v", got, tc.want)
			}
		})
	}
}
