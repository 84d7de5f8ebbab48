package main

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	sdkec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/cloud"
	"github.com/autonode/autonode/provisioner/controllers/claimutil"
	sandboxec2 "github.com/autonode/autonode/sandbox/ec2"
	"github.com/autonode/autonode/sandbox/testenv"
	"github.com/autonode/autonode/sandbox/vpc"
)

func TestParseFlags(t *testing.T) {
	t.Parallel()
	env := map[string]string{envName("cluster-name"): "from-env", envName("batch-idle-duration"): "2s"}
	for _, tt := range []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(options) bool
	}{
		{"defaults", []string{"--cluster-name=c"}, nil, "", func(o options) bool {
			return o.batchIdle == time.Second && o.batchMax == 10*time.Second && o.registrationTTL == 15*time.Minute && o.leaderElect
		}},
		{"environment", nil, env, "", func(o options) bool { return o.clusterName == "from-env" && o.batchIdle == 2*time.Second }},
		{"flag beats environment", []string{"--cluster-name=flag"}, env, "", func(o options) bool { return o.clusterName == "flag" }},
		{"no cluster", nil, nil, "--cluster-name is required", nil},
		{"idle over max", []string{"--cluster-name=c", "--batch-idle-duration=20s"}, nil, "exceeds --batch-max-duration", nil},
		{"negative duration", []string{"--cluster-name=c", "--gc-interval=-1s"}, nil, "--gc-interval must be positive", nil},
		{"both price sources", []string{"--cluster-name=c", "--sandbox-prices", "--price-file=x"}, nil, "exclusive", nil},
		{"bad env value", []string{"--cluster-name=c"}, map[string]string{envName("leader-elect"): "maybe"}, envName("leader-elect"), nil},
		{"bad log level", []string{"--cluster-name=c", "--log-level=loud"}, nil, "--log-level", nil},
		{"disruption defaults", []string{"--cluster-name=c"}, nil, "", func(o options) bool {
			e := o.disruption.engineOptions()
			return e.ValidationDelay == 15*time.Second && !e.OneToMany && e.Repair.MaxUnhealthyShare == 0.2 && len(e.Repair.Tolerations) == 6 &&
				e.Repair.Tolerations[5].Condition == "AcceleratedHardwareReady" && e.Repair.Tolerations[5].After == 10*time.Minute &&
				len(e.Repair.Tolerations[0].Statuses) == 2
		}},
		{"disruption from the environment", []string{"--cluster-name=c"}, map[string]string{
			envName("consolidation-one-to-many"): "true", envName("repair-tolerations"): "KernelReady=2s",
			envName("consolidation-min-price-improvement-percent"): "5",
		}, "", func(o options) bool {
			e := o.disruption.engineOptions()
			return e.OneToMany && e.MaxReplacements == 3 && e.MinPriceImprovementPercent == 5 &&
				len(e.Repair.Tolerations) == 1 && e.Repair.Tolerations[0].After == 2*time.Second
		}},
		{"bad toleration", []string{"--cluster-name=c", "--repair-tolerations=Ready"}, nil, "--repair-tolerations item", nil},
		{"toleration twice", []string{"--cluster-name=c", "--repair-tolerations=Ready=1m,Ready=2m"}, nil, "given twice", nil},
		{"unhealthy share", []string{"--cluster-name=c", "--repair-max-unhealthy-percent=150"}, nil, "outside [0, 100]", nil},
		{"price improvement", []string{"--cluster-name=c", "--consolidation-min-price-improvement=-1"}, nil, "negative", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			o, err := parse(tt.args, func(k string) string { return tt.env[k] }, &out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(o) {
				t.Errorf("options = %+v", o)
			}
		})
	}
}

// fixture is a control plane (apiserver, scheduler, controller-manager),
// the EC2 emulator, and the provisioner running against both as the
// non-admin user of deploy/rbac/provisioner.yaml.
type fixture struct {
	env   *testenv.Env
	admin client.Client
	ec2   *sandboxec2.Server
	vpc   *vpc.Model
	cloud *cloud.Provider // a second provider on the same emulator, for the test's own EC2 calls
	sdk   *sdkec2.Client
	// exited is closed when the provisioner's run returns.
	exited chan struct{}
}

func newScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// startFixture starts it all; extra flags go to the provisioner after the
// fixture's own.
func startFixture(t *testing.T, extra ...string) *fixture {
	t.Helper()
	env := testenv.Start(t, testenv.Options{
		Scheduler: true, ControllerManager: true,
		CRDDirectoryPaths: []string{"../../../deploy/crds"},
		RBACManifests:     []string{"../../../deploy/rbac/provisioner.yaml"},
	})
	admin, err := client.New(env.AdminConfig(), client.Options{Scheme: newScheme(t)})
	if err != nil {
		t.Fatal(err)
	}
	model, err := vpc.New(vpc.Config{Subnets: []vpc.SubnetConfig{
		{Zone: "us-west-2a", CIDR: "10.0.0.0/20", Tags: map[string]string{"autonode.dev/discovery": "test"}},
		{Zone: "us-west-2b", CIDR: "10.0.16.0/20", Tags: map[string]string{"autonode.dev/discovery": "test"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	model.AddSecurityGroup("nodes", "autonode nodes", map[string]string{"autonode.dev/discovery": "test"})
	srv, err := sandboxec2.New(sandboxec2.Options{Model: model})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	sdk := sdkec2.NewFromConfig(aws.Config{Region: "us-west-2", Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", "")},
		func(o *sdkec2.Options) { o.BaseEndpoint = aws.String(ts.URL) })
	testCloud, err := cloud.New(cloud.Options{EC2: sdk, Prices: cloud.StaticPrices{"c5.large": 0.085}, Cluster: cloud.Cluster{Name: "test", Endpoint: env.Host(), CA: []byte(testCA)}})
	if err != nil {
		t.Fatal(err)
	}

	// The provisioner's AWS credentials come from the SDK's default chain.
	t.Setenv("AWS_ACCESS_KEY_ID", "AKID")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte(testCA), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--kubeconfig=" + env.UserKubeconfig(t, "autonode-provisioner", "autonode:provisioners"),
		"--cluster-name=test", "--cluster-endpoint=" + env.Host(), "--cluster-ca-file=" + ca,
		"--region=us-west-2", "--ec2-endpoint=" + ts.URL, "--sandbox-prices",
		"--batch-idle-duration=300ms", "--batch-max-duration=3s",
		"--gc-interval=1s", "--gc-launch-grace=2s",
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--leader-elect=false",
		"--log-level=debug",
	}
	args = append(args, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logPath := filepath.Join(t.TempDir(), "provisioner.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		done <- run(ctx, args, func(string) string { return "" }, logFile)
		close(exited)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("provisioner: %v", err)
		}
		logFile.Close()
		data, _ := os.ReadFile(logPath)
		// Every call the provisioner made is one its ClusterRole allows.
		if strings.Contains(string(data), "forbidden") {
			t.Errorf("the provisioner was refused a request; deploy/rbac/provisioner.yaml lacks a rule")
		}
		if t.Failed() {
			if len(data) > 20000 {
				data = data[len(data)-20000:]
			}
			t.Logf("provisioner log (end):\n%s", data)
		}
	})
	f := &fixture{env: env, admin: admin, ec2: srv, vpc: model, cloud: testCloud, sdk: sdk, exited: exited}
	f.create(t, &v1.NodeClass{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1.NodeClassSpec{
			Role:                       "autonode-node",
			AMISelectorTerms:           []v1.AMISelectorTerm{{Alias: "autonode@latest"}},
			SubnetSelectorTerms:        []v1.SelectorTerm{{Tags: map[string]string{"autonode.dev/discovery": "*"}}},
			SecurityGroupSelectorTerms: []v1.SecurityGroupSelectorTerm{{Tags: map[string]string{"autonode.dev/discovery": "test"}}},
		},
	})
	go f.kubelet(ctx, t)
	t.Cleanup(func() {
		if t.Failed() {
			f.dump(t)
		}
	})
	return f
}

func (f *fixture) create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := f.admin.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// pool makes a NodePool whose nodes only the test's pods for it tolerate,
// so each test sees only its own nodes.
func (f *fixture) pool(t *testing.T, name string, limits corev1.ResourceList, reqs ...v1.NodeSelectorRequirementWithMinValues) *v1.NodePool {
	t.Helper()
	reqs = append(reqs, v1.NodeSelectorRequirementWithMinValues{Key: v1.LabelCapacityType, Operator: corev1.NodeSelectorOpIn, Values: []string{"on-demand"}})
	pool := &v1.NodePool{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.NodePoolSpec{
			Limits: limits,
			Template: v1.NodeClaimTemplate{
				ObjectMeta: v1.TemplateMeta{Labels: map[string]string{"dedicated": name}},
				Spec: v1.NodeClaimTemplateSpec{
					NodeClassRef:  v1.NodeClassReference{Name: "default"},
					Taints:        []corev1.Taint{{Key: "dedicated", Value: name, Effect: corev1.TaintEffectNoSchedule}},
					StartupTaints: []corev1.Taint{{Key: v1.StartupTaintAgentNotReady, Effect: corev1.TaintEffectNoSchedule}},
					Requirements:  reqs,
				},
			},
			Disruption: v1.Disruption{ConsolidateAfter: v1.NillableDuration{}},
		},
	}
	f.create(t, pool)
	return pool
}

// podSpec asks for cpu and memory on the pool's nodes.
func podSpec(pool, cpu string) corev1.PodSpec {
	return corev1.PodSpec{
		NodeSelector: map[string]string{"dedicated": pool},
		Tolerations:  []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: pool, Effect: corev1.TaintEffectNoSchedule}},
		Containers: []corev1.Container{{Name: "app", Image: "app", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse("512Mi"),
		}}}},
	}
}

func (f *fixture) pods(t *testing.T, ns, pool, cpu string, n int) {
	t.Helper()
	for i := range n {
		f.create(t, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pool + "-" + string(rune('a'+i))},
			Spec:       podSpec(pool, cpu),
		})
	}
}

func (f *fixture) namespace(t *testing.T, name string) {
	t.Helper()
	f.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
}

// eventually polls cond every 200ms for up to timeout, while the
// provisioner runs.
func (f *fixture) eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-f.exited:
			t.Fatalf("the provisioner exited while waiting for %s", what)
		default:
		}
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
}

func (f *fixture) claims(t *testing.T, pool string) []v1.NodeClaim {
	t.Helper()
	var list v1.NodeClaimList
	if err := f.admin.List(context.Background(), &list, client.MatchingLabels{v1.LabelNodePool: pool}); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func (f *fixture) podList(t *testing.T, ns string) []corev1.Pod {
	t.Helper()
	var list corev1.PodList
	if err := f.admin.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// kubelet plays every node that would join: for each launched NodeClaim it
// registers a Node with the claim's providerID, capacity, allocatable,
// labels and taints (the startup taint included) and Ready; once the
// provisioner has registered it, it removes the startup taint as the agent
// does. It renews node Leases, runs bound pods (Running, Ready) and
// finishes pods being deleted, as kubelets do.
func (f *fixture) kubelet(ctx context.Context, t *testing.T) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := f.kubeletPass(ctx); err != nil && ctx.Err() == nil {
			t.Logf("fake kubelet: %v", err)
		}
	}
}

func (f *fixture) kubeletPass(ctx context.Context) error {
	var claims v1.NodeClaimList
	if err := f.admin.List(ctx, &claims); err != nil {
		return err
	}
	for i := range claims.Items {
		c := &claims.Items[i]
		if c.Status.ProviderID == "" || c.DeletionTimestamp != nil {
			continue
		}
		_, id, err := cloud.ParseProviderID(c.Status.ProviderID)
		if err != nil {
			return err
		}
		var node corev1.Node
		err = f.admin.Get(ctx, client.ObjectKey{Name: id}, &node)
		if apierrors.IsNotFound(err) {
			if err := f.join(ctx, c, id); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if claimutil.IsTrue(c, v1.ConditionRegistered) && slices.ContainsFunc(node.Spec.Taints, isStartupTaint) {
			patch := client.MergeFrom(node.DeepCopy())
			node.Spec.Taints = slices.DeleteFunc(node.Spec.Taints, isStartupTaint)
			if err := f.admin.Patch(ctx, &node, patch); err != nil {
				return err
			}
		}
	}
	var nodes corev1.NodeList
	if err := f.admin.List(ctx, &nodes); err != nil {
		return err
	}
	for _, n := range nodes.Items {
		if err := f.renewLease(ctx, n.Name); err != nil {
			return err
		}
	}
	var pods corev1.PodList
	if err := f.admin.List(ctx, &pods); err != nil {
		return err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		switch {
		case p.Spec.NodeName == "":
		case p.DeletionTimestamp != nil:
			if err := f.admin.Delete(ctx, p, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
				return err
			}
		case p.Status.Phase != corev1.PodRunning:
			now := metav1.Now()
			p.Status.Phase = corev1.PodRunning
			p.Status.Conditions = append(p.Status.Conditions,
				corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now})
			if err := f.admin.Status().Update(ctx, p); client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
				return err
			}
		}
	}
	return nil
}

func isStartupTaint(t corev1.Taint) bool { return t.Key == v1.StartupTaintAgentNotReady }

// join registers a Node as a kubelet booted from the claim's user data
// would: named after the instance, with its providerID, the labels and
// taints of the user data, and its capacity.
func (f *fixture) join(ctx context.Context, c *v1.NodeClaim, id string) error {
	labels := map[string]string{corev1.LabelHostname: id, corev1.LabelOSStable: "linux"}
	for k, v := range c.Labels {
		if k != v1.LabelNodeClaim {
			labels[k] = v
		}
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: id, Labels: labels},
		Spec: corev1.NodeSpec{
			ProviderID: c.Status.ProviderID,
			Taints:     append(slices.Clone(c.Spec.Taints), c.Spec.StartupTaints...),
		},
	}
	if err := f.admin.Create(ctx, node); err != nil {
		return err
	}
	patch := client.MergeFrom(node.DeepCopy())
	now := metav1.Now()
	node.Status = corev1.NodeStatus{
		Capacity: c.Status.Capacity, Allocatable: c.Status.Allocatable,
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}},
	}
	return f.admin.Status().Patch(ctx, node, patch)
}

// dump logs the pods and nodes, for a failed test.
func (f *fixture) dump(t *testing.T) {
	t.Helper()
	var pods corev1.PodList
	_ = f.admin.List(context.Background(), &pods)
	for _, p := range pods.Items {
		t.Logf("pod %s/%s node=%q phase=%s deleting=%v conditions=%+v", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase, p.DeletionTimestamp != nil, p.Status.Conditions)
	}
	var nodes corev1.NodeList
	_ = f.admin.List(context.Background(), &nodes)
	for _, n := range nodes.Items {
		t.Logf("node %s unschedulable=%v taints=%+v labels=%v allocatable=%v conditions=%+v", n.Name, n.Spec.Unschedulable, n.Spec.Taints, n.Labels, n.Status.Allocatable, n.Status.Conditions)
	}
	var claims v1.NodeClaimList
	_ = f.admin.List(context.Background(), &claims)
	for _, c := range claims.Items {
		t.Logf("nodeclaim %s deleting=%v status=%+v", c.Name, c.DeletionTimestamp != nil, c.Status)
	}
}

func (f *fixture) renewLease(ctx context.Context, node string) error {
	now := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{}
	err := f.admin.Get(ctx, client.ObjectKey{Namespace: corev1.NamespaceNodeLease, Name: node}, lease)
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: corev1.NamespaceNodeLease, Name: node},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &node, LeaseDurationSeconds: ptr(int32(40)), RenewTime: &now},
		}
		return client.IgnoreAlreadyExists(f.admin.Create(ctx, lease))
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &now
	if err := f.admin.Update(ctx, lease); err != nil && !apierrors.IsConflict(err) {
		return err
	}
	return nil
}

// podEvents returns the notes of the pod's Events with reason.
func (f *fixture) podEvents(t *testing.T, ns, pod, reason string) []string {
	t.Helper()
	var list eventsv1.EventList
	if err := f.admin.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == pod && e.Reason == reason {
			out = append(out, e.Note)
		}
	}
	return out
}

func (f *fixture) instanceGone(ctx context.Context, id string) bool {
	_, err := f.cloud.Get(ctx, id)
	return errors.Is(err, cloud.ErrInstanceNotFound)
}

// TestProvisioner runs the provisioner binary's wiring against a real
// control plane and the EC2 emulator, through the life of nodes: pending
// pods become NodeClaims, instances and registered Nodes that the real
// scheduler binds them to; capacity errors fall back to another type;
// limits stop launches; a PodDisruptionBudget holds a drain; orphans are
// collected.
func TestProvisioner(t *testing.T) {
	f := startFixture(t)
	ctx := context.Background()

	t.Run("pending pods become nodes", func(t *testing.T) {
		f.namespace(t, "basic")
		f.pool(t, "basic", nil)
		f.pods(t, "basic", "basic", "1", 3)
		f.eventually(t, 90*time.Second, "every pod bound to a provisioned node", func() (bool, error) {
			for _, p := range f.podList(t, "basic") {
				if p.Spec.NodeName == "" {
					return false, nil
				}
			}
			return true, nil
		})
		claims := f.claims(t, "basic")
		if len(claims) == 0 {
			t.Fatal("no nodeclaims for pool basic")
		}
		for _, c := range claims {
			if !claimutil.Initialized(&c) || !claimutil.IsTrue(&c, v1.ConditionReady) {
				t.Errorf("nodeclaim %s conditions %+v, want Initialized and Ready", c.Name, c.Status.Conditions)
			}
			var node corev1.Node
			if err := f.admin.Get(ctx, client.ObjectKey{Name: c.Status.NodeName}, &node); err != nil {
				t.Fatalf("node of nodeclaim %s: %v", c.Name, err)
			}
			if node.Labels[v1.LabelNodeClaim] != c.Name || node.Labels[v1.LabelNodePool] != "basic" ||
				node.Labels[corev1.LabelInstanceTypeStable] == "" || node.Labels[corev1.LabelTopologyZone] == "" {
				t.Errorf("node %s labels %v", node.Name, node.Labels)
			}
			if !slices.Contains(node.Finalizers, claimutil.TerminationFinalizer) {
				t.Errorf("node %s finalizers %v, want %s", node.Name, node.Finalizers, claimutil.TerminationFinalizer)
			}
			if c.Status.ImageID == "" || c.Status.Allocatable.Cpu().IsZero() {
				t.Errorf("nodeclaim %s status %+v", c.Name, c.Status)
			}
			if len(f.podEvents(t, "basic", "basic-a", "Nominated")) == 0 {
				t.Errorf("pod basic-a has no Nominated event")
			}
		}
	})

	t.Run("insufficient capacity falls back", func(t *testing.T) {
		// c5.large is the cheaper of the two; with no room for it anywhere,
		// the launch must fall back to m5.large.
		f.ec2.SetInsufficientCapacity(sandboxec2.Offering{InstanceType: "c5.large", Zone: "*", CapacityType: "*"}, true)
		t.Cleanup(func() {
			f.ec2.SetInsufficientCapacity(sandboxec2.Offering{InstanceType: "c5.large", Zone: "*", CapacityType: "*"}, false)
		})
		f.namespace(t, "ice")
		f.pool(t, "ice", nil, v1.NodeSelectorRequirementWithMinValues{
			Key: corev1.LabelInstanceTypeStable, Operator: corev1.NodeSelectorOpIn, Values: []string{"c5.large", "m5.large"},
		})
		f.pods(t, "ice", "ice", "1", 1)
		f.eventually(t, 60*time.Second, "the ice pod bound", func() (bool, error) {
			pods := f.podList(t, "ice")
			return len(pods) == 1 && pods[0].Spec.NodeName != "", nil
		})
		claims := f.claims(t, "ice")
		if len(claims) == 0 {
			t.Fatal("no nodeclaim for pool ice")
		}
		for _, c := range claims {
			if c.DeletionTimestamp == nil && c.Labels[corev1.LabelInstanceTypeStable] != "m5.large" {
				t.Errorf("nodeclaim %s launched %s, want m5.large (c5.large has no capacity)", c.Name, c.Labels[corev1.LabelInstanceTypeStable])
			}
		}
	})

	t.Run("limits", func(t *testing.T) {
		f.namespace(t, "limited")
		f.pool(t, "limited", corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")})
		f.pods(t, "limited", "limited", "1500m", 3)
		f.eventually(t, 60*time.Second, "a pod beyond the limit reported", func() (bool, error) {
			for _, p := range f.podList(t, "limited") {
				for _, note := range f.podEvents(t, "limited", p.Name, "FailedProvisioning") {
					if strings.Contains(note, "limit") {
						return true, nil
					}
				}
			}
			return false, nil
		})
		f.eventually(t, 60*time.Second, "the pods within the limit bound", func() (bool, error) {
			bound := 0
			for _, p := range f.podList(t, "limited") {
				if p.Spec.NodeName != "" {
					bound++
				}
			}
			return bound == 2, nil
		})
		var cpu resource.Quantity
		for _, c := range f.claims(t, "limited") {
			cpu.Add(*c.Status.Capacity.Cpu())
		}
		if cpu.Cmp(resource.MustParse("4")) > 0 {
			t.Errorf("pool limited has %s cpu, over its limit of 4", cpu.String())
		}
		time.Sleep(2 * time.Second) // a further round must not launch past the limit either
		if bound := slices.IndexFunc(f.podList(t, "limited"), func(p corev1.Pod) bool { return p.Spec.NodeName == "" }); bound < 0 {
			t.Error("every pod bound although the limit leaves room for two")
		}
	})

	t.Run("termination waits for the disruption budget", func(t *testing.T) {
		f.namespace(t, "drain")
		f.pool(t, "drain", nil, v1.NodeSelectorRequirementWithMinValues{
			Key: corev1.LabelInstanceTypeStable, Operator: corev1.NodeSelectorOpIn, Values: []string{"m5.xlarge"},
		})
		labels := map[string]string{"app": "drain"}
		f.create(t, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: "drain", Name: "app"},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr(int32(2)),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec("drain", "1")},
			},
		})
		pdb := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: "drain", Name: "app"},
			Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr(intstr.FromInt32(2)), Selector: &metav1.LabelSelector{MatchLabels: labels}},
		}
		f.create(t, pdb)
		f.eventually(t, 90*time.Second, "both replicas running and the budget at zero disruptions", func() (bool, error) {
			if err := f.admin.Get(ctx, client.ObjectKeyFromObject(pdb), pdb); err != nil {
				return false, err
			}
			return pdb.Status.CurrentHealthy == 2 && pdb.Status.DisruptionsAllowed == 0, nil
		})
		claims := f.claims(t, "drain")
		if len(claims) != 1 {
			t.Fatalf("%d nodeclaims for pool drain, want 1 (one m5.xlarge holds both replicas)", len(claims))
		}
		victim := claims[0]
		_, instance, _ := cloud.ParseProviderID(victim.Status.ProviderID)
		if err := f.admin.Delete(ctx, &victim); err != nil {
			t.Fatal(err)
		}
		f.eventually(t, 30*time.Second, "the node cordoned and the eviction blocked", func() (bool, error) {
			var node corev1.Node
			if err := f.admin.Get(ctx, client.ObjectKey{Name: victim.Status.NodeName}, &node); err != nil {
				return false, err
			}
			var list eventsv1.EventList
			if err := f.admin.List(ctx, &list); err != nil {
				return false, err
			}
			blocked := slices.ContainsFunc(list.Items, func(e eventsv1.Event) bool {
				return e.Regarding.Name == victim.Name && e.Reason == "EvictionBlocked"
			})
			return node.Spec.Unschedulable && blocked, nil
		})
		time.Sleep(2 * time.Second)
		for _, p := range f.podList(t, "drain") {
			if p.Spec.NodeName == victim.Status.NodeName && p.DeletionTimestamp != nil {
				t.Errorf("pod %s evicted although the budget allows no disruption", p.Name)
			}
		}
		if f.instanceGone(ctx, instance) {
			t.Fatalf("instance %s terminated before its node drained", instance)
		}
		// Let one go at a time: its replacement lands on a new node, and
		// then the second may go.
		patch := client.MergeFrom(pdb.DeepCopy())
		pdb.Spec.MinAvailable = ptr(intstr.FromInt32(1))
		if err := f.admin.Patch(ctx, pdb, patch); err != nil {
			t.Fatal(err)
		}
		f.eventually(t, 120*time.Second, "the nodeclaim, its node and its instance gone", func() (bool, error) {
			err := f.admin.Get(ctx, client.ObjectKeyFromObject(&victim), &v1.NodeClaim{})
			if !apierrors.IsNotFound(err) {
				return false, err
			}
			err = f.admin.Get(ctx, client.ObjectKey{Name: victim.Status.NodeName}, &corev1.Node{})
			return apierrors.IsNotFound(err) && f.instanceGone(ctx, instance), nil
		})
		f.eventually(t, 60*time.Second, "both replicas bound elsewhere", func() (bool, error) {
			n := 0
			for _, p := range f.podList(t, "drain") {
				if p.Spec.NodeName != "" && p.Spec.NodeName != victim.Status.NodeName && p.DeletionTimestamp == nil {
					n++
				}
			}
			return n == 2, nil
		})
	})

	t.Run("grace period ends a blocked drain; volumes detach first", func(t *testing.T) {
		f.namespace(t, "grace")
		pool := f.pool(t, "grace", nil)
		patch := client.MergeFrom(pool.DeepCopy())
		pool.Spec.Template.Spec.TerminationGracePeriod = &metav1.Duration{Duration: 3 * time.Second}
		if err := f.admin.Patch(ctx, pool, patch); err != nil {
			t.Fatal(err)
		}
		f.pods(t, "grace", "grace", "500m", 1)
		f.create(t, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: "grace", Name: "never"},
			Spec:       policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr(intstr.FromInt32(0)), Selector: &metav1.LabelSelector{}},
		})
		f.eventually(t, 60*time.Second, "the pod bound", func() (bool, error) {
			pods := f.podList(t, "grace")
			return len(pods) == 1 && pods[0].Spec.NodeName != "", nil
		})
		claims := f.claims(t, "grace")
		if len(claims) != 1 || claims[0].Spec.TerminationGracePeriod == nil {
			t.Fatalf("nodeclaims %+v, want one with the pool's terminationGracePeriod", claims)
		}
		victim := claims[0]
		_, instance, _ := cloud.ParseProviderID(victim.Status.ProviderID)
		va := &storagev1.VolumeAttachment{
			ObjectMeta: metav1.ObjectMeta{Name: "grace-volume"},
			Spec: storagev1.VolumeAttachmentSpec{
				Attacher: "ebs.csi.aws.com", NodeName: victim.Status.NodeName,
				Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr("pv-grace")},
			},
		}
		f.create(t, va)
		if err := f.admin.Delete(ctx, &victim); err != nil {
			t.Fatal(err)
		}
		f.eventually(t, 30*time.Second, "the blocked pod deleted once the grace period passed", func() (bool, error) {
			return len(f.podList(t, "grace")) == 0, nil
		})
		time.Sleep(2 * time.Second)
		if f.instanceGone(ctx, instance) {
			t.Fatalf("instance %s terminated while a volume was still attached to its node", instance)
		}
		if err := f.admin.Delete(ctx, va); err != nil {
			t.Fatal(err)
		}
		f.eventually(t, 30*time.Second, "the instance terminated and the nodeclaim gone", func() (bool, error) {
			err := f.admin.Get(ctx, client.ObjectKeyFromObject(&victim), &v1.NodeClaim{})
			return apierrors.IsNotFound(err) && f.instanceGone(ctx, instance), nil
		})
	})

	t.Run("volume topology", func(t *testing.T) {
		// A claim waiting for its first consumer, of a class that may only
		// provision in us-west-2b: the node must come up there.
		f.namespace(t, "vol")
		f.pool(t, "vol", nil)
		wffc := storagev1.VolumeBindingWaitForFirstConsumer
		f.create(t, &storagev1.StorageClass{
			ObjectMeta: metav1.ObjectMeta{Name: "zone-b"}, Provisioner: "ebs.csi.aws.com", VolumeBindingMode: &wffc,
			AllowedTopologies: []corev1.TopologySelectorTerm{{MatchLabelExpressions: []corev1.TopologySelectorLabelRequirement{
				{Key: corev1.LabelTopologyZone, Values: []string{"us-west-2b"}},
			}}},
		})
		f.create(t, &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: "vol", Name: "data"},
			Spec: corev1.PersistentVolumeClaimSpec{
				StorageClassName: ptr("zone-b"), AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		})
		spec := podSpec("vol", "1")
		spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}
		f.create(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "vol", Name: "db"}, Spec: spec})
		f.eventually(t, 60*time.Second, "a launched nodeclaim for the pod", func() (bool, error) {
			claims := f.claims(t, "vol")
			return len(claims) > 0 && claims[0].Status.ProviderID != "", nil
		})
		for _, c := range f.claims(t, "vol") {
			if zone := c.Labels[corev1.LabelTopologyZone]; zone != "us-west-2b" {
				t.Errorf("nodeclaim %s launched in %q, want us-west-2b, the only zone its StorageClass allows", c.Name, zone)
			}
		}
	})

	t.Run("no capacity anywhere", func(t *testing.T) {
		// The pool allows only r5.large, which has no room (the provisioner
		// does not know yet: it has not tried it): the claim is deleted and
		// the pod reported, rather than retried forever.
		f.ec2.SetInsufficientCapacity(sandboxec2.Offering{InstanceType: "r5.large", Zone: "*", CapacityType: "*"}, true)
		t.Cleanup(func() {
			f.ec2.SetInsufficientCapacity(sandboxec2.Offering{InstanceType: "r5.large", Zone: "*", CapacityType: "*"}, false)
		})
		f.namespace(t, "dry")
		f.pool(t, "dry", nil, v1.NodeSelectorRequirementWithMinValues{
			Key: corev1.LabelInstanceTypeStable, Operator: corev1.NodeSelectorOpIn, Values: []string{"r5.large"},
		})
		f.pods(t, "dry", "dry", "1", 1)
		f.eventually(t, 60*time.Second, "an InsufficientCapacity event and the pod reported", func() (bool, error) {
			var list eventsv1.EventList
			if err := f.admin.List(ctx, &list); err != nil {
				return false, err
			}
			ice := slices.ContainsFunc(list.Items, func(e eventsv1.Event) bool {
				return e.Regarding.Kind == "NodeClaim" && strings.HasPrefix(e.Regarding.Name, "dry-") && e.Reason == "InsufficientCapacity"
			})
			return ice && len(f.podEvents(t, "dry", "dry-a", "FailedProvisioning")) > 0 && len(f.claims(t, "dry")) == 0, nil
		})
		if p := f.podList(t, "dry"); len(p) != 1 || p[0].Spec.NodeName != "" {
			t.Errorf("pod dry-a bound to %q with no capacity for its only type", p[0].Spec.NodeName)
		}
	})

	t.Run("garbage collection", func(t *testing.T) {
		// An instance tagged for the cluster whose NodeClaim never existed.
		class, err := f.cloud.ResolveNodeClass(ctx, &v1.NodeClass{
			ObjectMeta: metav1.ObjectMeta{Name: "default"},
			Spec: v1.NodeClassSpec{
				Role:                       "autonode-node",
				AMISelectorTerms:           []v1.AMISelectorTerm{{Alias: "autonode@latest"}},
				SubnetSelectorTerms:        []v1.SelectorTerm{{Tags: map[string]string{"autonode.dev/discovery": "*"}}},
				SecurityGroupSelectorTerms: []v1.SecurityGroupSelectorTerm{{Tags: map[string]string{"autonode.dev/discovery": "test"}}},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		orphan, err := f.cloud.Launch(ctx, &v1.NodeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "never-created", Labels: map[string]string{v1.LabelNodePool: "basic"}},
			Spec:       v1.NodeClaimSpec{NodeClassRef: v1.NodeClassReference{Name: "default"}},
		}, class)
		if err != nil {
			t.Fatal(err)
		}
		// And a NodeClaim whose instance went away behind its back.
		claims := f.claims(t, "basic")
		if len(claims) == 0 {
			t.Fatal("no basic nodeclaims left")
		}
		lost := claims[0]
		_, lostID, _ := cloud.ParseProviderID(lost.Status.ProviderID)
		if _, err := f.sdk.TerminateInstances(ctx, &sdkec2.TerminateInstancesInput{InstanceIds: []string{lostID}}); err != nil {
			t.Fatal(err)
		}
		f.eventually(t, 60*time.Second, "the orphan instance terminated", func() (bool, error) {
			return f.instanceGone(ctx, orphan.Instance.ID), nil
		})
		f.eventually(t, 60*time.Second, "the nodeclaim without an instance and its node deleted", func() (bool, error) {
			err := f.admin.Get(ctx, client.ObjectKeyFromObject(&lost), &v1.NodeClaim{})
			if !apierrors.IsNotFound(err) {
				return false, err
			}
			err = f.admin.Get(ctx, client.ObjectKey{Name: lost.Status.NodeName}, &corev1.Node{})
			return apierrors.IsNotFound(err), nil
		})
	})
}

// testCA stands in for the cluster's CA in node user data; nodes only
// pretend to join, so it is never parsed.
const testCA = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"
