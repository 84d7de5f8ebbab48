package scheduling

import (
	"fmt"
	"math/bits"
	"slices"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// fieldNodeName is the key under which a matchFields term on metadata.name
// is carried: only an existing node of that name can satisfy it.
const fieldNodeName = "metadata.name"

// validate checks that a requirement is well formed.
func (r *Requirement) validate() error {
	switch r.Operator {
	case corev1.NodeSelectorOpIn, corev1.NodeSelectorOpNotIn:
		if len(r.Values) == 0 {
			return fmt.Errorf("requirement %s %s: needs values", r.Key, r.Operator)
		}
	case corev1.NodeSelectorOpExists, corev1.NodeSelectorOpDoesNotExist:
		if len(r.Values) != 0 {
			return fmt.Errorf("requirement %s %s: takes no values", r.Key, r.Operator)
		}
	case corev1.NodeSelectorOpGt, corev1.NodeSelectorOpLt:
		if len(r.Values) != 1 {
			return fmt.Errorf("requirement %s %s: needs one integer value", r.Key, r.Operator)
		}
		if _, err := strconv.ParseInt(r.Values[0], 10, 64); err != nil {
			return fmt.Errorf("requirement %s %s %q: %w", r.Key, r.Operator, r.Values[0], err)
		}
	default:
		return fmt.Errorf("requirement %s: unknown operator %q", r.Key, r.Operator)
	}
	if r.MinValues < 0 {
		return fmt.Errorf("requirement %s: minValues %d is negative", r.Key, r.MinValues)
	}
	return nil
}

// LabelMatches reports whether a label (value; present false: the label is
// absent) meets operator op with values, as kube-scheduler evaluates node
// selectors: NotIn and DoesNotExist hold on an absent label, In and Exists
// do not; Gt and Lt need one base-10 integer on each side and hold on
// nothing else (an absent or non-integer label, a malformed requirement).
// It is the one copy of these rules; callers decide what an absent label
// means for them before calling it.
func LabelMatches(op corev1.NodeSelectorOperator, values []string, value string, present bool) bool {
	switch op {
	case corev1.NodeSelectorOpIn:
		return present && slices.Contains(values, value)
	case corev1.NodeSelectorOpNotIn:
		return !present || !slices.Contains(values, value)
	case corev1.NodeSelectorOpExists:
		return present
	case corev1.NodeSelectorOpDoesNotExist:
		return !present
	case corev1.NodeSelectorOpGt, corev1.NodeSelectorOpLt:
		if !present || len(values) != 1 {
			return false
		}
		have, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return false
		}
		want, err := strconv.ParseInt(values[0], 10, 64)
		if err != nil {
			return false
		}
		if op == corev1.NodeSelectorOpGt {
			return have > want
		}
		return have < want
	}
	return false
}

// matches evaluates the requirement against one label value (present
// false: the label is absent).
func (r *Requirement) matches(v string, present bool) bool {
	return LabelMatches(r.Operator, r.Values, v, present)
}

// matchesLabels evaluates every requirement against a fixed label set (an
// existing node); name answers metadata.name.
func matchesLabels(reqs []Requirement, labels map[string]string, name string) bool {
	for i := range reqs {
		r := &reqs[i]
		if r.Key == fieldNodeName {
			if !r.matches(name, true) {
				return false
			}
			continue
		}
		v, ok := labels[r.Key]
		if !r.matches(v, ok) {
			return false
		}
	}
	return true
}

// fromSelectorTerm converts a node selector term; ok is false for an empty
// term, which matches no node.
func fromSelectorTerm(t *corev1.NodeSelectorTerm) (reqs []Requirement, ok bool) {
	for _, e := range t.MatchExpressions {
		reqs = append(reqs, Requirement{Key: e.Key, Operator: e.Operator, Values: e.Values})
	}
	for _, f := range t.MatchFields {
		reqs = append(reqs, Requirement{Key: fieldNodeName, Operator: f.Operator, Values: f.Values})
	}
	return reqs, len(reqs) > 0
}

// bitset is a set of small integers (indexes of a pool's instance types).
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) set(i int)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i int) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) clone() bitset  { return slices.Clone(b) }
func (b bitset) empty() bool {
	for _, w := range b {
		if w != 0 {
			return false
		}
	}
	return true
}

// shape is what a new node may still become: the zones and capacity types
// (bit masks over the solver's indexes), the pool's instance types (a
// bitset), and the values left for the pool's own label keys.
type shape struct {
	zones, cts uint64
	types      bitset
	custom     map[string][]string
}

// apply narrows s by r for pool p and reports whether anything is left.
func (s *solver) apply(p *pool, sh *shape, r *Requirement) bool {
	switch {
	case r.Key == LabelZone:
		sh.zones = filterMask(sh.zones, s.zones, r)
		return sh.zones != 0
	case r.Key == LabelCapacityType:
		sh.cts = filterMask(sh.cts, s.cts, r)
		return sh.cts != 0
	case r.Key == LabelHostname || r.Key == fieldNodeName:
		// A new node gets a name only when it registers: only requirements
		// that any name satisfies hold.
		return r.Operator == corev1.NodeSelectorOpExists || r.Operator == corev1.NodeSelectorOpNotIn
	}
	if v, ok := p.labels[r.Key]; ok {
		return r.matches(v, true)
	}
	if p.typeKeys[r.Key] {
		for i := range p.types {
			if sh.types.has(i) {
				v, ok := p.types[i].labels[r.Key]
				if !r.matches(v, ok) {
					sh.types[i/64] &^= 1 << (i % 64)
				}
			}
		}
		return !sh.types.empty()
	}
	if vals, ok := sh.custom[r.Key]; ok {
		var keep []string
		for _, v := range vals {
			if r.matches(v, true) {
				keep = append(keep, v)
			}
		}
		if len(keep) == 0 {
			return false
		}
		custom := make(map[string][]string, len(sh.custom))
		for k, v := range sh.custom {
			custom[k] = v
		}
		custom[r.Key] = keep
		sh.custom = custom
		return true
	}
	return r.matches("", false)
}

func filterMask(mask uint64, names []string, r *Requirement) uint64 {
	for m := mask; m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m)
		if !r.matches(names[i], true) {
			mask &^= 1 << i
		}
	}
	return mask
}

func maskNames(mask uint64, names []string) []string {
	var out []string
	for m := mask; m != 0; m &= m - 1 {
		out = append(out, names[bits.TrailingZeros64(m)])
	}
	return out
}

// intersectCustom merges the custom label values of two shapes; ok is false
// when some key has no value left.
func intersectCustom(a, b map[string][]string) (map[string][]string, bool) {
	if len(b) == 0 {
		return a, true
	}
	if len(a) == 0 {
		return b, true
	}
	out := make(map[string][]string, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, bv := range b {
		av, ok := out[k]
		if !ok {
			out[k] = bv
			continue
		}
		var keep []string
		for _, v := range av {
			if slices.Contains(bv, v) {
				keep = append(keep, v)
			}
		}
		if len(keep) == 0 {
			return nil, false
		}
		out[k] = keep
	}
	return out, true
}

func customCompatible(a, b map[string][]string) bool {
	for k, bv := range b {
		if av, ok := a[k]; ok {
			found := false
			for _, v := range av {
				if slices.Contains(bv, v) {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
