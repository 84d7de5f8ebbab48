// Package kube connects the disruption engine to the apiserver. Source
// reads a disruption.Cluster from a controller-runtime client (normally the
// manager's cache); Executor carries commands out through the same client:
// it taints the candidates, has replacements launched through a Launcher
// (the provisioning controller's NodeClaim creation), waits for them to be
// Initialized, and deletes the candidates' NodeClaims, whose termination
// finalizer drains them through the Eviction API. Recorder turns decisions
// into Events on the NodeClaims and Nodes.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/disruption"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// Resolver gives what the provisioning side resolves: each NodePool as the
// scheduler sees it (its NodeClass's instance types with current offerings
// and prices, limits left) and the AMIs each NodeClass resolves to now
// (cloud.Provider.ResolveNodeClass), as NodeClass name -> arch -> image id.
type Resolver interface {
	SchedulingPools(ctx context.Context, pools []*v1.NodePool) (map[string]scheduling.NodePool, error)
	AMIs(ctx context.Context) (map[string]map[string]string, error)
}

// Source reads the cluster.
type Source struct {
	Client   client.Reader
	Resolver Resolver
	Logger   *slog.Logger
}

// Cluster lists what a decision needs and builds the model. Objects the
// model cannot read are logged and handled safely (see disruption.Build).
func (s *Source) Cluster(ctx context.Context) (*disruption.Cluster, error) {
	var pools v1.NodePoolList
	var claims v1.NodeClaimList
	var nodes corev1.NodeList
	var pods corev1.PodList
	var pdbs policyv1.PodDisruptionBudgetList
	var dss appsv1.DaemonSetList
	var nss corev1.NamespaceList
	for _, l := range []client.ObjectList{&pools, &claims, &nodes, &pods, &pdbs, &dss, &nss} {
		if err := s.Client.List(ctx, l); err != nil {
			return nil, fmt.Errorf("listing %T: %w", l, err)
		}
	}
	o := disruption.Objects{NamespaceLabels: map[string]map[string]string{}}
	for i := range pools.Items {
		o.NodePools = append(o.NodePools, &pools.Items[i])
	}
	for i := range claims.Items {
		o.NodeClaims = append(o.NodeClaims, &claims.Items[i])
	}
	for i := range nodes.Items {
		o.Nodes = append(o.Nodes, &nodes.Items[i])
	}
	for i := range pods.Items {
		o.Pods = append(o.Pods, &pods.Items[i])
	}
	for i := range pdbs.Items {
		o.PDBs = append(o.PDBs, &pdbs.Items[i])
	}
	for i := range dss.Items {
		d := &dss.Items[i]
		o.DaemonSets = append(o.DaemonSets, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: d.Name,
			Labels: d.Spec.Template.Labels}, Spec: d.Spec.Template.Spec})
	}
	for _, ns := range nss.Items {
		o.NamespaceLabels[ns.Name] = ns.Labels
	}
	var err error
	if o.SchedulingPools, err = s.Resolver.SchedulingPools(ctx, o.NodePools); err != nil {
		return nil, fmt.Errorf("resolving nodepools: %w", err)
	}
	if o.AMIs, err = s.Resolver.AMIs(ctx); err != nil {
		return nil, fmt.Errorf("resolving nodeclass AMIs: %w", err)
	}
	c, err := disruption.Build(o)
	if err != nil {
		s.Logger.Error("reading disruption objects", "err", err)
	}
	return c, nil
}

// Launcher creates the NodeClaim for a replacement (from its pool's
// template, with the narrowed requirements and the pool's
// disruption.AnnotationNodePoolHash) and returns its name.
type Launcher interface {
	Launch(ctx context.Context, nn scheduling.NewNode) (string, error)
}

// Executor carries commands out through the apiserver.
type Executor struct {
	Client   client.Client
	Launcher Launcher
	// PollInterval for WaitInitialized. Default 2s.
	PollInterval time.Duration
	// InitTimeout bounds WaitInitialized. Default 15m.
	InitTimeout time.Duration
}

var _ disruption.Executor = (*Executor)(nil)

// Taint puts the disrupted taint on each candidate's Node and sets the
// Disrupting condition on its NodeClaim, with the reason.
func (e *Executor) Taint(ctx context.Context, cmd *disruption.Command) error {
	return e.mark(ctx, cmd, true)
}

// Untaint undoes Taint.
func (e *Executor) Untaint(ctx context.Context, cmd *disruption.Command) error {
	return e.mark(ctx, cmd, false)
}

func (e *Executor) mark(ctx context.Context, cmd *disruption.Command, on bool) error {
	var errs []error
	for _, n := range cmd.Candidates {
		// A Node of that name may not exist (yet); taintNode ignores that.
		if err := e.taintNode(ctx, n.Name, on); err != nil {
			errs = append(errs, err)
		}
		if n.NodeClaim == "" {
			continue
		}
		var nc v1.NodeClaim
		if err := e.Client.Get(ctx, client.ObjectKey{Name: n.NodeClaim}, &nc); err != nil {
			if !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("nodeclaim %s: %w", n.NodeClaim, err))
			}
			continue
		}
		base := nc.DeepCopy()
		cond := metav1.Condition{Type: v1.ConditionDisrupting, Status: metav1.ConditionTrue, Reason: string(cmd.Reason),
			Message: cmd.Decision().String(), ObservedGeneration: nc.Generation}
		if !on {
			cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, "DisruptionCancelled", "the disruption command failed"
		}
		if !meta.SetStatusCondition(&nc.Status.Conditions, cond) {
			continue
		}
		if err := e.Client.Status().Patch(ctx, &nc, client.MergeFrom(base)); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("nodeclaim %s: setting %s: %w", n.NodeClaim, v1.ConditionDisrupting, err))
		}
	}
	return errors.Join(errs...)
}

func (e *Executor) taintNode(ctx context.Context, name string, on bool) error {
	var node corev1.Node
	if err := e.Client.Get(ctx, client.ObjectKey{Name: name}, &node); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("node %s: %w", name, err)
	}
	t := disruption.DisruptedTaint()
	has := slices.ContainsFunc(node.Spec.Taints, func(x corev1.Taint) bool { return x.Key == t.Key && x.Effect == t.Effect })
	if has == on {
		return nil
	}
	base := node.DeepCopy()
	if on {
		node.Spec.Taints = append(node.Spec.Taints, t)
	} else {
		node.Spec.Taints = slices.DeleteFunc(node.Spec.Taints, func(x corev1.Taint) bool { return x.Key == t.Key && x.Effect == t.Effect })
	}
	// The optimistic lock makes a concurrent taint change retry rather
	// than be overwritten.
	if err := e.Client.Patch(ctx, &node, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("node %s: tainting: %w", name, err)
	}
	return nil
}

// Launch creates the replacements through the Launcher.
func (e *Executor) Launch(ctx context.Context, cmd *disruption.Command) ([]string, error) {
	var names []string
	for _, nn := range cmd.Replacements {
		name, err := e.Launcher.Launch(ctx, nn)
		if err != nil {
			return names, fmt.Errorf("replacement %s in nodepool %s: %w", nn.Name, nn.NodePool, err)
		}
		names = append(names, name)
	}
	return names, nil
}

// WaitInitialized polls the NodeClaims until each is Initialized. A claim
// that disappears once seen, or InitTimeout passing, is an error; one not
// seen yet is waited for, since a cached client lags behind the Create.
func (e *Executor) WaitInitialized(ctx context.Context, names []string) error {
	interval, timeout := e.PollInterval, e.InitTimeout
	if interval == 0 {
		interval = 2 * time.Second
	}
	if timeout == 0 {
		timeout = 15 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, name := range names {
		seen := false
		err := wait.PollUntilContextCancel(ctx, interval, true, func(ctx context.Context) (bool, error) {
			var nc v1.NodeClaim
			err := e.Client.Get(ctx, client.ObjectKey{Name: name}, &nc)
			if apierrors.IsNotFound(err) && !seen {
				return false, nil // just created: the cache has not caught up
			}
			if err != nil {
				return false, err
			}
			seen = true
			if nc.DeletionTimestamp != nil {
				return false, fmt.Errorf("is being deleted")
			}
			return meta.IsStatusConditionTrue(nc.Status.Conditions, v1.ConditionInitialized), nil
		})
		if err != nil {
			return fmt.Errorf("nodeclaim %s: waiting for %s: %w", name, v1.ConditionInitialized, err)
		}
	}
	return nil
}

// Delete deletes the candidates' NodeClaims (or, for a node without one,
// nothing: such nodes are never candidates).
func (e *Executor) Delete(ctx context.Context, cmd *disruption.Command) error {
	var errs []error
	for _, n := range cmd.Candidates {
		if n.NodeClaim == "" {
			continue
		}
		nc := &v1.NodeClaim{ObjectMeta: metav1.ObjectMeta{Name: n.NodeClaim}}
		if err := e.Client.Delete(ctx, nc); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("nodeclaim %s: deleting: %w", n.NodeClaim, err))
		}
	}
	return errors.Join(errs...)
}

// Recorder records decisions as Events on the candidates' NodeClaims and
// Nodes, through the events.k8s.io API (the manager's GetEventRecorder).
type Recorder struct {
	Events events.EventRecorder
}

var _ disruption.Recorder = Recorder{}

// Record emits one Event per candidate object. The message is a format
// argument, never the format: it may hold a percent sign.
func (r Recorder) Record(cmd *disruption.Command, reason, message string) {
	typ := corev1.EventTypeNormal
	if reason == "DisruptionFailed" {
		typ = corev1.EventTypeWarning
	}
	for _, n := range cmd.Candidates {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name}}
		if n.NodeClaim != "" {
			r.Events.Eventf(&v1.NodeClaim{ObjectMeta: metav1.ObjectMeta{Name: n.NodeClaim}}, node, typ, reason, "Disrupt", "%s", message)
		}
		r.Events.Eventf(node, nil, typ, reason, "Disrupt", "%s", message)
	}
}

// LauncherFunc adapts a function, such as one around the provisioning
// controller's NodeClaimFor and a Create, to Launcher.
type LauncherFunc func(ctx context.Context, nn scheduling.NewNode) (string, error)

// Launch calls f.
func (f LauncherFunc) Launch(ctx context.Context, nn scheduling.NewNode) (string, error) {
	return f(ctx, nn)
}
