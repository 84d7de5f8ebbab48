// Package claimutil holds what the provisioner's controllers share about
// NodeClaims and their Nodes: the finalizer, the cache indexes that find a
// claim's Node and pods, and the lifecycle conditions. The disruption
// controller uses the same helpers to wait for replacements (Initialized);
// the taint that marks nodes being taken away is disruption.TaintDisrupted.
package claimutil

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
)

// TerminationFinalizer is on every NodeClaim and on the Node registered for
// it: deleting either drains the node, terminates the instance and removes
// the Node before the objects go.
const TerminationFinalizer = "autonode.dev/termination"

// Conditions the termination controller adds beside those of
// provisioner/apis/v1, as Karpenter's NodeClaims have them.
const (
	// ConditionDrained: every pod that must go has gone (or the
	// terminationGracePeriod ran out). Its lastTransitionTime starts the
	// wait for volumes to detach.
	ConditionDrained = "Drained"
	// ConditionVolumesDetached: the Node's VolumeAttachments are gone, or
	// the wait for them ran out.
	ConditionVolumesDetached = "VolumesDetached"
)

// Field indexes the controllers read through the manager's cache.
const (
	// IndexPodNodeName indexes pods by spec.nodeName.
	IndexPodNodeName = "spec.nodeName"
	// IndexNodeProviderID indexes Nodes by spec.providerID.
	IndexNodeProviderID = "spec.providerID"
	// IndexClaimProviderID indexes NodeClaims by status.providerID.
	IndexClaimProviderID = "status.providerID"
)

// SetupIndexes registers the field indexes with a manager's indexer; it
// must run before the manager starts.
func SetupIndexes(ctx context.Context, idx client.FieldIndexer) error {
	if err := idx.IndexField(ctx, &corev1.Pod{}, IndexPodNodeName, func(o client.Object) []string {
		if n := o.(*corev1.Pod).Spec.NodeName; n != "" {
			return []string{n}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing pods by node name: %w", err)
	}
	if err := idx.IndexField(ctx, &corev1.Node{}, IndexNodeProviderID, func(o client.Object) []string {
		if id := o.(*corev1.Node).Spec.ProviderID; id != "" {
			return []string{id}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing nodes by provider id: %w", err)
	}
	if err := idx.IndexField(ctx, &v1.NodeClaim{}, IndexClaimProviderID, func(o client.Object) []string {
		if id := o.(*v1.NodeClaim).Status.ProviderID; id != "" {
			return []string{id}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing nodeclaims by provider id: %w", err)
	}
	return nil
}

// NodeFor returns the Node registered for a claim (by status.providerID),
// or nil when there is none yet.
func NodeFor(ctx context.Context, r client.Reader, claim *v1.NodeClaim) (*corev1.Node, error) {
	if claim.Status.ProviderID == "" {
		return nil, nil
	}
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes, client.MatchingFields{IndexNodeProviderID: claim.Status.ProviderID}); err != nil {
		return nil, fmt.Errorf("nodeclaim %s: listing nodes: %w", claim.Name, err)
	}
	switch len(nodes.Items) {
	case 0:
		return nil, nil
	case 1:
		return &nodes.Items[0], nil
	}
	return nil, fmt.Errorf("nodeclaim %s: %d nodes have provider id %s", claim.Name, len(nodes.Items), claim.Status.ProviderID)
}

// PodsOn lists the pods bound to a node.
func PodsOn(ctx context.Context, r client.Reader, node string) ([]*corev1.Pod, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.MatchingFields{IndexPodNodeName: node}); err != nil {
		return nil, fmt.Errorf("node %s: listing pods: %w", node, err)
	}
	out := make([]*corev1.Pod, 0, len(pods.Items))
	for i := range pods.Items {
		out = append(out, &pods.Items[i])
	}
	return out, nil
}

// IsTrue reports whether a claim's condition is True.
func IsTrue(claim *v1.NodeClaim, condition string) bool {
	return meta.IsStatusConditionTrue(claim.Status.Conditions, condition)
}

// Initialized reports whether a claim's Node has joined, is Ready and has
// shed its startup and ephemeral taints: the point at which a replacement
// can take pods.
func Initialized(claim *v1.NodeClaim) bool { return IsTrue(claim, v1.ConditionInitialized) }

// TaintCloudProviderUninitialized is the taint a kubelet with an external
// cloud provider registers with, until the cloud controller clears it.
const TaintCloudProviderUninitialized = "node.cloudprovider.kubernetes.io/uninitialized"

// IsEphemeralTaint reports whether a taint is one Kubernetes itself puts on
// a joining Node and takes off once it is Ready, as Karpenter's
// KnownEphemeralTaints: the TaintNodesByCondition admission plugin adds
// node.kubernetes.io/not-ready:NoSchedule to every new Node, and the node
// lifecycle controller removes it only some time after the Node turns
// Ready. A Node still carrying one cannot take pods yet.
func IsEphemeralTaint(t corev1.Taint) bool {
	switch t.Key {
	case corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable, TaintCloudProviderUninitialized:
		return t.Effect == corev1.TaintEffectNoSchedule
	}
	return false
}

// SetCondition sets a condition on the claim (in memory) and reports
// whether anything changed; lastTransitionTime moves only when the status
// does.
func SetCondition(claim *v1.NodeClaim, condition string, status metav1.ConditionStatus, reason, message string) bool {
	return meta.SetStatusCondition(&claim.Status.Conditions, metav1.Condition{
		Type: condition, Status: status, Reason: reason, Message: message, ObservedGeneration: claim.Generation,
	})
}

// IsDaemonSetPod reports whether a DaemonSet controls the pod.
func IsDaemonSetPod(p *corev1.Pod) bool {
	c := metav1.GetControllerOf(p)
	return c != nil && c.Kind == "DaemonSet"
}

// IsTerminal reports whether a pod has finished and holds nothing.
func IsTerminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}
