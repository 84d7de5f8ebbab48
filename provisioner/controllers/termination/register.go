package termination

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
)

// Register adds the NodeClaim termination controller and the Node
// controller to the manager. Pods leaving a node bring its claim back, so
// a drain moves on as soon as evictions complete.
func (c *Controller) Register(mgr manager.Manager) error {
	err := builder.ControllerManagedBy(mgr).
		Named("nodeclaim-termination").
		For(&v1.NodeClaim{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return c.claimsOnNode(ctx, o.(*corev1.Pod).Spec.NodeName)
		})).
		Complete(reconcile.AsReconciler(mgr.GetClient(), c))
	if err != nil {
		return err
	}
	return builder.ControllerManagedBy(mgr).
		Named("node-termination").
		For(&corev1.Node{}).
		Complete(reconcile.AsReconciler(mgr.GetClient(), NewNodeController(mgr.GetClient())))
}

// claimsOnNode maps a pod's node to the deleted claim it belongs to.
func (c *Controller) claimsOnNode(ctx context.Context, nodeName string) []reconcile.Request {
	if nodeName == "" {
		return nil
	}
	var claims v1.NodeClaimList
	if err := c.client.List(ctx, &claims); err != nil {
		return nil
	}
	for _, cl := range claims.Items {
		if cl.Status.NodeName == nodeName && cl.DeletionTimestamp != nil {
			return []reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(&cl)}}
		}
	}
	return nil
}
