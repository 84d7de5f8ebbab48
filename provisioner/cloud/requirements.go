package cloud

import (
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
)

// matches reports whether a label (value, present) satisfies a requirement.
func matches(r v1.NodeSelectorRequirementWithMinValues, value string, present bool) bool {
	switch r.Operator {
	case corev1.NodeSelectorOpIn:
		return present && slices.Contains(r.Values, value)
	case corev1.NodeSelectorOpNotIn:
		return !present || !slices.Contains(r.Values, value)
	case corev1.NodeSelectorOpExists:
		return present
	case corev1.NodeSelectorOpDoesNotExist:
		return !present
	case corev1.NodeSelectorOpGt, corev1.NodeSelectorOpLt:
		if !present || len(r.Values) != 1 {
			return false
		}
		have, err1 := strconv.ParseInt(value, 10, 64)
		want, err2 := strconv.ParseInt(r.Values[0], 10, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		if r.Operator == corev1.NodeSelectorOpGt {
			return have > want
		}
		return have < want
	}
	return false
}

// allowed returns the values of key that reqs allow among candidates, in
// candidates' order.
func allowed(reqs []v1.NodeSelectorRequirementWithMinValues, key string, candidates []string) []string {
	var out []string
	for _, c := range candidates {
		ok := true
		for _, r := range reqs {
			if r.Key == key && !matches(r, c, true) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, c)
		}
	}
	return out
}

// typeMatches reports whether an instance type's labels satisfy every
// requirement, skipping the offering keys (zone, capacity type), which
// depend on the offering rather than the type, and keys the type does not
// define (the pool's own labels, applied to the node).
func typeMatches(reqs []v1.NodeSelectorRequirementWithMinValues, labels map[string]string) bool {
	for _, r := range reqs {
		if r.Key == corev1.LabelTopologyZone || r.Key == v1.LabelCapacityType {
			continue
		}
		v, present := labels[r.Key]
		if !present && !wellKnownTypeLabel(r.Key) {
			continue
		}
		if !matches(r, v, present) {
			return false
		}
	}
	return true
}
