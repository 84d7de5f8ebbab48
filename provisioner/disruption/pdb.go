package disruption

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// NewPDB resolves a PodDisruptionBudget against the pods of its namespace.
// Allowed is the status's disruptionsAllowed when the status is current
// (observedGeneration equals generation); otherwise it is computed from the
// spec as the disruption controller does, with the number of matching pods
// as the expected count (the controller uses the owners' scale).
func NewPDB(pdb *policyv1.PodDisruptionBudget, pods []*corev1.Pod) (*PDB, error) {
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("poddisruptionbudget %s/%s: selector: %w", pdb.Namespace, pdb.Name, err)
	}
	out := &PDB{Namespace: pdb.Namespace, Name: pdb.Name, Selector: sel}
	if pdb.Status.ObservedGeneration != 0 && pdb.Status.ObservedGeneration == pdb.Generation {
		out.Allowed = int(pdb.Status.DisruptionsAllowed)
		return out, nil
	}
	var expected, healthy int
	for _, p := range pods {
		if !out.Covers(p) || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		expected++
		if podReady(p) {
			healthy++
		}
	}
	allowed, err := allowedDisruptions(pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable, expected, healthy)
	if err != nil {
		return nil, fmt.Errorf("poddisruptionbudget %s/%s: %w", pdb.Namespace, pdb.Name, err)
	}
	out.Allowed = allowed
	return out, nil
}

// allowedDisruptions is healthy - desiredHealthy, at least 0. Percentages
// round up, as the disruption controller's do: minAvailable 50% of 3 is 2,
// and maxUnavailable 50% of 3 is 2 unavailable.
func allowedDisruptions(minAvailable, maxUnavailable *intstr.IntOrString, expected, healthy int) (int, error) {
	desired := expected // neither set: nothing may go (the API refuses that shape anyway)
	switch {
	case maxUnavailable != nil:
		v, err := intstr.GetScaledValueFromIntOrPercent(maxUnavailable, expected, true)
		if err != nil {
			return 0, fmt.Errorf("maxUnavailable: %w", err)
		}
		desired = max(expected-v, 0)
	case minAvailable != nil:
		v, err := intstr.GetScaledValueFromIntOrPercent(minAvailable, expected, true)
		if err != nil {
			return 0, fmt.Errorf("minAvailable: %w", err)
		}
		desired = v
	}
	return max(healthy-desired, 0), nil
}

func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// pdbsAllow reports whether evicting pods keeps every PDB within its
// disruptionsAllowed, and names the first PDB that blocks. A pod under two
// PDBs blocks too: the Eviction API refuses it.
func pdbsAllow(pdbs []*PDB, pods []*Pod) (bool, string) {
	if len(pdbs) == 0 {
		return true, ""
	}
	used := make(map[*PDB]int)
	for _, p := range pods {
		if p.DaemonSet {
			continue
		}
		var first *PDB
		for _, b := range pdbs {
			if !b.Covers(p.Pod) {
				continue
			}
			if first != nil {
				return false, fmt.Sprintf("pod %s/%s is under two PodDisruptionBudgets (%s, %s)", p.Pod.Namespace, p.Pod.Name, first.Name, b.Name)
			}
			first = b
			used[b]++
			if used[b] > b.Allowed {
				return false, fmt.Sprintf("poddisruptionbudget %s/%s allows %d disruptions", b.Namespace, b.Name, b.Allowed)
			}
		}
	}
	return true, ""
}
