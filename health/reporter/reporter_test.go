package reporter

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/autonode/autonode/health"
	"github.com/autonode/autonode/health/console"
	"github.com/autonode/autonode/health/repair"
	"github.com/autonode/autonode/sandbox/testenv"
)

// cluster is a real apiserver with an admin client and an agent client bound
// by deploy/rbac/agent.yaml only.
type cluster struct {
	env          *testenv.Env
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
	return cluster{env: env, admin: admin, agent: agent}
}

var readyCondition = corev1.NodeCondition{
	Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status",
	LastHeartbeatTime:  metav1.NewTime(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)),
	LastTransitionTime: metav1.NewTime(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)),
}

// createNode makes a Node whose Ready condition is set by "the kubelet".
func (c cluster) createNode(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	node, err := c.admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Conditions = []corev1.NodeCondition{readyCondition}
	if _, err := c.admin.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
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

func condition(n *corev1.Node, typ health.Condition) corev1.NodeCondition {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeConditionType(typ) {
			return c
		}
	}
	return corev1.NodeCondition{}
}

// start runs a reporter for node as the agent user until the test ends.
func start(t *testing.T, c cluster, node string, opts Options) *Reporter {
	t.Helper()
	opts.Client = c.agent
	opts.NodeName = func() string { return node }
	opts.InitialBackoff, opts.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

func report(t *testing.T, r *Reporter, s health.Signal) {
	t.Helper()
	r.Report(context.Background(), s)
	syncNow(t, r)
}

func syncNow(t *testing.T, r *Reporter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// eventually polls f until it returns true; f's error message says what it
// saw last.
func eventually(t *testing.T, what string, f func() (bool, string)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		ok, seen := f()
		last = seen
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: never happened; last saw %s", what, last)
	}
}

func fatal(reason string) health.Signal {
	return health.Signal{Source: "test", Reason: reason, Severity: health.Fatal, Message: reason + " seen"}
}

func cleared(reason string) health.Signal {
	return health.Signal{Source: "test", Reason: reason, Cleared: true}
}

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func TestReporter(t *testing.T) {
	c := newCluster(t)

	t.Run("all five True, Ready untouched", func(t *testing.T) {
		c.createNode(t, "n-initial")
		r := start(t, c, "n-initial", Options{})
		syncNow(t, r)
		n := c.node(t, "n-initial")
		for _, typ := range health.Conditions() {
			got := condition(n, typ)
			if got.Status != corev1.ConditionTrue || got.Reason != health.HealthyReason(typ) || got.LastHeartbeatTime.IsZero() {
				t.Errorf("%s = %+v, want True with reason %s", typ, got, health.HealthyReason(typ))
			}
		}
		if got := condition(n, health.Condition(corev1.NodeReady)); !got.LastTransitionTime.Equal(&readyCondition.LastTransitionTime) ||
			got.Status != readyCondition.Status || got.Message != readyCondition.Message {
			t.Errorf("Ready = %+v, want it as the kubelet left it", got)
		}
		if r.Ready() != nil {
			t.Errorf("Ready() = %v after the first write", r.Ready())
		}
	})

	t.Run("fatal, repeats, cleared", func(t *testing.T) {
		c.createNode(t, "n-fatal")
		r := start(t, c, "n-fatal", Options{})
		report(t, r, fatal(health.ReasonContainerdUnresponsive))
		first := condition(c.node(t, "n-fatal"), health.ContainerRuntimeReady)
		if first.Status != corev1.ConditionFalse || first.Reason != health.ReasonContainerdUnresponsive {
			t.Fatalf("after a fatal signal: %+v", first)
		}
		writes := r.Writes()
		for i := range 10 {
			s := fatal(health.ReasonContainerdUnresponsive)
			s.Message = fmt.Sprintf("repeat %d", i) // new text must not rewrite the condition
			report(t, r, s)
			got := condition(c.node(t, "n-fatal"), health.ContainerRuntimeReady)
			if !got.LastTransitionTime.Equal(&first.LastTransitionTime) || got.Status != corev1.ConditionFalse || got.Message != first.Message {
				t.Fatalf("repeat %d moved the condition: %+v, was %+v", i, got, first)
			}
		}
		// The repeats cost event writes only, and few of those.
		if d := r.Writes() - writes; d > 5 {
			t.Errorf("10 repeats cost %d writes, want at most the event burst of 5", d)
		}
		// A probe reason stays until it is cleared.
		report(t, r, cleared(health.ReasonContainerdUnresponsive))
		n := c.node(t, "n-fatal")
		if got := condition(n, health.ContainerRuntimeReady); got.Status != corev1.ConditionTrue {
			t.Errorf("after Cleared: %+v", got)
		}
		if got := condition(n, health.Condition(corev1.NodeReady)); got.Status != readyCondition.Status || got.Message != readyCondition.Message {
			t.Errorf("Ready changed: %+v", got)
		}
	})

	t.Run("quiet period recovers, no latching", func(t *testing.T) {
		c.createNode(t, "n-quiet")
		clk := clocktesting.NewFakeClock(t0)
		r := start(t, c, "n-quiet", Options{Clock: clk})
		for round := range 3 {
			report(t, r, fatal(health.ReasonGPUCountMismatch)) // quiet 10m
			if got := condition(c.node(t, "n-quiet"), health.AcceleratedHardwareReady); got.Status != corev1.ConditionFalse {
				t.Fatalf("round %d, fatal: %+v", round, got)
			}
			clk.Step(9 * time.Minute)
			report(t, r, fatal(health.ReasonGPUCountMismatch)) // a repeat restarts the quiet period
			clk.Step(9 * time.Minute)
			syncNow(t, r)
			if got := condition(c.node(t, "n-quiet"), health.AcceleratedHardwareReady); got.Status != corev1.ConditionFalse {
				t.Fatalf("round %d, 9m after a repeat: %+v", round, got)
			}
			clk.Step(time.Minute)
			syncNow(t, r)
			got := condition(c.node(t, "n-quiet"), health.AcceleratedHardwareReady)
			if got.Status != corev1.ConditionTrue || !got.LastTransitionTime.Time.Equal(clk.Now().Truncate(time.Second)) {
				t.Fatalf("round %d, quiet period over: %+v at %s", round, got, clk.Now())
			}
		}
	})

	t.Run("events aggregate", func(t *testing.T) {
		c.createNode(t, "n-events")
		r := start(t, c, "n-events", Options{EventBurst: 1, EventInterval: time.Millisecond})
		const n = 25
		for i := range n {
			report(t, r, health.Signal{Source: "nvidia.com/gpu", Condition: health.AcceleratedHardwareReady,
				Reason: health.ReasonDeviceUnhealthy, Severity: health.Warning, Message: fmt.Sprintf("GPU %d unhealthy", i)})
		}
		eventually(t, "one DeviceUnhealthy event with count 25", func() (bool, string) {
			list, err := c.admin.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{
				FieldSelector: "involvedObject.name=n-events,reason=DeviceUnhealthy"})
			if err != nil {
				return false, err.Error()
			}
			var seen []string
			for _, e := range list.Items {
				seen = append(seen, fmt.Sprintf("%s count=%d type=%s kind=%s msg=%q", e.Name, e.Count, e.Type, e.InvolvedObject.Kind, e.Message))
			}
			ok := len(list.Items) == 1 && list.Items[0].Count == n && list.Items[0].Type == corev1.EventTypeWarning &&
				list.Items[0].InvolvedObject.Kind == "Node" && list.Items[0].Message == "GPU 24 unhealthy"
			return ok, strings.Join(seen, "; ")
		})
		// A warning never touches a condition.
		if got := condition(c.node(t, "n-events"), health.AcceleratedHardwareReady); got.Status != corev1.ConditionTrue {
			t.Errorf("AcceleratedHardwareReady = %+v after warnings", got)
		}
	})

	t.Run("1000 repeats, bounded writes", func(t *testing.T) {
		c.createNode(t, "n-bounded")
		r := start(t, c, "n-bounded", Options{})
		syncNow(t, r)
		before := r.Writes()
		for i := range 1000 {
			r.Report(context.Background(), fatal(health.ReasonNvidiaXid))
			r.Report(context.Background(), health.Signal{Source: "kmsg", Reason: health.ReasonOOMKill, Severity: health.Warning})
			if i%100 == 0 {
				syncNow(t, r)
			}
		}
		syncNow(t, r)
		// One condition write, one annotation, and each reason's event
		// burst (5): 12 at most.
		writes := r.Writes() - before
		t.Logf("2,000 signals (1,000 fatal NvidiaXid + 1,000 OOMKill warnings) cost %d API writes", writes)
		if writes > 12 || r.Dropped() != 0 {
			t.Errorf("%d writes, %d dropped; want at most 12 and none", writes, r.Dropped())
		}
		if got := condition(c.node(t, "n-bounded"), health.AcceleratedHardwareReady); got.Status != corev1.ConditionFalse || got.Reason != health.ReasonNvidiaXid {
			t.Errorf("AcceleratedHardwareReady = %+v", got)
		}
	})

	t.Run("writes per hour in steady state", func(t *testing.T) {
		c.createNode(t, "n-hour")
		clk := clocktesting.NewFakeClock(t0)
		r := start(t, c, "n-hour", Options{Clock: clk})
		syncNow(t, r)
		hour := func(signals bool) int64 {
			before := r.Writes()
			const steps = 1000
			for range steps {
				clk.Step(time.Hour / steps)
				if signals {
					r.Report(context.Background(), fatal(health.ReasonContainerdUnresponsive))
					r.Report(context.Background(), health.Signal{Source: "kmsg", Reason: health.ReasonOOMKill, Severity: health.Warning})
				}
				syncNow(t, r)
			}
			return r.Writes() - before
		}
		idle := hour(false)
		report(t, r, fatal(health.ReasonContainerdUnresponsive)) // settle into the failed state
		busy := hour(true)
		t.Logf("steady state: %d writes/hour idle, %d writes/hour with a fatal and a warning reason each repeating 1,000 times an hour", idle, busy)
		// Heartbeats every 5m; events at most 1 per 5m per reason after the burst.
		if idle > 12 || busy > 12+2*(5+12) {
			t.Errorf("writes/hour: idle %d (want ≤ 12), busy %d (want ≤ 46)", idle, busy)
		}
	})

	t.Run("replace annotation set and removed", func(t *testing.T) {
		c.createNode(t, "n-replace")
		clk := clocktesting.NewFakeClock(t0)
		r := start(t, c, "n-replace", Options{Clock: clk})
		report(t, r, fatal(health.ReasonReadOnlyFilesystem))
		n := c.node(t, "n-replace")
		if got, want := n.Annotations[RepairAnnotation], "ReadOnlyFilesystem 2026-11-26T10:00:00Z"; got != want {
			t.Errorf("annotation = %q, want %q", got, want)
		}
		if got := condition(n, health.StorageReady); got.Status != corev1.ConditionFalse {
			t.Errorf("StorageReady = %+v", got)
		}
		clk.Step(time.Hour) // a probe reason does not time out
		report(t, r, cleared(health.ReasonReadOnlyFilesystem))
		n = c.node(t, "n-replace")
		if v, ok := n.Annotations[RepairAnnotation]; ok {
			t.Errorf("annotation still there: %q", v)
		}
		if got := condition(n, health.StorageReady); got.Status != corev1.ConditionTrue {
			t.Errorf("StorageReady = %+v", got)
		}
	})

	t.Run("unit restarts within a budget", func(t *testing.T) {
		c.createNode(t, "n-repair")
		fake := &fakeRestarter{}
		rp, err := repair.New(repair.Options{Restarter: fake, Restarts: 2})
		if err != nil {
			t.Fatal(err)
		}
		r := start(t, c, "n-repair", Options{Repairer: rp, EventInterval: time.Millisecond})
		// containerd wedges, is restarted, recovers, wedges again...
		for range 4 {
			report(t, r, fatal(health.ReasonContainerdUnresponsive))
			report(t, r, cleared(health.ReasonContainerdUnresponsive))
		}
		eventually(t, "two restarts and a budget warning", func() (bool, string) {
			ev, err := c.admin.CoreV1().Events("default").Get(context.Background(), "n-repair.autonode-repairbudgetexhausted", metav1.GetOptions{})
			restarts := fake.get()
			if err != nil {
				return false, fmt.Sprintf("restarts %v, event: %v", restarts, err)
			}
			return len(restarts) == 2 && ev.Count == 2 && ev.Type == corev1.EventTypeWarning,
				fmt.Sprintf("restarts %v, event count %d type %s: %s", restarts, ev.Count, ev.Type, ev.Message)
		})
		if got := fake.get(); got[0] != "containerd.service" {
			t.Errorf("restarted %v", got)
		}
	})

	t.Run("storage escalation", func(t *testing.T) {
		c.createNode(t, "n-escalate")
		r := start(t, c, "n-escalate", Options{Escalation: repair.Escalation{Repeats: 3, Window: time.Hour}})
		for i := range 3 {
			report(t, r, health.Signal{Source: "kmsg", Reason: health.ReasonBlockIOError, Severity: health.Warning, Message: "I/O error, dev nvme1n1"})
			got := condition(c.node(t, "n-escalate"), health.StorageReady)
			if want := map[bool]corev1.ConditionStatus{true: corev1.ConditionFalse, false: corev1.ConditionTrue}[i == 2]; got.Status != want {
				t.Errorf("after %d BlockIOErrors: StorageReady = %s, want %s", i+1, got.Status, want)
			}
		}
	})

	t.Run("unknown reason is only a warning", func(t *testing.T) {
		c.createNode(t, "n-unknown")
		r := start(t, c, "n-unknown", Options{})
		report(t, r, health.Signal{Source: "x", Condition: health.StorageReady, Reason: "Made Up!", Severity: health.Fatal})
		if got := condition(c.node(t, "n-unknown"), health.StorageReady); got.Status != corev1.ConditionTrue {
			t.Errorf("StorageReady = %+v", got)
		}
		eventually(t, "a warning event", func() (bool, string) {
			ev, err := c.admin.CoreV1().Events("default").Get(context.Background(), "n-unknown.autonode-made-up", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return ev.Type == corev1.EventTypeWarning, ev.Type
		})
	})

	t.Run("a new agent keeps lastTransitionTime and the event count", func(t *testing.T) {
		c.createNode(t, "n-again")
		ctx, cancel := context.WithCancel(context.Background())
		r1, err := New(Options{Client: c.agent, NodeName: func() string { return "n-again" }})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { r1.Run(ctx); close(done) }()
		report(t, r1, fatal(health.ReasonInterfaceDown))
		first := condition(c.node(t, "n-again"), health.NetworkingReady)
		cancel()
		<-done
		time.Sleep(1100 * time.Millisecond) // so a moved lastTransitionTime would show at second precision
		r2 := start(t, c, "n-again", Options{})
		report(t, r2, fatal(health.ReasonInterfaceDown))
		got := condition(c.node(t, "n-again"), health.NetworkingReady)
		if got.Status != corev1.ConditionFalse || !got.LastTransitionTime.Equal(&first.LastTransitionTime) {
			t.Errorf("after an agent restart: %+v, was %+v", got, first)
		}
		eventually(t, "the event count carried on", func() (bool, string) {
			ev, err := c.admin.CoreV1().Events("default").Get(context.Background(), "n-again.autonode-interfacedown", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return ev.Count == 2, fmt.Sprint(ev.Count)
		})
	})
	t.Run("a carried-over probe reason nobody reports again expires", func(t *testing.T) {
		c.createNode(t, "n-carried")
		clk := clocktesting.NewFakeClock(t0)
		ctx, cancel := context.WithCancel(context.Background())
		r1, err := New(Options{Client: c.agent, NodeName: func() string { return "n-carried" }, Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { r1.Run(ctx); close(done) }()
		report(t, r1, fatal(health.ReasonBPFProgramDetached))
		cancel()
		<-done
		r2 := start(t, c, "n-carried", Options{Clock: clk})
		syncNow(t, r2)
		if got := condition(c.node(t, "n-carried"), health.NetworkingReady); got.Status != corev1.ConditionFalse || !got.LastTransitionTime.Time.Equal(t0) {
			t.Fatalf("carried over: %+v", got)
		}
		clk.Step(5 * time.Minute)
		syncNow(t, r2)
		if got := condition(c.node(t, "n-carried"), health.NetworkingReady); got.Status != corev1.ConditionTrue {
			t.Errorf("after CarryOverGrace: %+v", got)
		}
	})
}

type fakeRestarter struct {
	mu    sync.Mutex
	units []string
}

func (f *fakeRestarter) RestartUnit(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.units = append(f.units, name)
	return nil
}

func (f *fakeRestarter) get() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.units...)
}

func TestReporterSurvivesAPIServerRestart(t *testing.T) {
	c := newCluster(t)
	c.createNode(t, "n-restart")
	consolePath := filepath.Join(t.TempDir(), "ttyS0")
	r := start(t, c, "n-restart", Options{
		Console:          console.New(console.Options{Path: consolePath}),
		ContactLostAfter: 2,
	})
	report(t, r, fatal(health.ReasonContainerdUnresponsive))

	c.env.RestartAPIServer(t)
	r.Report(context.Background(), fatal(health.ReasonPIDExhausted))
	eventually(t, "KernelReady False after the restart", func() (bool, string) {
		got := condition(c.node(t, "n-restart"), health.KernelReady)
		return got.Status == corev1.ConditionFalse, fmt.Sprintf("%+v", got)
	})

	// Cut off: the state is kept, and the console tells the operator.
	c.env.StopAPIServer(t)
	r.Report(context.Background(), fatal(health.ReasonInterfaceDown))
	eventually(t, "a console summary", func() (bool, string) {
		data, _ := os.ReadFile(consolePath)
		s := string(data)
		return strings.Contains(s, "apiserver unreachable") && strings.Contains(s, "NetworkingReady=False InterfaceDown") &&
			strings.Contains(s, "KernelReady=False PIDExhausted") && strings.Contains(s, "error "), s
	})
	c.env.StartAPIServer(t)
	eventually(t, "state re-applied", func() (bool, string) {
		n, err := c.admin.CoreV1().Nodes().Get(context.Background(), "n-restart", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		got := condition(n, health.NetworkingReady)
		return got.Status == corev1.ConditionFalse && got.Reason == health.ReasonInterfaceDown, fmt.Sprintf("%+v", got)
	})
	n := c.node(t, "n-restart")
	for typ, want := range map[health.Condition]corev1.ConditionStatus{
		health.ContainerRuntimeReady: corev1.ConditionFalse, health.KernelReady: corev1.ConditionFalse,
		health.StorageReady: corev1.ConditionTrue, health.AcceleratedHardwareReady: corev1.ConditionTrue,
	} {
		if got := condition(n, typ); got.Status != want {
			t.Errorf("%s = %s, want %s", typ, got.Status, want)
		}
	}
	if got, want := n.Annotations[RepairAnnotation], "PIDExhausted "; !strings.HasPrefix(got, want) {
		t.Errorf("annotation = %q, want it to start %q", got, want)
	}
}
