package disruption

import (
	"math"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// Names the disruption logic shares with the provisioning controllers.
const (
	// AnnotationDoNotDisrupt on a pod, Node or NodeClaim ("true") keeps
	// graceful disruption away from the node. Forceful disruption (Expired,
	// Unhealthy) still waits for such pods until terminationGracePeriod.
	AnnotationDoNotDisrupt = "autonode.dev/do-not-disrupt"
	// AnnotationNodePoolHash is set on each NodeClaim at launch to the
	// pool's TemplateHash; a NodeClaim whose value differs from the pool's
	// current hash (under the same AnnotationNodePoolHashVersion) is drifted.
	AnnotationNodePoolHash = "autonode.dev/nodepool-hash"
	// AnnotationNodePoolHashVersion is the version of the hash function
	// (HashVersion); hashes of another version are not compared, so a
	// change of the function does not drift every node at once.
	AnnotationNodePoolHashVersion = "autonode.dev/nodepool-hash-version"
	// TaintDisrupted (NoSchedule) marks the candidates of a command in
	// progress, and every node the termination controller drains, so that
	// neither kube-scheduler nor the provisioner places anything new on
	// them. It is the one definition of the taint.
	TaintDisrupted = "autonode.dev/disrupted"
	// annotationPodDeletionCost is the ReplicaSet controller's
	// pod-deletion-cost, which also weighs disruption cost.
	annotationPodDeletionCost = "controller.kubernetes.io/pod-deletion-cost"
)

// DisruptedTaint is the taint put on candidates.
func DisruptedTaint() corev1.Taint {
	return corev1.Taint{Key: TaintDisrupted, Effect: corev1.TaintEffectNoSchedule}
}

// PodCost is the disruption cost of evicting p: 1, plus its
// pod-deletion-cost annotation scaled by 2^-27 and its priority scaled by
// 2^-25 (so both span about ±16 for their full int32 range), clamped to
// [0.1, 10] as Karpenter clamps its eviction cost, so that every pod costs
// something and none dominates.
func PodCost(p *corev1.Pod) float64 {
	cost := 1.0
	if v, ok := p.Annotations[annotationPodDeletionCost]; ok {
		if d, err := strconv.ParseInt(v, 10, 32); err == nil {
			cost += float64(d) / math.Exp2(27)
		}
	}
	if p.Spec.Priority != nil {
		cost += float64(*p.Spec.Priority) / math.Exp2(25)
	}
	return min(max(cost, 0.1), 10)
}
