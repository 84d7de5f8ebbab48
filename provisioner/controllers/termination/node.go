package termination

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/controllers/claimutil"
)

// NodeController handles a deleted Node that carries the termination
// finalizer: it deletes the Node's NodeClaim, whose termination drains the
// Node and removes it. A Node whose claim is already gone only loses the
// finalizer.
type NodeController struct {
	client client.Client
}

// NewNodeController returns a NodeController reading through c.
func NewNodeController(c client.Client) *NodeController { return &NodeController{client: c} }

// Reconcile deletes the claim of a deleted Node.
func (n *NodeController) Reconcile(ctx context.Context, node *corev1.Node) (reconcile.Result, error) {
	if node.DeletionTimestamp == nil || !controllerutil.ContainsFinalizer(node, claimutil.TerminationFinalizer) {
		return reconcile.Result{}, nil
	}
	var claims v1.NodeClaimList
	if node.Spec.ProviderID != "" {
		if err := n.client.List(ctx, &claims, client.MatchingFields{claimutil.IndexClaimProviderID: node.Spec.ProviderID}); err != nil {
			return reconcile.Result{}, fmt.Errorf("node %s: listing nodeclaims: %w", node.Name, err)
		}
	}
	if len(claims.Items) == 0 {
		patch := client.MergeFrom(node.DeepCopy())
		controllerutil.RemoveFinalizer(node, claimutil.TerminationFinalizer)
		return reconcile.Result{}, client.IgnoreNotFound(n.client.Patch(ctx, node, patch))
	}
	for i := range claims.Items {
		c := &claims.Items[i]
		if c.DeletionTimestamp == nil {
			if err := n.client.Delete(ctx, c); client.IgnoreNotFound(err) != nil {
				return reconcile.Result{}, fmt.Errorf("node %s: deleting nodeclaim %s: %w", node.Name, c.Name, err)
			}
		}
	}
	return reconcile.Result{}, nil
}
