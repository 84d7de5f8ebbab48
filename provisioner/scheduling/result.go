package scheduling

import (
	"errors"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
)

// explain says why a class fits nowhere, for the pod's error.
func (s *solver) explain(c *class) error {
	var errs []error
	for _, p := range s.pools {
		switch {
		case p.err != nil:
			errs = append(errs, p.err)
		case !tolerates(c.tolerations, p.np.Taints, true):
			errs = append(errs, fmt.Errorf("nodepool %s: taints not tolerated", p.np.Name))
		case len(c.poolTerms[p.idx]) == 0:
			errs = append(errs, fmt.Errorf("nodepool %s: no instance type meets the node requirements with room for %s", p.np.Name, c.req))
		case !s.minValuesPossible(c, p):
			errs = append(errs, fmt.Errorf("nodepool %s: too few instance types, zones or capacity types for its minValues fit %s", p.np.Name, c.req))
		case p.limited && !s.withinLimits(c, p):
			errs = append(errs, fmt.Errorf("nodepool %s: its limits leave no room for %s", p.np.Name, c.req))
		default:
			errs = append(errs, fmt.Errorf("nodepool %s: topology spread, pod (anti-)affinity or minValues leave no room", p.np.Name))
		}
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no nodepool"))
	}
	return fmt.Errorf("fits no existing node and no new node: %w", errors.Join(errs...))
}

// minValuesPossible reports whether a new node holding only this pod could
// meet the pool's minValues.
func (s *solver) minValuesPossible(c *class, p *pool) bool {
	if len(p.minValues) == 0 {
		return true
	}
	n := &node{pool: p, zone: -1, zones: p.base.zones, cts: p.base.cts, custom: p.base.custom, cands: p.all}
	for i := range c.poolTerms[p.idx] {
		t := &c.poolTerms[p.idx][i]
		if s.minValuesHold(n, t, c.req, n.zones&t.zones, n.cts&t.cts) {
			return true
		}
	}
	return false
}

// withinLimits reports whether some type that could take the class alone
// still fits the pool's remaining limits.
func (s *solver) withinLimits(c *class, p *pool) bool {
	for _, t := range c.poolTerms[p.idx] {
		for i := range p.types {
			if t.types.has(i) && p.types[i].it.Capacity.Fits(p.remaining) {
				return true
			}
		}
	}
	return false
}

// result fills res from the nodes.
func (s *solver) result(res *Result) {
	res.Existing = map[string][]*corev1.Pod{}
	// Hand out what each pool has left over so that every listed type of
	// every node fits the limits, whichever the launch picks.
	leftover := map[*pool]Resources{}
	for _, p := range s.pools {
		leftover[p] = p.remaining
	}
	for _, n := range s.nodes {
		if len(n.placed) == 0 {
			continue
		}
		if n.existing {
			res.Existing[n.name] = n.placed
			continue
		}
		res.NewNodes = append(res.NewNodes, s.finish(n, leftover))
	}
	index := make(map[*corev1.Pod]int, len(s.in.Pods))
	for i, p := range s.in.Pods {
		index[p] = i
	}
	sort.SliceStable(res.Unschedulable, func(i, j int) bool {
		return index[res.Unschedulable[i].Pod] < index[res.Unschedulable[j].Pod]
	})
}

// MaxInstanceTypes caps the types listed per new node, cheapest first, as
// a launch offers at most that many overrides to CreateFleet; a pool's
// minValues can make the list longer.
const MaxInstanceTypes = 60

// minValuesListed reports whether the listed types keep the pool's
// minValues.
func (s *solver) minValuesListed(n *node, cands []int32) bool {
	for _, r := range n.pool.minValues {
		if r.Key == LabelZone || r.Key == LabelCapacityType || n.custom[r.Key] != nil {
			continue
		}
		seen := map[string]bool{}
		for _, i := range cands {
			if v, ok := n.pool.types[i].labels[r.Key]; ok {
				seen[v] = true
			}
		}
		if len(seen) < r.MinValues {
			return false
		}
	}
	return true
}

func (s *solver) finish(n *node, leftover map[*pool]Resources) NewNode {
	p := n.pool
	cands := n.cands
	if p.limited {
		left := leftover[p]
		base := p.types[cands[0]].it.Capacity
		var extra Resources
		kept := cands[:0:0]
		for _, i := range cands {
			ok := true
			for r := range NumResources {
				if left[r] != Unlimited && p.types[i].it.Capacity[r]-base[r] > left[r] {
					ok = false
				}
			}
			if ok {
				kept = append(kept, i)
				extra = maxResources(extra, p.types[i].it.Capacity.Sub(base))
			}
		}
		for r := range NumResources {
			if left[r] != Unlimited {
				left[r] -= extra[r]
			}
		}
		leftover[p] = left
		cands = kept
	}
	if len(cands) > MaxInstanceTypes {
		short := cands[:MaxInstanceTypes]
		if s.minValuesListed(n, short) {
			cands = short
		}
	}
	out := NewNode{NodePool: p.np.Name, Name: n.name, Labels: map[string]string{}, Taints: p.np.Taints,
		StartupTaints: p.np.StartupTaints, Pods: n.placed, Requests: n.req}
	var zones, cts uint64
	arch := map[string]bool{}
	for _, i := range cands {
		t := &p.types[i]
		out.InstanceTypes = append(out.InstanceTypes, t.it)
		arch[t.labels[LabelArch]] = true
		for _, o := range t.offers {
			if n.zones&(1<<o.zone) != 0 && n.cts&(1<<o.ct) != 0 {
				zones |= 1 << o.zone
				cts |= 1 << o.ct
			}
		}
	}
	first := &p.types[cands[0]]
	out.Overhead = first.overhead
	out.Price = first.price(n.zones, n.cts)
	out.Zones, out.CapacityTypes = maskNames(zones, s.zones), maskNames(cts, s.cts)
	for k, v := range p.labels {
		out.Labels[k] = v
	}
	names := make([]string, len(out.InstanceTypes))
	for i, it := range out.InstanceTypes {
		names[i] = it.Name
	}
	out.Requirements = append(out.Requirements,
		Requirement{Key: LabelInstanceType, Operator: corev1.NodeSelectorOpIn, Values: names},
		Requirement{Key: LabelZone, Operator: corev1.NodeSelectorOpIn, Values: out.Zones},
		Requirement{Key: LabelCapacityType, Operator: corev1.NodeSelectorOpIn, Values: out.CapacityTypes})
	for _, k := range sortedKeys(n.custom) {
		out.Requirements = append(out.Requirements, Requirement{Key: k, Operator: corev1.NodeSelectorOpIn, Values: n.custom[k]})
		if len(n.custom[k]) == 1 {
			out.Labels[k] = n.custom[k][0]
		}
	}
	for _, r := range p.np.Requirements {
		if r.Key == LabelInstanceType || r.Key == LabelZone || r.Key == LabelCapacityType || n.custom[r.Key] != nil {
			if r.MinValues > 0 {
				for i := range out.Requirements {
					if out.Requirements[i].Key == r.Key {
						out.Requirements[i].MinValues = r.MinValues
					}
				}
			}
			continue
		}
		out.Requirements = append(out.Requirements, r)
	}
	if len(out.Zones) == 1 {
		out.Labels[LabelZone] = out.Zones[0]
	}
	if len(out.CapacityTypes) == 1 {
		out.Labels[LabelCapacityType] = out.CapacityTypes[0]
	}
	if len(names) == 1 {
		out.Labels[LabelInstanceType] = names[0]
	}
	if len(arch) == 1 {
		for a := range arch {
			if a != "" {
				out.Labels[LabelArch] = a
			}
		}
	}
	return out
}
