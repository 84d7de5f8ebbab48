// Package provisioning turns pods that kube-scheduler cannot place into
// NodeClaims. A pod controller watches for pending pods (PodScheduled False
// with reason Unschedulable) and triggers a Batcher; once a batch closes,
// the Provisioner resolves the cluster into a scheduling.Input (BuildInput),
// solves it, creates a NodeClaim per new node (CreateNodeClaims) and records
// an Event on every pod that fits nowhere. Launching the claims is the
// lifecycle controller's job.
package provisioning

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/cloud"
	"github.com/autonode/autonode/provisioner/controllers/claimutil"
	"github.com/autonode/autonode/provisioner/disruption"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// Event reasons on pods.
const (
	// ReasonFailedProvisioning: no existing node, in-flight claim or new
	// node of any pool can take the pod; the note says why per pool.
	ReasonFailedProvisioning = "FailedProvisioning"
	// ReasonNominated: the pod is planned onto a new NodeClaim.
	ReasonNominated = "Nominated"
)

// CloudProvider is what provisioning needs from the cloud:
// *cloud.Provider satisfies it.
type CloudProvider interface {
	ResolveNodeClass(ctx context.Context, nc *v1.NodeClass) (*cloud.ResolvedNodeClass, error)
	InstanceTypes(ctx context.Context, class *cloud.ResolvedNodeClass) ([]*cloud.InstanceType, error)
}

// Options configures a Provisioner.
type Options struct {
	// BatchIdle closes a batch once no pod has turned pending for this
	// long. Default 1s.
	BatchIdle time.Duration
	// BatchMax closes a batch this long after it opened. Default 10s.
	BatchMax time.Duration
	// Clock drives the batcher. Default the real clock.
	Clock clock.Clock
	// Logger. Default discards.
	Logger *slog.Logger
}

// Provisioner schedules pending pods in batches and creates NodeClaims.
type Provisioner struct {
	client   client.Client
	cloud    CloudProvider
	recorder events.EventRecorder
	batcher  *Batcher
	opts     Options
}

// New returns a Provisioner that reads through c (a manager's cached
// client, with claimutil's indexes) and records Events on pods.
func New(c client.Client, cp CloudProvider, recorder events.EventRecorder, opts Options) *Provisioner {
	opts.BatchIdle = cmp.Or(opts.BatchIdle, time.Second)
	opts.BatchMax = cmp.Or(opts.BatchMax, 10*time.Second)
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Provisioner{client: c, cloud: cp, recorder: recorder, batcher: NewBatcher(opts.Clock, opts.BatchIdle, opts.BatchMax), opts: opts}
}

// Trigger asks for a scheduling round: it opens a batch or extends the
// open one.
func (p *Provisioner) Trigger() { p.batcher.Trigger() }

// Start runs scheduling rounds, one per closed batch, until ctx ends. A
// failed round is logged and retried on the next trigger. It makes the
// Provisioner a manager.Runnable that runs only on the leader.
func (p *Provisioner) Start(ctx context.Context) error {
	for p.batcher.Wait(ctx) {
		if _, err := p.Schedule(ctx); err != nil && ctx.Err() == nil {
			p.opts.Logger.ErrorContext(ctx, "scheduling round failed", "err", err)
			// Retry after a pause, so a broken apiserver is not hammered.
			go func() {
				select {
				case <-ctx.Done():
				case <-p.opts.Clock.After(p.opts.BatchMax):
					p.Trigger()
				}
			}()
		}
	}
	return nil
}

// IsPending reports whether a pod waits for a node the provisioner could
// make: kube-scheduler found no node for it (PodScheduled False, reason
// Unschedulable), it is not bound, not being deleted, not finished, and no
// DaemonSet owns it (those follow nodes, they do not need them).
func IsPending(p *corev1.Pod) bool {
	if p.Spec.NodeName != "" || p.DeletionTimestamp != nil || claimutil.IsTerminal(p) || claimutil.IsDaemonSetPod(p) {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			return c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable
		}
	}
	return false
}

// Schedule runs one round: the pending pods are solved against the cluster;
// new nodes become NodeClaims; pods that fit nowhere get an Event.
func (p *Provisioner) Schedule(ctx context.Context) (scheduling.Result, error) {
	var list corev1.PodList
	if err := p.client.List(ctx, &list); err != nil {
		return scheduling.Result{}, fmt.Errorf("listing pods: %w", err)
	}
	var pods []*corev1.Pod
	for i := range list.Items {
		if IsPending(&list.Items[i]) {
			pods = append(pods, &list.Items[i])
		}
	}
	if len(pods) == 0 {
		return scheduling.Result{}, nil
	}
	cluster, err := p.BuildInput(ctx, pods)
	if err != nil {
		return scheduling.Result{}, err
	}
	start := time.Now()
	res, err := scheduling.Solve(ctx, cluster.Input)
	if err != nil {
		return res, fmt.Errorf("solving %d pending pods: %w", len(pods), err)
	}
	p.opts.Logger.InfoContext(ctx, "scheduled pending pods", "pods", len(pods), "new_nodes", len(res.NewNodes),
		"unschedulable", len(res.Unschedulable), "cost_per_hour", res.Cost(), "solve", time.Since(start))
	claims, err := p.CreateNodeClaims(ctx, cluster.NodePools, res.NewNodes)
	for i, c := range claims {
		for _, pod := range res.NewNodes[i].Pods {
			p.recorder.Eventf(pod, c, corev1.EventTypeNormal, ReasonNominated, "Provision", "Pod should schedule on nodeclaim %s", c.Name)
		}
	}
	for _, u := range res.Unschedulable {
		p.recorder.Eventf(u.Pod, nil, corev1.EventTypeWarning, ReasonFailedProvisioning, "Provision", "%s", truncate(u.Err.Error(), 1000))
	}
	return res, err
}

// truncate bounds an Event note (the API allows 1 kB).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// CreateNodeClaims creates one NodeClaim per new node, in order, and
// returns those it created. The lifecycle controller launches them; the
// disruption controller calls this to launch replacements and then waits
// for claimutil.Initialized on each.
func (p *Provisioner) CreateNodeClaims(ctx context.Context, pools map[string]*v1.NodePool, nodes []scheduling.NewNode) ([]*v1.NodeClaim, error) {
	out := make([]*v1.NodeClaim, 0, len(nodes))
	for _, n := range nodes {
		pool, ok := pools[n.NodePool]
		if !ok {
			return out, fmt.Errorf("new node %s: nodepool %s unknown", n.Name, n.NodePool)
		}
		claim, err := NodeClaimFor(pool, n)
		if err != nil {
			return out, err
		}
		if err := p.client.Create(ctx, claim); err != nil {
			return out, fmt.Errorf("creating nodeclaim for nodepool %s: %w", pool.Name, err)
		}
		p.opts.Logger.InfoContext(ctx, "created nodeclaim", "nodeclaim", claim.Name, "nodepool", pool.Name,
			"pods", len(n.Pods), "instance_types", len(n.InstanceTypes), "cheapest", n.InstanceTypes[0].Name, "price", n.Price)
		out = append(out, claim)
	}
	return out, nil
}

// Launch creates the NodeClaim of one new node of a known pool and returns
// its name: the disruption controller's Launcher for replacements, which
// then waits for claimutil.Initialized.
func (p *Provisioner) Launch(ctx context.Context, n scheduling.NewNode) (string, error) {
	var pool v1.NodePool
	if err := p.client.Get(ctx, client.ObjectKey{Name: n.NodePool}, &pool); err != nil {
		return "", fmt.Errorf("nodepool %s: %w", n.NodePool, err)
	}
	claims, err := p.CreateNodeClaims(ctx, map[string]*v1.NodePool{pool.Name: &pool}, []scheduling.NewNode{n})
	if err != nil {
		return "", err
	}
	return claims[0].Name, nil
}

// NodeClaimFor builds the NodeClaim of a new node: named after its pool,
// labelled with the pool's template labels and those the scheduler fixed,
// with the narrowed requirements (the cheapest instance types first), the
// pods' requests plus DaemonSet overhead, the pool's taints and startup
// taints (autonode.dev/agent-not-ready always among them), the pool's
// template hash (for drift) and the termination finalizer. The pool owns
// it, so deleting the pool deletes its claims.
func NodeClaimFor(pool *v1.NodePool, n scheduling.NewNode) (*v1.NodeClaim, error) {
	names := make([]string, 0, len(n.InstanceTypes))
	for _, it := range n.InstanceTypes {
		names = append(names, it.Name)
	}
	reqs, err := APIRequirements(n.Requirements, names)
	if err != nil {
		return nil, fmt.Errorf("nodeclaim for nodepool %s: %w", pool.Name, err)
	}
	labels := maps.Clone(pool.Spec.Template.ObjectMeta.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, n.Labels)
	delete(labels, corev1.LabelHostname) // the placeholder name, not the node's
	labels[v1.LabelNodePool] = pool.Name
	annotations := maps.Clone(pool.Spec.Template.ObjectMeta.Annotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[disruption.AnnotationNodePoolHash] = disruption.TemplateHash(pool)
	annotations[disruption.AnnotationNodePoolHashVersion] = disruption.HashVersion
	tmpl := pool.Spec.Template.Spec
	expire := tmpl.ExpireAfter
	if expire == nil {
		d, _ := time.ParseDuration(v1.DefaultExpireAfter)
		expire = &metav1.Duration{Duration: d}
	}
	claim := &v1.NodeClaim{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: strings.TrimSuffix(pool.Name, "-") + "-",
			Labels:       labels,
			Annotations:  annotations,
			Finalizers:   []string{claimutil.TerminationFinalizer},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: v1.GroupVersion.String(), Kind: "NodePool", Name: pool.Name, UID: pool.UID,
			}},
		},
		Spec: v1.NodeClaimSpec{
			Taints:                 slices.Clone(tmpl.Taints),
			StartupTaints:          startupTaints(tmpl.StartupTaints),
			Requirements:           reqs,
			Resources:              v1.ResourceRequirements{Requests: n.Requests.Add(n.Overhead).List()},
			NodeClassRef:           tmpl.NodeClassRef,
			ExpireAfter:            expire,
			TerminationGracePeriod: tmpl.TerminationGracePeriod,
		},
	}
	return claim, nil
}
