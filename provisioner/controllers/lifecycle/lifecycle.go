// Package lifecycle takes a NodeClaim from creation to a Node that can run
// pods: Launched (an instance through the cloud provider: status
// providerID, imageID, capacity and allocatable, labels of the type, zone
// and capacity type EC2 chose), Registered (a Node with the claim's
// providerID has joined: the claim's labels, taints and the termination
// finalizer are put on it) and Initialized (the Node is Ready, its startup
// taints, autonode.dev/agent-not-ready among them, and the ephemeral taints
// Kubernetes puts on joining Nodes are gone, and the
// extended resources the claim asked for are allocatable). A claim whose
// Node has not registered within RegistrationTTL is deleted, and so is one
// for which no offering had capacity, so that the next scheduling round
// plans its pods elsewhere.
package lifecycle

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/cloud"
	"github.com/autonode/autonode/provisioner/controllers/claimutil"
)

// CloudProvider is what the lifecycle needs from the cloud;
// *cloud.Provider satisfies it.
type CloudProvider interface {
	ResolveNodeClass(ctx context.Context, nc *v1.NodeClass) (*cloud.ResolvedNodeClass, error)
	Launch(ctx context.Context, claim *v1.NodeClaim, class *cloud.ResolvedNodeClass) (*cloud.Launched, error)
}

// Event reasons on NodeClaims.
const (
	ReasonLaunched             = "Launched"
	ReasonInsufficientCapacity = "InsufficientCapacity"
	ReasonLaunchFailed         = "LaunchFailed"
	ReasonRegistered           = "Registered"
	ReasonInitialized          = "Initialized"
	ReasonRegistrationTimeout  = "RegistrationTimeout"
)

// Options configures a Controller.
type Options struct {
	// RegistrationTTL is how long a launched claim may wait for its Node
	// before it is deleted (and its instance with it). Default 15m.
	RegistrationTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger. Default discards.
	Logger *slog.Logger
}

// Controller reconciles NodeClaims through launch, registration and
// initialization.
type Controller struct {
	client   client.Client
	reader   client.Reader // uncached: the last word before a launch
	cloud    CloudProvider
	recorder events.EventRecorder
	opts     Options
}

// New returns a Controller that reads through c (a cached client with
// claimutil's indexes), checks a claim through reader (uncached) right
// before launching it, and records Events on claims.
func New(c client.Client, reader client.Reader, cp CloudProvider, recorder events.EventRecorder, opts Options) *Controller {
	opts.RegistrationTTL = cmp.Or(opts.RegistrationTTL, 15*time.Minute)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Controller{client: c, reader: reader, cloud: cp, recorder: recorder, opts: opts}
}

// Reconcile moves a claim one step further through its lifecycle.
func (c *Controller) Reconcile(ctx context.Context, claim *v1.NodeClaim) (reconcile.Result, error) {
	if claim.DeletionTimestamp != nil {
		return reconcile.Result{}, nil // termination's
	}
	if !controllerutil.ContainsFinalizer(claim, claimutil.TerminationFinalizer) {
		patch := client.MergeFrom(claim.DeepCopy())
		controllerutil.AddFinalizer(claim, claimutil.TerminationFinalizer)
		if err := c.client.Patch(ctx, claim, patch); err != nil {
			return reconcile.Result{}, fmt.Errorf("nodeclaim %s: adding finalizer: %w", claim.Name, err)
		}
	}
	if !claimutil.IsTrue(claim, v1.ConditionLaunched) {
		return c.launch(ctx, claim)
	}
	node, err := claimutil.NodeFor(ctx, c.client, claim)
	if err != nil {
		return reconcile.Result{}, err
	}
	if node == nil {
		return c.awaitRegistration(ctx, claim)
	}
	if err := c.register(ctx, claim, node); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, c.initialize(ctx, claim, node)
}

// launch makes the claim's instance. The claim is read again, uncached,
// first: a cache that has not seen the status of an earlier launch must
// not cause a second one.
func (c *Controller) launch(ctx context.Context, claim *v1.NodeClaim) (reconcile.Result, error) {
	fresh := &v1.NodeClaim{}
	if err := c.reader.Get(ctx, client.ObjectKeyFromObject(claim), fresh); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if fresh.DeletionTimestamp != nil || claimutil.IsTrue(fresh, v1.ConditionLaunched) {
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	claim = fresh
	var nc v1.NodeClass
	if err := c.client.Get(ctx, client.ObjectKey{Name: claim.Spec.NodeClassRef.Name}, &nc); err != nil {
		return reconcile.Result{}, c.launchFailed(ctx, claim, fmt.Errorf("nodeclaim %s: nodeclass %s: %w", claim.Name, claim.Spec.NodeClassRef.Name, err))
	}
	class, err := c.cloud.ResolveNodeClass(ctx, &nc)
	if err != nil {
		return reconcile.Result{}, c.launchFailed(ctx, claim, fmt.Errorf("nodeclaim %s: %w", claim.Name, err))
	}
	launched, err := c.cloud.Launch(ctx, claim, class)
	if cloud.IsInsufficientCapacity(err) {
		// The provider leaves the refused offerings out for a while; a
		// new scheduling round plans the pods on what is left.
		c.recorder.Eventf(claim, nil, corev1.EventTypeWarning, ReasonInsufficientCapacity, "Launch", "%v", err)
		c.opts.Logger.WarnContext(ctx, "no capacity for nodeclaim; deleting it to replan", "nodeclaim", claim.Name, "err", err)
		return reconcile.Result{}, client.IgnoreNotFound(c.client.Delete(ctx, claim))
	}
	if err != nil {
		return reconcile.Result{}, c.launchFailed(ctx, claim, err)
	}
	it, inst := launched.InstanceType, launched.Instance
	labels := map[string]string{
		corev1.LabelInstanceTypeStable: inst.Type,
		corev1.LabelTopologyZone:       inst.Zone,
		v1.LabelCapacityType:           inst.CapacityType,
	}
	for k, v := range it.Labels {
		labels[k] = v
	}
	if region := regionOf(inst.Zone); region != "" {
		labels[corev1.LabelTopologyRegion] = region
	}
	patch := client.MergeFrom(claim.DeepCopy())
	if claim.Labels == nil {
		claim.Labels = map[string]string{}
	}
	maps.Copy(claim.Labels, labels)
	if err := c.client.Patch(ctx, claim, patch); err != nil {
		return reconcile.Result{}, fmt.Errorf("nodeclaim %s: labelling after launching %s: %w", claim.Name, inst.ID, err)
	}
	status := client.MergeFrom(claim.DeepCopy())
	claim.Status.ProviderID = inst.ProviderID()
	claim.Status.ImageID = inst.ImageID
	claim.Status.Capacity = it.Capacity
	claim.Status.Allocatable = it.Allocatable
	claimutil.SetCondition(claim, v1.ConditionLaunched, metav1.ConditionTrue, "Launched", fmt.Sprintf("instance %s (%s, %s, %s)", inst.ID, inst.Type, inst.Zone, inst.CapacityType))
	setReady(claim)
	if err := c.client.Status().Patch(ctx, claim, status); err != nil {
		return reconcile.Result{}, fmt.Errorf("nodeclaim %s: recording instance %s: %w", claim.Name, inst.ID, err)
	}
	c.recorder.Eventf(claim, nil, corev1.EventTypeNormal, ReasonLaunched, "Launch", "Launched %s %s in %s (%s)", inst.ID, inst.Type, inst.Zone, inst.CapacityType)
	c.opts.Logger.InfoContext(ctx, "launched nodeclaim", "nodeclaim", claim.Name, "instance", inst.ID, "instance_type", inst.Type, "zone", inst.Zone, "capacity_type", inst.CapacityType)
	// The registration deadline counts from now.
	return reconcile.Result{RequeueAfter: c.opts.RegistrationTTL}, nil
}

// regionOf strips the zone letter: us-west-2a -> us-west-2.
func regionOf(zone string) string {
	if len(zone) < 2 {
		return ""
	}
	return zone[:len(zone)-1]
}

// launchFailed records a failed launch on the claim and returns err, so
// that the launch is retried with backoff.
func (c *Controller) launchFailed(ctx context.Context, claim *v1.NodeClaim, err error) error {
	patch := client.MergeFrom(claim.DeepCopy())
	if claimutil.SetCondition(claim, v1.ConditionLaunched, metav1.ConditionFalse, ReasonLaunchFailed, err.Error()) {
		setReady(claim)
		if perr := c.client.Status().Patch(ctx, claim, patch); perr != nil {
			c.opts.Logger.WarnContext(ctx, "recording launch failure", "nodeclaim", claim.Name, "err", perr)
		}
		c.recorder.Eventf(claim, nil, corev1.EventTypeWarning, ReasonLaunchFailed, "Launch", "%v", err)
	}
	return err
}

// awaitRegistration deletes a claim whose Node is overdue, or waits for it.
func (c *Controller) awaitRegistration(ctx context.Context, claim *v1.NodeClaim) (reconcile.Result, error) {
	since := claim.CreationTimestamp.Time
	for _, cond := range claim.Status.Conditions {
		if cond.Type == v1.ConditionLaunched {
			since = cond.LastTransitionTime.Time
		}
	}
	left := since.Add(c.opts.RegistrationTTL).Sub(c.opts.Now())
	if left > 0 {
		return reconcile.Result{RequeueAfter: left}, nil
	}
	c.recorder.Eventf(claim, nil, corev1.EventTypeWarning, ReasonRegistrationTimeout, "Register",
		"No node with provider id %s registered within %s; deleting the nodeclaim", claim.Status.ProviderID, c.opts.RegistrationTTL)
	c.opts.Logger.WarnContext(ctx, "nodeclaim did not register; deleting it", "nodeclaim", claim.Name, "provider_id", claim.Status.ProviderID, "ttl", c.opts.RegistrationTTL)
	return reconcile.Result{}, client.IgnoreNotFound(c.client.Delete(ctx, claim))
}

// register ties the Node to the claim: the claim's labels, its taints (and,
// the first time, its startup taints), the label autonode.dev/nodeclaim and
// the termination finalizer go on the Node; the claim records the Node's
// name and Registered.
func (c *Controller) register(ctx context.Context, claim *v1.NodeClaim, node *corev1.Node) error {
	if !claimutil.IsTrue(claim, v1.ConditionRegistered) {
		first := node.Labels[v1.LabelNodeClaim] == ""
		patch := client.MergeFrom(node.DeepCopy())
		if node.Labels == nil {
			node.Labels = map[string]string{}
		}
		maps.Copy(node.Labels, claim.Labels)
		node.Labels[v1.LabelNodeClaim] = claim.Name
		if node.Annotations == nil && len(claim.Annotations) > 0 {
			node.Annotations = map[string]string{}
		}
		for k, v := range claim.Annotations {
			if _, ok := node.Annotations[k]; !ok {
				node.Annotations[k] = v
			}
		}
		node.Spec.Taints = addTaints(node.Spec.Taints, claim.Spec.Taints)
		if first {
			// Later, a missing startup taint means it was removed, not
			// that it was never there.
			node.Spec.Taints = addTaints(node.Spec.Taints, claim.Spec.StartupTaints)
		}
		controllerutil.AddFinalizer(node, claimutil.TerminationFinalizer)
		if err := c.client.Patch(ctx, node, patch); err != nil {
			return fmt.Errorf("nodeclaim %s: registering node %s: %w", claim.Name, node.Name, err)
		}
		status := client.MergeFrom(claim.DeepCopy())
		claim.Status.NodeName = node.Name
		claimutil.SetCondition(claim, v1.ConditionRegistered, metav1.ConditionTrue, "Registered", "node "+node.Name)
		setReady(claim)
		if err := c.client.Status().Patch(ctx, claim, status); err != nil {
			return fmt.Errorf("nodeclaim %s: recording node %s: %w", claim.Name, node.Name, err)
		}
		c.recorder.Eventf(claim, node, corev1.EventTypeNormal, ReasonRegistered, "Register", "Node %s registered", node.Name)
		c.opts.Logger.InfoContext(ctx, "nodeclaim registered", "nodeclaim", claim.Name, "node", node.Name)
	}
	return nil
}

// addTaints adds the taints of add that ts lacks (by key and effect).
func addTaints(ts, add []corev1.Taint) []corev1.Taint {
	for _, t := range add {
		if !slices.ContainsFunc(ts, func(have corev1.Taint) bool { return have.MatchTaint(&t) }) {
			ts = append(ts, t)
		}
	}
	return ts
}

// initialize marks the claim Initialized once its Node can take pods.
func (c *Controller) initialize(ctx context.Context, claim *v1.NodeClaim, node *corev1.Node) error {
	if claimutil.Initialized(claim) {
		return nil
	}
	if why := notInitialized(claim, node); why != "" {
		patch := client.MergeFrom(claim.DeepCopy())
		if claimutil.SetCondition(claim, v1.ConditionInitialized, metav1.ConditionFalse, "NotInitialized", why) {
			setReady(claim)
			if err := c.client.Status().Patch(ctx, claim, patch); err != nil {
				return fmt.Errorf("nodeclaim %s: %w", claim.Name, err)
			}
		}
		return nil // the Node's next change brings the claim back
	}
	patch := client.MergeFrom(claim.DeepCopy())
	claimutil.SetCondition(claim, v1.ConditionInitialized, metav1.ConditionTrue, "Initialized", "node "+node.Name+" is ready")
	setReady(claim)
	if err := c.client.Status().Patch(ctx, claim, patch); err != nil {
		return fmt.Errorf("nodeclaim %s: %w", claim.Name, err)
	}
	c.recorder.Eventf(claim, node, corev1.EventTypeNormal, ReasonInitialized, "Initialize", "Node %s initialized", node.Name)
	c.opts.Logger.InfoContext(ctx, "nodeclaim initialized", "nodeclaim", claim.Name, "node", node.Name)
	return nil
}

// notInitialized says why a registered Node cannot take pods yet, or "".
func notInitialized(claim *v1.NodeClaim, node *corev1.Node) string {
	ready := false
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			ready = cond.Status == corev1.ConditionTrue
		}
	}
	if !ready {
		return "node " + node.Name + " is not Ready"
	}
	for _, st := range claim.Spec.StartupTaints {
		if slices.ContainsFunc(node.Spec.Taints, func(t corev1.Taint) bool { return t.MatchTaint(&st) }) {
			return fmt.Sprintf("node %s still has startup taint %s:%s", node.Name, st.Key, st.Effect)
		}
	}
	// Ready comes before the node lifecycle controller lifts not-ready;
	// Initialized before that would let a scheduling round see an
	// initialized Node that turns its nominated pods away.
	if i := slices.IndexFunc(node.Spec.Taints, claimutil.IsEphemeralTaint); i >= 0 {
		t := node.Spec.Taints[i]
		return fmt.Sprintf("node %s still has taint %s:%s", node.Name, t.Key, t.Effect)
	}
	for name, q := range claim.Spec.Resources.Requests {
		if name == corev1.ResourceCPU || name == corev1.ResourceMemory || name == corev1.ResourcePods ||
			name == corev1.ResourceEphemeralStorage || q.IsZero() {
			continue
		}
		if have, ok := node.Status.Allocatable[name]; !ok || have.IsZero() {
			return fmt.Sprintf("node %s does not offer %s yet", node.Name, name)
		}
	}
	return ""
}

// setReady keeps the Ready condition the conjunction of the three
// lifecycle conditions.
func setReady(claim *v1.NodeClaim) {
	for _, t := range []string{v1.ConditionLaunched, v1.ConditionRegistered, v1.ConditionInitialized} {
		if !claimutil.IsTrue(claim, t) {
			claimutil.SetCondition(claim, v1.ConditionReady, metav1.ConditionFalse, "Not"+t, t+" is not yet True")
			return
		}
	}
	claimutil.SetCondition(claim, v1.ConditionReady, metav1.ConditionTrue, "Ready", "launched, registered and initialized")
}
