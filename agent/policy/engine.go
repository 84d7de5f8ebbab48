// Package policy is the NetworkPolicy engine: it watches NetworkPolicies, Namespaces, Pods, Services and
// EndpointSlices, computes the rules of every pod attached on this node with agent/policy/compute, and programs
// them into the BPF datapath (agent/policy/datapath). It runs as the agent's "policy" subsystem.
//
// Pods become local through CNI ADD, which calls Attach synchronously: the pod's programs and maps are in place
// before ADD returns, so no packet of a new pod passes unchecked. In strict mode (the default) a pod attached
// before the informers have synced is denied everything but node traffic until they have. After a change of a
// policy, namespace, pod, Service or EndpointSlice only the local pods it may affect are recomputed.
//
// docs/policy.md ("Engine") records the choices: Services are allowed before DNAT by adding their cluster IPs,
// node-local DNS counts as the cluster DNS pods, invalid policies deny the pods they may select.
package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/autonode/autonode/agent/policy/compute"
	"github.com/autonode/autonode/agent/policy/datapath"
)

// Datapath is what the engine needs of agent/policy/datapath.
type Datapath interface {
	// Program replaces a pod's rules atomically, attaching its programs when needed.
	Program(ctx context.Context, r datapath.PodRules) error
	// Remove detaches a pod's programs and deletes its maps and pins; an unknown pod is not an error.
	Remove(ctx context.Context, hostIf string) error
	// Reconcile removes everything programmed for host interfaces not in keep.
	Reconcile(ctx context.Context, keep []string) error
	// SetNodeAddresses replaces the addresses whose traffic with pods is always allowed.
	SetNodeAddresses(ctx context.Context, addrs []netip.Addr) error
	// Events delivers flow verdicts until ctx ends.
	Events(ctx context.Context) <-chan datapath.Event
	// Run sweeps the connection tracker and keeps the datapath's metrics until ctx ends.
	Run(ctx context.Context) error
}

// Pod is a pod attached on this node, as CNI ADD knows it.
type Pod struct {
	// HostIf is the host end of the pod's veth.
	HostIf string
	// Namespace and Name come from CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME); UID (K8S_POD_UID) may be empty.
	Namespace, Name, UID string
	// IP is the address CNI gave the pod.
	IP netip.Addr
}

// Options configures an Engine.
type Options struct {
	Logger *slog.Logger
	// Client reads the cluster: NetworkPolicies, Namespaces, Pods, Services, EndpointSlices.
	Client kubernetes.Interface
	// Datapath enforces the rules; it is open already and the caller closes it after Run.
	Datapath Datapath
	// Recorder receives an Event on every NetworkPolicy the datapath cannot enforce; nil records none.
	Recorder record.EventRecorder
	// Registerer receives the engine's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Strict denies pods attached before the informers have synced (node traffic excepted); without it they
	// are allowed everything until then.
	Strict bool
	// NodeLocalDNS is the node-local DNS address: egress to the cluster DNS pods on port 53 also allows it.
	// Invalid turns that off.
	NodeLocalDNS netip.Addr
	// DNSService is the cluster DNS Service as namespace/name. Default is kube-system/kube-dns.
	DNSService string
	// NodeAddresses returns the node's own addresses, whose traffic with its pods is always allowed.
	NodeAddresses func(ctx context.Context) ([]netip.Addr, error)
	// Attachments lists the pods attached on this node, from the CNI's allocations: at start they are adopted
	// (their pinned rules stay in force until recomputed), and pins of anything else are removed. Nil means
	// none survive a restart.
	Attachments func() []Pod
	// ReconcileInterval is how often pins are reconciled with the attached pods. Default is 5m.
	ReconcileInterval time.Duration
	// NodeAddressInterval is how often the node's addresses are re-read. Default is 30s.
	NodeAddressInterval time.Duration
	// Workers is how many pods are recomputed at once. Default is 4.
	Workers int
	// FlowLogsPerSecond bounds the flow events logged, beyond the datapath's own limit. Default is 10.
	FlowLogsPerSecond float64
	// FetchTimeout bounds the apiserver read of a pod that CNI ADD names before the informer has it.
	// Default is 2s.
	FetchTimeout time.Duration
}

// Engine is the policy subsystem.
type Engine struct {
	log     *slog.Logger
	opts    Options
	dns     podKey
	metrics *metrics

	// mu guards the view, the enqueue times and the reported policies.
	mu       sync.Mutex
	v        *view
	synced   bool
	enqueued map[string]time.Time
	// reported holds the resourceVersion of each invalid policy already given an Event.
	reported map[types.UID]string

	// queue holds the host interfaces to recompute; each Run makes a new one (guarded by mu) after the last
	// one's shut down.
	queue workqueue.TypedRateLimitingInterface[string]
	// lastNodeAddrs is what the datapath was last given; only Run's goroutines touch it, one at a time.
	lastNodeAddrs []netip.Addr
	// pods serialises programming one host interface between the workers, Attach and Detach.
	pods keyLocks
}

// New builds an Engine; Run runs it. Attach may be called before Run (strict rules apply until it syncs).
func New(opts Options) (*Engine, error) {
	if opts.Client == nil || opts.Datapath == nil {
		return nil, errors.New("policy engine needs a Kubernetes client and a datapath")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DNSService == "" {
		opts.DNSService = "kube-system/kube-dns"
	}
	ns, name, ok := cutKey(opts.DNSService)
	if !ok {
		return nil, fmt.Errorf("DNS service %q: want namespace/name", opts.DNSService)
	}
	if opts.ReconcileInterval <= 0 {
		opts.ReconcileInterval = 5 * time.Minute
	}
	if opts.NodeAddressInterval <= 0 {
		opts.NodeAddressInterval = 30 * time.Second
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.FlowLogsPerSecond <= 0 {
		opts.FlowLogsPerSecond = 10
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 2 * time.Second
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		log: opts.Logger.With("subsystem", "policy"), opts: opts, dns: podKey{ns, name}, metrics: m,
		v: newView(), enqueued: map[string]time.Time{}, reported: map[types.UID]string{},
	}
	e.newQueue()
	return e, nil
}

func (e *Engine) newQueue() {
	e.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 30*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "policy"})
}

// Name is the subsystem name.
func (e *Engine) Name() string { return "policy" }

// Ready is nil once the informers have synced and every local pod has its computed rules.
func (e *Engine) Ready() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.synced {
		return errors.New("waiting for the NetworkPolicy, Namespace, Pod, Service and EndpointSlice caches to sync")
	}
	return nil
}

// Attach programs a pod that CNI ADD has just wired, before ADD returns. Its rules are computed from the
// caches when they have synced, else they deny (strict) or allow everything; they are recomputed on every
// relevant change until Detach.
func (e *Engine) Attach(ctx context.Context, p Pod) error {
	if p.HostIf == "" || !p.IP.IsValid() {
		return fmt.Errorf("pod %s/%s: attaching policy needs a host interface and an address", p.Namespace, p.Name)
	}
	l := &local{HostIf: p.HostIf, Namespace: p.Namespace, Name: p.Name, UID: types.UID(p.UID), IP: p.IP}
	e.mu.Lock()
	synced := e.synced
	known := e.v.pods[l.key()]
	e.mu.Unlock()
	if synced && (known == nil || (l.UID != "" && known.UID != l.UID)) && p.Name != "" {
		// The pod was bound before its sandbox was made, so the watch normally has it; when it lags, read it.
		l.fetched = e.fetch(ctx, l)
	}
	e.mu.Lock()
	others := e.v.attach(l)
	e.mu.Unlock()
	e.enqueue(others)
	if err := e.sync(ctx, p.HostIf); err != nil {
		return fmt.Errorf("pod %s/%s on %s: %w", p.Namespace, p.Name, p.HostIf, err)
	}
	return nil
}

func (e *Engine) fetch(ctx context.Context, l *local) *podInfo {
	ctx, cancel := context.WithTimeout(ctx, e.opts.FetchTimeout)
	defer cancel()
	pod, err := e.opts.Client.CoreV1().Pods(l.Namespace).Get(ctx, l.Name, metav1.GetOptions{})
	if err != nil {
		// Strict rules hold until the informer brings the pod.
		if !apierrors.IsNotFound(err) {
			e.log.Warn("reading pod at CNI ADD", "pod", l.key(), "err", err)
		}
		return nil
	}
	if l.UID != "" && pod.UID != l.UID {
		return nil
	}
	stripped, _ := stripObject(pod)
	return podInfoFrom(stripped.(*corev1.Pod))
}

// Detach removes a pod's programs and maps; CNI DEL calls it. An unknown interface is not an error.
func (e *Engine) Detach(ctx context.Context, hostIf string) error {
	unlock := e.pods.lock(hostIf)
	defer unlock()
	e.mu.Lock()
	l, others := e.v.detach(hostIf)
	delete(e.enqueued, hostIf)
	e.mu.Unlock()
	e.enqueue(others)
	if err := e.opts.Datapath.Remove(ctx, hostIf); err != nil && !errors.Is(err, datapath.ErrNotFound) {
		return fmt.Errorf("removing policy of %s: %w", hostIf, err)
	}
	if l != nil {
		e.metrics.forget(l.key().String())
	}
	e.metrics.locals.Set(float64(e.localCount()))
	return nil
}

func (e *Engine) localCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.v.locals)
}

// enqueue schedules the recomputation of pods, remembering when each was first asked for.
func (e *Engine) enqueue(s set) {
	if len(s) == 0 {
		return
	}
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range s {
		if _, ok := e.enqueued[i]; !ok {
			e.enqueued[i] = now
		}
		e.queue.Add(i)
	}
}

// rules computes what to program for one local pod, and the names of the policies that isolate it.
func (e *Engine) rules(hostIf string) (r datapath.PodRules, l *local, ingressPols, egressPols []string, err error) {
	e.mu.Lock()
	l = e.v.locals[hostIf]
	if l == nil {
		e.mu.Unlock()
		return r, nil, nil, nil, nil
	}
	r = datapath.PodRules{HostIf: hostIf, Namespace: l.Namespace, Name: l.Name, IP: l.IP}
	pod := e.v.podOf(l)
	if pod == nil && l.Name == "" {
		pod = &podInfo{} // CNI_ARGS name no Kubernetes pod: no policy can select it
	}
	if !e.synced || pod == nil {
		e.mu.Unlock()
		// Before sync, or for a pod the apiserver has not shown us: strict mode denies.
		r.Ingress.Isolated, r.Egress.Isolated = e.opts.Strict, e.opts.Strict
		return r, l, nil, nil, nil
	}
	pols := e.v.policiesIn(l.Namespace)
	in := compute.Input{
		Pod:        compute.Pod{Namespace: l.Namespace, Name: l.Name, Labels: pod.Labels, IP: l.IP, Ports: pod.Ports},
		Namespaces: e.v.namespaces,
		Peers:      e.v.peerSnapshot(),
	}
	for _, pi := range pols {
		in.Policies = append(in.Policies, pi.pol)
		if pi.podSel != nil && pi.podSel.Matches(labelSet(pod.Labels)) {
			if pi.hasType(networkingv1.PolicyTypeIngress) {
				ingressPols = append(ingressPols, pi.pol.Name)
			}
			if pi.hasType(networkingv1.PolicyTypeEgress) {
				egressPols = append(egressPols, pi.pol.Name)
			}
		}
	}
	e.mu.Unlock()

	res, err := compute.Compute(in) // outside the lock: everything in reads only
	if err != nil {
		return r, l, ingressPols, egressPols, err
	}
	e.mu.Lock()
	r.Ingress = res.Ingress
	r.Egress = e.v.expandEgress(res.Egress, expansion{dnsAddr: e.opts.NodeLocalDNS, dnsService: e.dns})
	l.egress = res.Egress
	e.mu.Unlock()
	return r, l, ingressPols, egressPols, nil
}

// sync recomputes and programs one local pod.
func (e *Engine) sync(ctx context.Context, hostIf string) error {
	unlock := e.pods.lock(hostIf)
	defer unlock()
	start := time.Now()
	r, l, ingressPols, egressPols, err := e.rules(hostIf)
	if l == nil {
		return nil // detached meanwhile
	}
	deny := datapath.PodRules{HostIf: r.HostIf, Namespace: r.Namespace, Name: r.Name, IP: r.IP,
		Ingress: compute.Direction{Isolated: true}, Egress: compute.Direction{Isolated: true}}
	if errors.Is(err, compute.ErrInvalidPolicy) {
		// Never open a pod because of a policy we cannot read: deny it, and say which policy.
		bad := e.notEnforceable(l, err)
		r = deny
		ingressPols, egressPols = bad, bad
	} else if err != nil {
		return err
	}
	e.metrics.computeSeconds.Observe(time.Since(start).Seconds())
	err = e.opts.Datapath.Program(ctx, r)
	if errors.Is(err, datapath.ErrUnsupported) {
		e.notExpressible(l, append(append([]string{}, ingressPols...), egressPols...), err)
		r = deny
		err = e.opts.Datapath.Program(ctx, r)
	}
	if err != nil {
		e.metrics.programs.WithLabelValues("error").Inc()
		return fmt.Errorf("programming %s/%s on %s: %w", r.Namespace, r.Name, hostIf, err)
	}
	e.metrics.programs.WithLabelValues("ok").Inc()
	e.mu.Lock()
	if e.v.locals[hostIf] == l {
		l.ingressPolicies, l.egressPolicies = ingressPols, egressPols
		l.programmed = e.synced
	}
	if t, ok := e.enqueued[hostIf]; ok {
		delete(e.enqueued, hostIf)
		e.metrics.enforceSeconds.Observe(time.Since(t).Seconds())
	}
	n := len(e.v.locals)
	e.mu.Unlock()
	e.metrics.locals.Set(float64(n))
	return nil
}

// badPolicies returns the policies of l's namespace that Compute rejects on their own, against l.
func (e *Engine) badPolicies(l *local) []*networkingv1.NetworkPolicy {
	e.mu.Lock()
	pols := e.v.policiesIn(l.Namespace)
	pod := e.v.podOf(l)
	nss := e.v.namespaces
	e.mu.Unlock()
	cp := compute.Pod{Namespace: l.Namespace, Name: l.Name, IP: l.IP}
	if pod != nil {
		cp.Labels, cp.Ports = pod.Labels, pod.Ports
	}
	var bad []*networkingv1.NetworkPolicy
	for _, pi := range pols {
		if _, err := compute.Compute(compute.Input{Pod: cp, Policies: []*networkingv1.NetworkPolicy{pi.pol}, Namespaces: nss}); err != nil {
			bad = append(bad, pi.pol)
		}
	}
	return bad
}

// notEnforceable reports invalid policies: an Event on each (once per version), a metric, a log. It returns their
// names, to which the pod's flows are attributed.
func (e *Engine) notEnforceable(l *local, cause error) []string {
	e.log.Warn("a policy is invalid; denying the pod", "pod", l.key(), "err", cause)
	var names []string
	for _, pol := range e.badPolicies(l) {
		e.report(pol, fmt.Sprintf("pod %s is denied all traffic: %v", l.key(), cause))
		names = append(names, pol.Name)
	}
	return names
}

// notExpressible reports policies whose rules the datapath cannot hold for a pod.
func (e *Engine) notExpressible(l *local, names []string, cause error) {
	e.log.Warn("the datapath cannot express a pod's rules; denying it", "pod", l.key(), "err", cause)
	e.mu.Lock()
	var pols []*networkingv1.NetworkPolicy
	for _, n := range names {
		if pi := e.v.policies[l.Namespace][n]; pi != nil {
			pols = append(pols, pi.pol)
		}
	}
	e.mu.Unlock()
	if len(pols) == 0 {
		e.metrics.notEnforceable.WithLabelValues(l.Namespace, "").Inc()
	}
	for _, pol := range pols {
		e.report(pol, fmt.Sprintf("rules of pod %s cannot be enforced, so it is denied all traffic: %v", l.key(), cause))
	}
}

// NotEnforceableReason is the reason of the Event on a NetworkPolicy the node cannot enforce.
const NotEnforceableReason = "PolicyNotEnforceable"

func (e *Engine) report(pol *networkingv1.NetworkPolicy, msg string) {
	e.metrics.notEnforceable.WithLabelValues(pol.Namespace, pol.Name).Inc()
	e.mu.Lock()
	seen := e.reported[pol.UID] == pol.ResourceVersion
	e.reported[pol.UID] = pol.ResourceVersion
	e.mu.Unlock()
	if seen || e.opts.Recorder == nil {
		return
	}
	e.opts.Recorder.Event(pol, corev1.EventTypeWarning, NotEnforceableReason, msg)
}

func (e *Engine) worker(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string]) {
	for {
		hostIf, quit := queue.Get()
		if quit {
			return
		}
		if err := e.sync(ctx, hostIf); err != nil {
			e.log.Warn("programming pod policy; retrying", "link", hostIf, "err", err)
			queue.AddRateLimited(hostIf)
		} else {
			queue.Forget(hostIf)
		}
		queue.Done(hostIf)
	}
}

// keyLocks hands out one mutex per key, dropped when unused.
type keyLocks struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	sync.Mutex
	users int
}

func (k *keyLocks) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{}
		k.locks[key] = l
	}
	l.users++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
