package disruption

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Toleration is how long a Node condition may be in one of Statuses before
// the node is repaired.
type Toleration struct {
	Condition corev1.NodeConditionType
	Statuses  []corev1.ConditionStatus
	After     time.Duration
}

// RepairPolicy says when an unhealthy node is replaced.
type RepairPolicy struct {
	Tolerations []Toleration
	// MaxUnhealthyShare stops repair in a pool while more than this share
	// of its nodes is unhealthy (in any tolerated status, for any time), so
	// that a wide outage does not turn into a mass replacement.
	MaxUnhealthyShare float64
}

// DefaultRepairPolicy: the five health conditions False for 30 minutes
// (AcceleratedHardwareReady for 10), Ready False or Unknown for 30 minutes,
// and no repair while more than 20% of a pool is unhealthy.
func DefaultRepairPolicy() RepairPolicy {
	f := []corev1.ConditionStatus{corev1.ConditionFalse}
	return RepairPolicy{
		Tolerations: []Toleration{
			{"Ready", []corev1.ConditionStatus{corev1.ConditionFalse, corev1.ConditionUnknown}, 30 * time.Minute},
			{"KernelReady", f, 30 * time.Minute},
			{"NetworkingReady", f, 30 * time.Minute},
			{"StorageReady", f, 30 * time.Minute},
			{"ContainerRuntimeReady", f, 30 * time.Minute},
			{"AcceleratedHardwareReady", f, 10 * time.Minute},
		},
		MaxUnhealthyShare: 0.2,
	}
}

// unhealthy reports whether a tolerated condition of n is in a bad status
// now (bad), and whether one has been for longer than its toleration
// (repair), naming it.
func (p RepairPolicy) unhealthy(n *Node, now time.Time) (bad, repair bool, why string) {
	for _, c := range n.Conditions {
		for _, t := range p.Tolerations {
			if t.Condition != c.Type || !containsStatus(t.Statuses, c.Status) {
				continue
			}
			bad = true
			if d := now.Sub(c.Since); d >= t.After && !repair {
				repair = true
				why = fmt.Sprintf("condition %s is %s for %s (toleration %s)", c.Type, c.Status, d.Round(time.Second), t.After)
			}
		}
	}
	return bad, repair, why
}

func containsStatus(ss []corev1.ConditionStatus, s corev1.ConditionStatus) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Expired reports whether n has lived past its expireAfter at now.
func Expired(n *Node, now time.Time) bool {
	return n.ExpireAfter != nil && !now.Before(n.Created.Add(*n.ExpireAfter))
}

// DrainDeadline is when draining a node for cmd stops waiting for
// PodDisruptionBudgets and do-not-disrupt pods: start plus the node's
// terminationGracePeriod for forceful reasons. Graceful commands, and nodes
// without a terminationGracePeriod, wait as long as it takes (ok false).
func DrainDeadline(cmd *Command, n *Node, start time.Time) (deadline time.Time, ok bool) {
	if !cmd.Forceful() || n.TerminationGracePeriod == nil {
		return time.Time{}, false
	}
	return start.Add(*n.TerminationGracePeriod), true
}
