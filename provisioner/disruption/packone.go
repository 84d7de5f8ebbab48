package disruption

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/autonode/autonode/provisioner/scheduling"
)

// maxPackTries bounds how many (pool, type, zone, capacity type) options
// packOne simulates.
const maxPackTries = 6

// packOne tries to put every pod that res placed on new nodes onto a single
// new node costing less than limit. Solve opens a second cheap node rather
// than grow one into a dearer type when that is cheaper for pending pods;
// consolidation, which is replacing nodes, wants one node when one is
// allowed. It adds the cheapest fitting offering as a virtual existing node
// and re-simulates without pools, so every constraint is checked by Solve.
func (r *round) packOne(ctx context.Context, cands []*Node, res scheduling.Result, limit float64) (scheduling.Result, bool, error) {
	var req scheduling.Resources
	constrained := false
	for _, nn := range res.NewNodes {
		req = req.Add(nn.Requests)
		for _, p := range nn.Pods {
			if len(p.Spec.NodeSelector) > 0 || (p.Spec.Affinity != nil && p.Spec.Affinity.NodeAffinity != nil) {
				constrained = true
			}
		}
	}
	type option struct {
		pool     *scheduling.NodePool
		t        *scheduling.InstanceType
		zone, ct string
		price    float64
		labels   map[string]string
		overhead scheduling.Resources
	}
	var opts []option
	for i := range r.pools {
		p := &r.pools[i]
		overhead := daemonOverhead(r.c.DaemonSets, p.Taints)
		for _, t := range p.InstanceTypes {
			if !req.Add(overhead).Fits(t.Allocatable) {
				continue
			}
			for _, o := range t.Offerings {
				if !o.Available || o.Price >= limit {
					continue
				}
				if lbl, ok := newNodeLabels(p, t, o.Zone, o.CapacityType); ok {
					opts = append(opts, option{p, t, o.Zone, o.CapacityType, o.Price, lbl, overhead})
				}
			}
		}
	}
	slices.SortStableFunc(opts, func(a, b option) int {
		return cmp.Or(cmp.Compare(b.pool.Weight, a.pool.Weight), cmp.Compare(a.price, b.price))
	})
	skip := make(map[int]bool, len(cands))
	var pods []*corev1.Pod
	for _, n := range cands {
		if i, ok := r.idx[n]; ok {
			skip[i] = true
		}
		for _, p := range n.Reschedulable() {
			pods = append(pods, p.Pod)
		}
	}
	const virtual = "replacement-1"
	for k, o := range opts {
		if k == maxPackTries {
			break
		}
		nodes := make([]scheduling.ExistingNode, 0, len(r.base)+1)
		for i := range r.base {
			if !skip[i] {
				nodes = append(nodes, r.base[i])
			}
		}
		lbl := cloneMap(o.labels)
		lbl[corev1.LabelHostname] = virtual
		nodes = append(nodes, scheduling.ExistingNode{Name: virtual, Labels: lbl, Taints: o.pool.Taints,
			Allocatable: o.t.Allocatable, Requested: o.overhead, InFlight: true})
		out, err := scheduling.Solve(ctx, scheduling.Input{Pods: pods, Nodes: nodes, DaemonSets: r.c.DaemonSets, NamespaceLabels: r.c.NamespaceLabels})
		if err != nil {
			return out, false, fmt.Errorf("simulating one replacement for %s: %w", nodeNames(cands), err)
		}
		if len(out.Unschedulable) > 0 {
			continue
		}
		placed := out.Existing[virtual]
		delete(out.Existing, virtual)
		var preq scheduling.Resources
		for _, p := range placed {
			pr, _ := scheduling.PodRequests(p)
			preq = preq.Add(pr)
		}
		// Other types may launch instead when no moved pod cares about node
		// labels: those that hold the same pods and cost less than limit.
		types := []*scheduling.InstanceType{o.t}
		if !constrained {
			types = types[:0]
			for _, t := range o.pool.InstanceTypes {
				if _, ok := newNodeLabels(o.pool, t, o.zone, o.ct); ok && t.Arch == o.t.Arch && preq.Add(o.overhead).Fits(t.Allocatable) {
					if p, ok := offeringPrice(t, []string{o.zone}, []string{o.ct}); ok && p < limit {
						types = append(types, t)
					}
				}
			}
			slices.SortStableFunc(types, func(a, b *scheduling.InstanceType) int {
				pa, _ := offeringPrice(a, []string{o.zone}, []string{o.ct})
				pb, _ := offeringPrice(b, []string{o.zone}, []string{o.ct})
				return cmp.Compare(pa, pb)
			})
		}
		// Only what every listed type shares is known before the launch.
		known := map[string]string{scheduling.LabelNodePool: o.pool.Name, scheduling.LabelZone: o.zone,
			scheduling.LabelCapacityType: o.ct, scheduling.LabelArch: o.t.Arch, scheduling.LabelOS: "linux"}
		for k, v := range o.pool.Labels {
			known[k] = v
		}
		if len(types) == 1 {
			known = o.labels
		}
		nn := scheduling.NewNode{
			NodePool: o.pool.Name, Name: virtual, InstanceTypes: types, Zones: []string{o.zone}, CapacityTypes: []string{o.ct},
			Labels: known, Taints: o.pool.Taints, StartupTaints: o.pool.StartupTaints, Pods: placed,
			Requests: preq, Overhead: o.overhead, Price: o.price,
		}
		nn.Requirements = narrowRequirements(append(slices.Clone(o.pool.Requirements),
			scheduling.Requirement{Key: scheduling.LabelZone, Operator: corev1.NodeSelectorOpIn, Values: []string{o.zone}}), types, nn.CapacityTypes)
		nn.Requirements = dedupeZone(nn.Requirements, o.zone)
		out.NewNodes = []scheduling.NewNode{nn}
		return out, true, nil
	}
	return res, false, nil
}

// dedupeZone keeps one zone requirement, In [zone].
func dedupeZone(reqs []scheduling.Requirement, zone string) []scheduling.Requirement {
	out := reqs[:0]
	for _, q := range reqs {
		if q.Key != scheduling.LabelZone {
			out = append(out, q)
		}
	}
	return append(out, scheduling.Requirement{Key: scheduling.LabelZone, Operator: corev1.NodeSelectorOpIn, Values: []string{zone}})
}

// newNodeLabels are the labels a node of type t in zone and capacity type ct
// from pool p would carry, and whether p's requirements allow it. A pool
// In requirement on a key nothing else defines labels the node with its
// first value, as the scheduler's pool-defined keys do.
func newNodeLabels(p *scheduling.NodePool, t *scheduling.InstanceType, zone, ct string) (map[string]string, bool) {
	lbl := map[string]string{}
	for k, v := range t.Labels {
		lbl[k] = v
	}
	for k, v := range p.Labels {
		lbl[k] = v
	}
	lbl[scheduling.LabelInstanceType] = t.Name
	lbl[scheduling.LabelArch] = t.Arch
	lbl[scheduling.LabelOS] = "linux"
	lbl[scheduling.LabelZone] = zone
	lbl[scheduling.LabelCapacityType] = ct
	lbl[scheduling.LabelNodePool] = p.Name
	for _, q := range p.Requirements {
		v, ok := lbl[q.Key]
		if !ok && q.Operator == corev1.NodeSelectorOpIn && len(q.Values) > 0 {
			lbl[q.Key] = q.Values[0]
			continue
		}
		if !ok {
			if q.Operator == corev1.NodeSelectorOpIn || q.Operator == corev1.NodeSelectorOpExists ||
				q.Operator == corev1.NodeSelectorOpGt || q.Operator == corev1.NodeSelectorOpLt {
				return nil, false
			}
			continue
		}
		if !scheduling.LabelMatches(q.Operator, q.Values, v, true) {
			return nil, false
		}
	}
	return lbl, true
}

// daemonOverhead is the requests of the DaemonSets that tolerate taints (an
// upper bound: their node affinity is not narrowed per type).
func daemonOverhead(ds []*corev1.Pod, taints []corev1.Taint) scheduling.Resources {
	var sum scheduling.Resources
	for _, d := range ds {
		ok := true
		for i := range taints {
			t := &taints[i]
			if t.Effect != corev1.TaintEffectNoSchedule && t.Effect != corev1.TaintEffectNoExecute {
				continue
			}
			tolerated := false
			for j := range d.Spec.Tolerations {
				if d.Spec.Tolerations[j].ToleratesTaint(logr.Discard(), t, false) {
					tolerated = true
					break
				}
			}
			if !tolerated {
				ok = false
				break
			}
		}
		if ok {
			if r, err := scheduling.PodRequests(d); err == nil {
				sum = sum.Add(r)
			}
		}
	}
	return sum
}
