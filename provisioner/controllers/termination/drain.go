package termination

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/autonode/autonode/provisioner/controllers/claimutil"
	"github.com/autonode/autonode/provisioner/disruption"
)

// Drainer evicts the pods of a Node through the Eviction API. It is
// stateless: each Drain looks at the pods as they are, so a caller simply
// calls it again until nothing remains.
type Drainer struct {
	// Client reads pods (with claimutil's pod index) and creates
	// evictions.
	Client client.Client
	// Now is the clock.
	Now func() time.Time
}

// DrainResult is what one Drain pass saw and did.
type DrainResult struct {
	// Remaining pods must still go (evicted and terminating, or blocked).
	Remaining int
	// Blocked are pods whose eviction a PodDisruptionBudget refused (429),
	// with the apiserver's message.
	Blocked map[string]string
	// Forced is how many pods were deleted because the deadline passed.
	Forced int
}

// BlockedMessage lists the blocked pods and why, for an Event.
func (r DrainResult) BlockedMessage() string {
	parts := make([]string, 0, len(r.Blocked))
	for pod, why := range r.Blocked {
		parts = append(parts, pod+": "+why)
	}
	return strings.Join(parts, "; ")
}

// MustEvict reports whether a drain has to move a pod: not finished, not a
// DaemonSet's or mirror pod (they belong to the node), and not tolerating
// the disrupted taint (such pods chose to stay until the end).
func MustEvict(p *corev1.Pod) bool {
	if claimutil.IsTerminal(p) || claimutil.IsDaemonSetPod(p) {
		return false
	}
	if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return false
	}
	taint := disruption.DisruptedTaint()
	for _, t := range p.Spec.Tolerations {
		if t.ToleratesTaint(klog.Background(), &taint, false) {
			return false
		}
	}
	return true
}

// Drain evicts every pod on the node that must go. Pods already being
// deleted are waited for. Once deadline (if not zero) has passed, the pods
// left are deleted instead, whatever their budgets, and no longer waited
// for: the instance is about to go.
func (d *Drainer) Drain(ctx context.Context, node string, deadline time.Time) (DrainResult, error) {
	pods, err := claimutil.PodsOn(ctx, d.Client, node)
	if err != nil {
		return DrainResult{}, err
	}
	forced := !deadline.IsZero() && !d.Now().Before(deadline)
	res := DrainResult{Blocked: map[string]string{}}
	for _, p := range pods {
		if !MustEvict(p) {
			continue
		}
		name := p.Namespace + "/" + p.Name
		if forced {
			if p.DeletionTimestamp == nil {
				if err := d.Client.Delete(ctx, p); client.IgnoreNotFound(err) != nil {
					return res, fmt.Errorf("deleting pod %s: %w", name, err)
				}
				res.Forced++
			}
			continue
		}
		res.Remaining++
		if p.DeletionTimestamp != nil {
			continue // evicted; its kubelet is stopping it
		}
		err := d.Client.SubResource("eviction").Create(ctx, p, &policyv1.Eviction{
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
		})
		switch {
		case err == nil, apierrors.IsNotFound(err):
		case apierrors.IsTooManyRequests(err):
			res.Blocked[name] = err.Error()
		default:
			return res, fmt.Errorf("evicting pod %s: %w", name, err)
		}
	}
	return res, nil
}
