package provisioning

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
)

// Register adds the Provisioner's scheduling loop to the manager and a
// controller that triggers it: on pods that turn pending, on NodeClaims
// that go away (their pods need another place) and on NodePool changes
// (limits raised, requirements widened).
func (p *Provisioner) Register(mgr manager.Manager) error {
	if err := mgr.Add(p); err != nil {
		return err
	}
	trigger := handler.Funcs{
		DeleteFunc: func(context.Context, event.DeleteEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			p.Trigger()
		},
	}
	poolChanged := handler.Funcs{
		CreateFunc: func(context.Context, event.CreateEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			p.Trigger()
		},
		UpdateFunc: func(context.Context, event.UpdateEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			p.Trigger()
		},
	}
	return builder.ControllerManagedBy(mgr).
		Named("provisioning").
		For(&corev1.Pod{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return IsPending(o.(*corev1.Pod))
		}))).
		Watches(&v1.NodeClaim{}, trigger).
		Watches(&v1.NodePool{}, poolChanged, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
			p.Trigger()
			return reconcile.Result{}, nil
		}))
}
