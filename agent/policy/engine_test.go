package policy

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/autonode/autonode/agent/policy/compute"
	"github.com/autonode/autonode/agent/policy/datapath"
)

// fakeDatapath records what the engine programs. maxEntries > 0 makes Program fail with ErrUnsupported for a
// direction with more entries.
type fakeDatapath struct {
	mu         sync.Mutex
	rules      map[string]datapath.PodRules
	nodeAddrs  []netip.Addr
	keeps      [][]string
	maxEntries int
	changed    chan struct{}
}

func newFakeDatapath() *fakeDatapath {
	return &fakeDatapath{rules: map[string]datapath.PodRules{}, changed: make(chan struct{}, 1)}
}

func (f *fakeDatapath) notify() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *fakeDatapath) Program(_ context.Context, r datapath.PodRules) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maxEntries > 0 && (len(r.Ingress.Entries) > f.maxEntries || len(r.Egress.Entries) > f.maxEntries) {
		return fmt.Errorf("pod %s: %w", r.HostIf, datapath.ErrUnsupported)
	}
	f.rules[r.HostIf] = r
	f.notify()
	return nil
}

func (f *fakeDatapath) Remove(_ context.Context, hostIf string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.rules, hostIf)
	f.notify()
	return nil
}

func (f *fakeDatapath) Reconcile(_ context.Context, keep []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keeps = append(f.keeps, keep)
	for i := range f.rules {
		if !slices.Contains(keep, i) {
			delete(f.rules, i)
		}
	}
	return nil
}

func (f *fakeDatapath) SetNodeAddresses(_ context.Context, addrs []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodeAddrs = addrs
	return nil
}

func (f *fakeDatapath) Events(ctx context.Context) <-chan datapath.Event {
	ch := make(chan datapath.Event)
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

func (f *fakeDatapath) Run(ctx context.Context) error { <-ctx.Done(); return nil }

func (f *fakeDatapath) get(hostIf string) (datapath.PodRules, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.rules[hostIf]
	return r, ok
}

// waitFor polls the fake until ok holds for hostIf's rules.
func (f *fakeDatapath) waitFor(t *testing.T, hostIf, what string, ok func(datapath.PodRules, bool) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if r, found := f.get(hostIf); ok(r, found) {
			return
		}
		select {
		case <-f.changed:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			r, found := f.get(hostIf)
			t.Fatalf("%s: %s never happened; last rules (found %v): %+v", hostIf, what, found, r)
		}
	}
}

func denyAll(r datapath.PodRules, ok bool) bool {
	return ok && r.Ingress.Isolated && r.Egress.Isolated && len(r.Ingress.Entries) == 0 && len(r.Egress.Entries) == 0
}

func openAll(r datapath.PodRules, ok bool) bool {
	return ok && !r.Ingress.Isolated && !r.Egress.Isolated
}

type engineEnv struct {
	e        *Engine
	dp       *fakeDatapath
	client   *fake.Clientset
	recorder *record.FakeRecorder
	cancel   context.CancelFunc
	done     chan error
}

func newEngineEnv(t *testing.T, strict bool, objs ...runtime.Object) *engineEnv {
	t.Helper()
	env := &engineEnv{dp: newFakeDatapath(), client: fake.NewClientset(objs...), recorder: record.NewFakeRecorder(100)}
	var err error
	env.e, err = New(Options{
		Client: env.client, Datapath: env.dp, Recorder: env.recorder, Strict: strict,
		NodeLocalDNS: netip.MustParseAddr("169.254.20.10"),
		NodeAddresses: func(context.Context) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("169.254.20.10")}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func (env *engineEnv) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	env.cancel, env.done = cancel, make(chan error, 1)
	go func() { env.done <- env.e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-env.done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for env.e.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatal("engine never synced")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func kubePod(ns, name, ip string, l map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Labels: l},
		Spec: corev1.PodSpec{NodeName: "node"}, Status: corev1.PodStatus{PodIP: ip, Phase: corev1.PodRunning}}
}

func kubeNS(name string, l map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
}

func TestStrictModeBeforeSync(t *testing.T) {
	for _, strict := range []bool{true, false} {
		t.Run(fmt.Sprintf("strict=%v", strict), func(t *testing.T) {
			env := newEngineEnv(t, strict, kubeNS("ns1", nil), kubePod("ns1", "a", "", lbl("app", "a")))
			ctx := context.Background()
			if err := env.e.Attach(ctx, Pod{HostIf: "if-a", Namespace: "ns1", Name: "a", IP: netip.MustParseAddr("10.0.0.1")}); err != nil {
				t.Fatal(err)
			}
			r, ok := env.dp.get("if-a")
			if strict && !denyAll(r, ok) {
				t.Errorf("strict, before sync: %+v, want deny all", r)
			}
			if !strict && !openAll(r, ok) {
				t.Errorf("not strict, before sync: %+v, want allow all", r)
			}
			env.run(t)
			// No policy selects the pod: allowed once the caches have synced.
			env.dp.waitFor(t, "if-a", "allow all after sync", openAll)
			env.dp.mu.Lock()
			addrs := env.dp.nodeAddrs
			env.dp.mu.Unlock()
			if !slices.Equal(addrs, []netip.Addr{netip.MustParseAddr("192.0.2.10")}) {
				t.Errorf("node addresses %v: want the node's, without node-local DNS", addrs)
			}
		})
	}
}

func TestPolicyChangesReachPods(t *testing.T) {
	env := newEngineEnv(t, true, kubeNS("ns1", lbl("team", "one")),
		kubePod("ns1", "a", "", lbl("app", "a")), kubePod("ns1", "b", "", lbl("app", "b")),
		kubePod("ns1", "client", "10.9.0.7", lbl("role", "client")))
	env.run(t)
	ctx := context.Background()
	for i, n := range []string{"a", "b"} {
		if err := env.e.Attach(ctx, Pod{HostIf: "if-" + n, Namespace: "ns1", Name: n, IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})}); err != nil {
			t.Fatal(err)
		}
	}
	env.dp.waitFor(t, "if-a", "allow all", openAll)

	pol := netpol("ns1", "allow-client", sel("app", "a"), networkingv1.NetworkPolicyPeer{PodSelector: sel("role", "client")})
	if _, err := env.client.NetworkingV1().NetworkPolicies("ns1").Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.dp.waitFor(t, "if-a", "ingress from the client only", func(r datapath.PodRules, ok bool) bool {
		return ok && r.Ingress.Isolated && !r.Egress.Isolated &&
			slices.Equal(r.Ingress.Entries, []compute.Entry{entry("10.9.0.7/32", compute.ProtocolAny, 0, 0)})
	})
	if r, _ := env.dp.get("if-b"); r.Ingress.Isolated {
		t.Errorf("pod b is not selected but got %+v", r)
	}

	// A second client pod appears: its address joins a's rules.
	if _, err := env.client.CoreV1().Pods("ns1").Create(ctx, kubePod("ns1", "client2", "10.9.0.8", lbl("role", "client")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.dp.waitFor(t, "if-a", "the second client allowed", func(r datapath.PodRules, ok bool) bool {
		return ok && len(r.Ingress.Entries) == 2
	})

	if err := env.client.NetworkingV1().NetworkPolicies("ns1").Delete(ctx, "allow-client", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.dp.waitFor(t, "if-a", "open again after delete", openAll)

	if err := env.e.Detach(ctx, "if-a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := env.dp.get("if-a"); ok {
		t.Error("Detach left the pod programmed")
	}
}

func TestInvalidPolicyDenies(t *testing.T) {
	bad := netpol("ns1", "bad", sel("app", "a"))
	bad.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/33"}}}}}
	good := netpol("ns1", "good", sel("app", "b"), networkingv1.NetworkPolicyPeer{PodSelector: sel()})
	env := newEngineEnv(t, true, kubeNS("ns1", nil), kubePod("ns1", "a", "", lbl("app", "a")), kubePod("ns1", "b", "", lbl("app", "b")), bad, good)
	env.run(t)
	ctx := context.Background()
	for i, n := range []string{"a", "b"} {
		if err := env.e.Attach(ctx, Pod{HostIf: "if-" + n, Namespace: "ns1", Name: n, IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})}); err != nil {
			t.Fatal(err)
		}
	}
	if r, ok := env.dp.get("if-a"); !denyAll(r, ok) {
		t.Errorf("pod selected by an invalid policy: %+v, want deny all", r)
	}
	if r, ok := env.dp.get("if-b"); !ok || !r.Ingress.Isolated || len(r.Ingress.Entries) == 0 {
		t.Errorf("pod b, selected only by a valid policy, got %+v", r)
	}
	select {
	case ev := <-env.recorder.Events:
		if !strings.Contains(ev, NotEnforceableReason) || !strings.Contains(ev, "ns1/a") {
			t.Errorf("event %q: want %s naming the pod", ev, NotEnforceableReason)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Event on the invalid policy")
	}
}

func TestInexpressibleRulesDeny(t *testing.T) {
	// Ten ports are more than this datapath holds.
	pol := netpol("ns1", "ports", sel())
	var ports []networkingv1.NetworkPolicyPort
	for p := range 10 {
		port := intstrPort(1000 + 2*p)
		ports = append(ports, networkingv1.NetworkPolicyPort{Port: &port})
	}
	pol.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: ports}}
	env := newEngineEnv(t, true, kubeNS("ns1", nil), kubePod("ns1", "a", "", nil), pol)
	env.dp.maxEntries = 4
	env.run(t)
	if err := env.e.Attach(context.Background(), Pod{HostIf: "if-a", Namespace: "ns1", Name: "a", IP: netip.MustParseAddr("10.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	if r, ok := env.dp.get("if-a"); !denyAll(r, ok) {
		t.Errorf("inexpressible rules: %+v, want deny all", r)
	}
	select {
	case ev := <-env.recorder.Events:
		if !strings.Contains(ev, NotEnforceableReason) {
			t.Errorf("event %q", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Event on the policy")
	}
}

func TestAdoptAndReconcile(t *testing.T) {
	env := newEngineEnv(t, true, kubeNS("ns1", nil), kubePod("ns1", "a", "", nil))
	// A previous run programmed if-a and if-gone; only if-a is still attached.
	env.dp.rules["if-a"] = datapath.PodRules{HostIf: "if-a", Ingress: compute.Direction{Isolated: true}}
	env.dp.rules["if-gone"] = datapath.PodRules{HostIf: "if-gone"}
	env.e.opts.Attachments = func() []Pod {
		return []Pod{{HostIf: "if-a", Namespace: "ns1", Name: "a", IP: netip.MustParseAddr("10.0.0.1")}}
	}
	env.run(t)
	env.dp.waitFor(t, "if-a", "recomputed after sync", openAll)
	if _, ok := env.dp.get("if-gone"); ok {
		t.Error("pins of a pod that is gone survived the start")
	}
}

func TestFetchPodMissingFromCache(t *testing.T) {
	env := newEngineEnv(t, true, kubeNS("ns1", nil))
	env.run(t)
	ctx := context.Background()
	pol := netpol("ns1", "p", sel("app", "late"), networkingv1.NetworkPolicyPeer{PodSelector: sel()})
	if _, err := env.client.NetworkingV1().NetworkPolicies("ns1").Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the policy in the cache", func() bool {
		env.e.mu.Lock()
		defer env.e.mu.Unlock()
		return env.e.v.policies["ns1"]["p"] != nil
	})
	// The pod is read from the apiserver at ADD; whether the watch had it already or not, a's labels apply.
	if _, err := env.client.CoreV1().Pods("ns1").Create(ctx, kubePod("ns1", "late", "", lbl("app", "late")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := env.e.Attach(ctx, Pod{HostIf: "if-late", Namespace: "ns1", Name: "late", IP: netip.MustParseAddr("10.0.0.5")}); err != nil {
		t.Fatal(err)
	}
	if r, ok := env.dp.get("if-late"); !ok || !r.Ingress.Isolated || len(r.Ingress.Entries) != 1 {
		t.Errorf("rules at ADD: %+v, want ingress from the namespace's pods (itself)", r)
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s never happened", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func intstrPort(p int) intstr.IntOrString { return intstr.FromInt(p) }
