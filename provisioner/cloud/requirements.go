package cloud

import (
	corev1 "k8s.io/api/core/v1"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// matches reports whether a label (value, present) satisfies a requirement.
func matches(r v1.NodeSelectorRequirementWithMinValues, value string, present bool) bool {
	return scheduling.LabelMatches(r.Operator, r.Values, value, present)
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
