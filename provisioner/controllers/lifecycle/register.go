package lifecycle

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/controllers/claimutil"
)

// Register adds the controller to the manager: it follows NodeClaims, and
// Nodes map to the claim with their providerID.
func (c *Controller) Register(mgr manager.Manager) error {
	return builder.ControllerManagedBy(mgr).
		Named("nodeclaim-lifecycle").
		For(&v1.NodeClaim{}).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return ClaimsOf(ctx, mgr.GetClient(), o.(*corev1.Node))
		})).
		Complete(reconcile.AsReconciler(mgr.GetClient(), c))
}

// ClaimsOf maps a Node to the request of the NodeClaim with its providerID.
func ClaimsOf(ctx context.Context, r client.Reader, node *corev1.Node) []reconcile.Request {
	if node.Spec.ProviderID == "" {
		return nil
	}
	var claims v1.NodeClaimList
	if err := r.List(ctx, &claims, client.MatchingFields{claimutil.IndexClaimProviderID: node.Spec.ProviderID}); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(claims.Items))
	for _, c := range claims.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&c)})
	}
	return out
}
