// Package termination takes a deleted NodeClaim, and the Node registered
// for it, away in order: it cordons the Node (unschedulable, and tainted
// autonode.dev/disrupted:NoSchedule), evicts its pods through the Eviction
// API so that PodDisruptionBudgets hold, waits for its VolumeAttachments to
// go (up to a limit), terminates the instance, waits until EC2 reports it
// gone, deletes the Node and finally drops the finalizers. Deleting the Node
// instead deletes its NodeClaim, which then does the same.
//
// The claim's terminationGracePeriod bounds the drain: once it has passed
// since the claim's deletion, the remaining pods are deleted whatever their
// budgets say, except when the disruption controller took the node for a
// graceful reason (see DrainDeadline). Without one, a drain waits as long
// as budgets block it.
package termination

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/cloud"
	"github.com/autonode/autonode/provisioner/controllers/claimutil"
	"github.com/autonode/autonode/provisioner/disruption"
)

// CloudProvider is what termination needs from the cloud; *cloud.Provider
// satisfies it. Both methods return cloud.ErrInstanceNotFound once the
// instance is gone.
type CloudProvider interface {
	Get(ctx context.Context, id string) (*cloud.Instance, error)
	Terminate(ctx context.Context, id string) error
}

// Event reasons on NodeClaims and Nodes.
const (
	ReasonDraining            = "Draining"
	ReasonEvictionBlocked     = "EvictionBlocked"
	ReasonDrainForced         = "DrainGracePeriodExpired"
	ReasonVolumesNotDetached  = "VolumesNotDetached"
	ReasonInstanceTerminating = "InstanceTerminating"
	ReasonTerminated          = "Terminated"
)

// Options configures a Controller.
type Options struct {
	// VolumeDetachTimeout is how long, after the drain, termination waits
	// for the Node's VolumeAttachments before it terminates the instance
	// anyway. Default 5m.
	VolumeDetachTimeout time.Duration
	// PollInterval is how often a drain or a terminating instance is
	// looked at again. Default 2s.
	PollInterval time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger. Default discards.
	Logger *slog.Logger
}

// Controller is the NodeClaim and Node termination finalizer.
type Controller struct {
	client   client.Client
	cloud    CloudProvider
	drainer  *Drainer
	recorder events.EventRecorder
	opts     Options
}

// New returns a Controller that reads through c (a cached client with
// claimutil's indexes).
func New(c client.Client, cp CloudProvider, recorder events.EventRecorder, opts Options) *Controller {
	opts.VolumeDetachTimeout = cmp.Or(opts.VolumeDetachTimeout, 5*time.Minute)
	opts.PollInterval = cmp.Or(opts.PollInterval, 2*time.Second)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Controller{
		client: c, cloud: cp, recorder: recorder, opts: opts,
		drainer: &Drainer{Client: c, Now: opts.Now},
	}
}

// Reconcile terminates a deleted claim, one step at a time.
func (c *Controller) Reconcile(ctx context.Context, claim *v1.NodeClaim) (reconcile.Result, error) {
	if claim.DeletionTimestamp == nil || !controllerutil.ContainsFinalizer(claim, claimutil.TerminationFinalizer) {
		return reconcile.Result{}, nil
	}
	log := c.opts.Logger.With("nodeclaim", claim.Name)
	node, err := claimutil.NodeFor(ctx, c.client, claim)
	if err != nil {
		return reconcile.Result{}, err
	}
	if node != nil {
		if err := Cordon(ctx, c.client, node); err != nil {
			return reconcile.Result{}, err
		}
		if !claimutil.IsTrue(claim, claimutil.ConditionDrained) {
			done, err := c.drain(ctx, claim, node)
			if err != nil || !done {
				return reconcile.Result{RequeueAfter: c.opts.PollInterval}, err
			}
		}
		if !claimutil.IsTrue(claim, claimutil.ConditionVolumesDetached) {
			done, err := c.awaitVolumes(ctx, claim, node)
			if err != nil || !done {
				return reconcile.Result{RequeueAfter: c.opts.PollInterval}, err
			}
		}
	}
	if id := instanceID(claim); id != "" {
		gone, err := c.terminate(ctx, claim, id)
		if err != nil || !gone {
			return reconcile.Result{RequeueAfter: c.opts.PollInterval}, err
		}
	}
	if node != nil {
		if err := removeNode(ctx, c.client, node); err != nil {
			return reconcile.Result{}, err
		}
	}
	patch := client.MergeFrom(claim.DeepCopy())
	controllerutil.RemoveFinalizer(claim, claimutil.TerminationFinalizer)
	if err := c.client.Patch(ctx, claim, patch); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(fmt.Errorf("nodeclaim %s: removing finalizer: %w", claim.Name, err))
	}
	log.InfoContext(ctx, "nodeclaim terminated")
	return reconcile.Result{}, nil
}

// instanceID is the id in the claim's providerID, or "" when it never
// launched (or the id does not parse: there is nothing to terminate).
func instanceID(claim *v1.NodeClaim) string {
	if claim.Status.ProviderID == "" {
		return ""
	}
	_, id, err := cloud.ParseProviderID(claim.Status.ProviderID)
	if err != nil {
		return ""
	}
	return id
}

// Cordon marks a Node unschedulable and taints it disrupted, so neither
// kube-scheduler nor the provisioner places anything new on it. The
// disruption controller calls it on its candidates before launching their
// replacements.
func Cordon(ctx context.Context, c client.Client, node *corev1.Node) error {
	taint := disruption.DisruptedTaint()
	hasTaint := false
	for _, t := range node.Spec.Taints {
		if t.MatchTaint(&taint) {
			hasTaint = true
		}
	}
	if node.Spec.Unschedulable && hasTaint {
		return nil
	}
	patch := client.MergeFrom(node.DeepCopy())
	node.Spec.Unschedulable = true
	if !hasTaint {
		node.Spec.Taints = append(node.Spec.Taints, taint)
	}
	if err := c.Patch(ctx, node, patch); err != nil {
		return fmt.Errorf("cordoning node %s: %w", node.Name, err)
	}
	return nil
}

// drain evicts the Node's pods and reports whether none is left that must
// go. Past the claim's terminationGracePeriod the rest are deleted.
func (c *Controller) drain(ctx context.Context, claim *v1.NodeClaim, node *corev1.Node) (bool, error) {
	deadline := DrainDeadline(claim)
	res, err := c.drainer.Drain(ctx, node.Name, deadline)
	if err != nil {
		return false, fmt.Errorf("nodeclaim %s: %w", claim.Name, err)
	}
	if len(res.Blocked) > 0 {
		c.recorder.Eventf(claim, node, corev1.EventTypeWarning, ReasonEvictionBlocked, "Drain",
			"Evicting %d pods blocked by PodDisruptionBudgets: %s", len(res.Blocked), truncate(res.BlockedMessage(), 800))
	}
	if res.Forced > 0 {
		c.recorder.Eventf(claim, node, corev1.EventTypeWarning, ReasonDrainForced, "Drain",
			"terminationGracePeriod %s passed; deleted %d pods regardless of budgets", claim.Spec.TerminationGracePeriod.Duration, res.Forced)
	}
	if res.Remaining > 0 {
		return false, nil
	}
	patch := client.MergeFrom(claim.DeepCopy())
	claimutil.SetCondition(claim, claimutil.ConditionDrained, metav1.ConditionTrue, "Drained", "node "+node.Name+" has no pods left to evict")
	if err := c.client.Status().Patch(ctx, claim, patch); err != nil {
		return false, fmt.Errorf("nodeclaim %s: %w", claim.Name, err)
	}
	return true, nil
}

// DrainDeadline is when a deleted claim's drain stops waiting for
// PodDisruptionBudgets and deletes the pods left, or zero for never: its
// deletion plus its terminationGracePeriod, unless the disruption
// controller deleted it for a graceful reason (its Disrupting condition is
// True with Empty, Underutilized or Drifted), since graceful disruption
// never breaks a PodDisruptionBudget. Forceful reasons (Expired, Unhealthy)
// and deletions from elsewhere (a user, the registration timeout, garbage
// collection) get the deadline, as every deletion does in Karpenter.
func DrainDeadline(claim *v1.NodeClaim) time.Time {
	tgp := claim.Spec.TerminationGracePeriod
	if tgp == nil || claim.DeletionTimestamp == nil {
		return time.Time{}
	}
	if c := meta.FindStatusCondition(claim.Status.Conditions, v1.ConditionDisrupting); c != nil &&
		c.Status == metav1.ConditionTrue && disruption.Graceful(v1.DisruptionReason(c.Reason)) {
		return time.Time{}
	}
	return claim.DeletionTimestamp.Add(tgp.Duration)
}

// awaitVolumes waits for the Node's VolumeAttachments to go, for at most
// VolumeDetachTimeout after the drain.
func (c *Controller) awaitVolumes(ctx context.Context, claim *v1.NodeClaim, node *corev1.Node) (bool, error) {
	var vas storagev1.VolumeAttachmentList
	if err := c.client.List(ctx, &vas); err != nil {
		return false, fmt.Errorf("node %s: listing volumeattachments: %w", node.Name, err)
	}
	attached := 0
	for _, va := range vas.Items {
		if va.Spec.NodeName == node.Name {
			attached++
		}
	}
	reason, message := "VolumesDetached", "no volume is attached to node "+node.Name
	if attached > 0 {
		drained := meta.FindStatusCondition(claim.Status.Conditions, claimutil.ConditionDrained)
		if drained != nil && c.opts.Now().Before(drained.LastTransitionTime.Add(c.opts.VolumeDetachTimeout)) {
			return false, nil
		}
		reason, message = "DetachTimeout", fmt.Sprintf("%d volumes still attached to node %s after %s", attached, node.Name, c.opts.VolumeDetachTimeout)
		c.recorder.Eventf(claim, node, corev1.EventTypeWarning, ReasonVolumesNotDetached, "Terminate", "%s; terminating anyway", message)
	}
	patch := client.MergeFrom(claim.DeepCopy())
	claimutil.SetCondition(claim, claimutil.ConditionVolumesDetached, metav1.ConditionTrue, reason, message)
	if err := c.client.Status().Patch(ctx, claim, patch); err != nil {
		return false, fmt.Errorf("nodeclaim %s: %w", claim.Name, err)
	}
	return true, nil
}

// terminate asks EC2 to terminate the instance and reports whether it is
// gone.
func (c *Controller) terminate(ctx context.Context, claim *v1.NodeClaim, id string) (bool, error) {
	if !claimutil.IsTrue(claim, v1.ConditionInstanceTerminating) {
		err := c.cloud.Terminate(ctx, id)
		if errors.Is(err, cloud.ErrInstanceNotFound) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("nodeclaim %s: %w", claim.Name, err)
		}
		patch := client.MergeFrom(claim.DeepCopy())
		claimutil.SetCondition(claim, v1.ConditionInstanceTerminating, metav1.ConditionTrue, "Terminating", "instance "+id)
		if err := c.client.Status().Patch(ctx, claim, patch); err != nil {
			return false, fmt.Errorf("nodeclaim %s: %w", claim.Name, err)
		}
		c.recorder.Eventf(claim, nil, corev1.EventTypeNormal, ReasonInstanceTerminating, "Terminate", "Terminating instance %s", id)
	}
	_, err := c.cloud.Get(ctx, id)
	if errors.Is(err, cloud.ErrInstanceNotFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("nodeclaim %s: %w", claim.Name, err)
	}
	return false, nil
}

// removeNode drops the termination finalizer from the Node and deletes it.
func removeNode(ctx context.Context, c client.Client, node *corev1.Node) error {
	if controllerutil.ContainsFinalizer(node, claimutil.TerminationFinalizer) {
		patch := client.MergeFrom(node.DeepCopy())
		controllerutil.RemoveFinalizer(node, claimutil.TerminationFinalizer)
		if err := c.Patch(ctx, node, patch); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("node %s: removing finalizer: %w", node.Name, err)
		}
	}
	if node.DeletionTimestamp == nil {
		if err := c.Delete(ctx, node); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting node %s: %w", node.Name, err)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
