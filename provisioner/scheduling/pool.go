package scheduling

import (
	"fmt"
	"math"
	"math/bits"
	"sort"

	corev1 "k8s.io/api/core/v1"
)

// offer is an available offering, by zone and capacity-type index.
type offer struct {
	zone, ct int
	price    float64
}

// ptype is an instance type as one pool sees it.
type ptype struct {
	it     *InstanceType
	labels map[string]string
	// alloc is allocatable minus the pool's DaemonSet overhead on it.
	alloc, overhead Resources
	offers          []offer
	// availZones[ct] is the zones where the type is offered with that
	// capacity type.
	availZones []uint64
	minPrice   float64
}

func (t *ptype) available(zones, cts uint64) bool {
	for m := cts; m != 0; m &= m - 1 {
		if t.availZones[bits.TrailingZeros64(m)]&zones != 0 {
			return true
		}
	}
	return false
}

func (t *ptype) price(zones, cts uint64) float64 {
	p := math.Inf(1)
	for _, o := range t.offers {
		if zones&(1<<o.zone) != 0 && cts&(1<<o.ct) != 0 {
			p = min(p, o.price)
		}
	}
	return p
}

// pool is a NodePool compiled against the round's zones and types.
type pool struct {
	idx      int
	np       *NodePool
	labels   map[string]string
	base     shape
	types    []ptype // cheapest first
	all      []int32
	maxAlloc Resources
	typeKeys map[string]bool
	// minValues are the requirements with MinValues set.
	minValues []Requirement
	limited   bool
	remaining Resources
	seq       int
	err       error
	// frontier are the types that fairPrice considers.
	frontier []int32
}

// compilePools resolves each pool's requirements, types, DaemonSet
// overhead and limits.
func (s *solver) compilePools() {
	for i := range s.in.NodePools {
		np := &s.in.NodePools[i]
		p := &pool{idx: i, np: np, labels: map[string]string{LabelNodePool: np.Name}, typeKeys: map[string]bool{}}
		for k, v := range np.Labels {
			p.labels[k] = v
		}
		p.err = s.compilePool(p)
		s.pools = append(s.pools, p)
	}
	sort.SliceStable(s.pools, func(i, j int) bool { return s.pools[i].np.Weight > s.pools[j].np.Weight })
}

func (s *solver) compilePool(p *pool) error {
	np := p.np
	for i := range np.Requirements {
		if err := np.Requirements[i].validate(); err != nil {
			return fmt.Errorf("nodepool %s: %w", np.Name, err)
		}
	}
	for _, it := range np.InstanceTypes {
		t := ptype{it: it, labels: map[string]string{LabelInstanceType: it.Name, LabelOS: "linux"}}
		if it.Arch != "" {
			t.labels[LabelArch] = it.Arch
		}
		for k, v := range it.Labels {
			t.labels[k] = v
		}
		for k := range t.labels {
			p.typeKeys[k] = true
		}
		p.types = append(p.types, t)
	}
	for k := range p.labels {
		delete(p.typeKeys, k)
	}
	p.base = shape{zones: s.allZones, cts: s.allCTs, types: newBitset(len(p.types))}
	for i := range p.types {
		p.base.types.set(i)
	}
	// A pool's In requirement on a key that is neither well known, a type
	// label nor a pool label defines a label that the node takes one value of.
	for _, r := range np.Requirements {
		if r.Operator == corev1.NodeSelectorOpIn && r.Key != LabelZone && r.Key != LabelCapacityType && r.Key != LabelHostname &&
			!p.typeKeys[r.Key] && p.labels[r.Key] == "" {
			if p.base.custom == nil {
				p.base.custom = map[string][]string{}
			}
			vals := append([]string(nil), r.Values...)
			sort.Strings(vals)
			p.base.custom[r.Key] = vals
		}
	}
	for i := range np.Requirements {
		if !s.apply(p, &p.base, &np.Requirements[i]) {
			return fmt.Errorf("nodepool %s: requirement %s %s %v leaves nothing to launch", np.Name, np.Requirements[i].Key, np.Requirements[i].Operator, np.Requirements[i].Values)
		}
		if np.Requirements[i].MinValues > 0 {
			p.minValues = append(p.minValues, np.Requirements[i])
		}
	}
	// DaemonSet overhead, per type: a DaemonSet counts on a type when it
	// tolerates the pool's taints and some term of its node affinity can
	// hold on a node of that type.
	for _, d := range s.in.DaemonSets {
		req, err := PodRequests(d)
		if err != nil || !tolerates(d.Spec.Tolerations, np.Taints, true) {
			continue
		}
		req[Pods] = 1
		dc := &class{}
		if err := s.compileDaemon(dc, d); err != nil {
			continue
		}
		on := newBitset(len(p.types))
		for _, reqs := range dc.required {
			sh := shape{zones: p.base.zones, cts: p.base.cts, types: p.base.types.clone(), custom: p.base.custom}
			ok := true
			for i := range reqs {
				if !s.apply(p, &sh, &reqs[i]) {
					ok = false
					break
				}
			}
			if ok {
				for i := range on {
					on[i] |= sh.types[i]
				}
			}
		}
		for i := range p.types {
			if on.has(i) {
				p.types[i].overhead = p.types[i].overhead.Add(req)
			}
		}
	}
	var kept []ptype
	for i := range p.types {
		t := p.types[i]
		if !p.base.types.has(i) {
			continue
		}
		t.alloc = t.it.Allocatable.Sub(t.overhead)
		if !(Resources{}).Fits(t.alloc) {
			continue
		}
		t.availZones = make([]uint64, len(s.cts))
		for _, o := range t.it.Offerings {
			z, c := s.zoneIdx[o.Zone], s.ctIdx[o.CapacityType]
			if !o.Available || p.base.zones&(1<<z) == 0 || p.base.cts&(1<<c) == 0 {
				continue
			}
			t.offers = append(t.offers, offer{zone: z, ct: c, price: o.Price})
			t.availZones[c] |= 1 << z
		}
		if len(t.offers) == 0 {
			continue
		}
		kept = append(kept, t)
	}
	sort.SliceStable(kept, func(i, j int) bool {
		pi, pj := kept[i].price(p.base.zones, p.base.cts), kept[j].price(p.base.zones, p.base.cts)
		if pi != pj {
			return pi < pj
		}
		return kept[i].it.Name < kept[j].it.Name
	})
	p.types = kept
	for i := range kept {
		kept[i].minPrice = kept[i].price(p.base.zones, p.base.cts)
	}
	p.types = kept
	p.computeFrontier()
	p.base.types = newBitset(len(kept))
	var zones, cts uint64
	for i := range kept {
		p.base.types.set(i)
		p.all = append(p.all, int32(i))
		p.maxAlloc = maxResources(p.maxAlloc, kept[i].alloc)
		for c, z := range kept[i].availZones {
			if z != 0 {
				cts |= 1 << c
				zones |= z
			}
		}
	}
	p.base.zones &= zones
	p.base.cts &= cts
	if len(kept) == 0 {
		return fmt.Errorf("nodepool %s: no instance type is offered within its requirements", np.Name)
	}
	if np.Limits != nil {
		p.limited = true
		p.remaining = *np.Limits
	}
	return nil
}

// compileDaemon compiles only the node-affinity part of a DaemonSet pod.
func (s *solver) compileDaemon(c *class, d *corev1.Pod) error {
	var base []Requirement
	for _, k := range sortedKeys(d.Spec.NodeSelector) {
		base = append(base, Requirement{Key: k, Operator: corev1.NodeSelectorOpIn, Values: []string{d.Spec.NodeSelector[k]}})
	}
	aff := d.Spec.Affinity
	if aff != nil && aff.NodeAffinity != nil && aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		for i := range aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
			reqs, ok := fromSelectorTerm(&aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[i])
			if ok {
				c.required = append(c.required, append(append([]Requirement(nil), base...), reqs...))
			}
		}
	} else {
		c.required = [][]Requirement{base}
	}
	for _, t := range c.required {
		for i := range t {
			if err := t[i].validate(); err != nil {
				return err
			}
		}
	}
	return nil
}

// growthSlack is how much more than the pool's best rate a node may cost
// for what it is expected to hold when it grows to a bigger type.
const growthSlack = 1.2

// worthGrowing decides whether adding the pod may move the node to a
// pricier type. Staying on the current cheapest type is free. Growing is
// worth it when it costs no more than a new node for the pod alone would,
// or when the bigger type, filled with what it can expect (its free room,
// up to the requests still waiting to be placed), costs at most
// growthSlack times the pool's best price for that content. The second test
// lets nodes grow while there are pods to fill them, and keeps CPU pods
// from inflating GPU nodes and full nodes from growing into far less
// efficient giant types.
func (s *solver) worthGrowing(c *class, n *node, t *shape, need Resources, zones, cts uint64) bool {
	cur := n.cands[0]
	if t.types.has(int(cur)) && n.usable(cur, need, zones, cts) {
		return true
	}
	next := int32(-1)
	for _, i := range n.cands {
		if t.types.has(int(i)) && n.usable(i, need, zones, cts) {
			next = i
			break
		}
	}
	if next < 0 {
		return false
	}
	p := n.pool
	price := p.types[next].price(zones, cts)
	if price-p.types[cur].price(n.zones, n.cts) <= c.newPrice[p.idx] {
		return true
	}
	waiting := s.waiting.Sub(c.req)
	target := need
	for _, d := range pricedDims {
		target[d] += max(0, min(p.types[next].alloc[d]-need[d], waiting[d]))
	}
	return price <= growthSlack*p.fairPrice(target)
}

// maybeFreeze stops a node from growing once growth was refused to a pod
// that needs nothing the node's type lacks: pods come biggest first and the
// waiting requests only shrink, so later pods would be refused too. The
// node keeps only the types no pricier than its cheapest, which makes later
// checks a quick capacity compare.
func (s *solver) maybeFreeze(c *class, n *node) {
	p := n.pool
	cur := &p.types[n.cands[0]]
	for _, d := range pricedDims {
		if c.req[d] > 0 && cur.alloc[d] <= 0 {
			return
		}
	}
	limit := cur.price(n.zones, n.cts)
	kept := n.cands[:0]
	for _, i := range n.cands {
		if p.types[i].price(n.zones, n.cts) <= limit {
			kept = append(kept, i)
		}
	}
	n.cands = kept
	n.maxAlloc = Resources{}
	for _, i := range n.cands {
		n.maxAlloc = maxResources(n.maxAlloc, p.types[i].alloc)
	}
}

// pricedDims are the dimensions that fair prices weigh.
var pricedDims = [...]Resource{CPU, Memory, NvidiaGPU, Neuron, NeuronCore, EFA}

// fairPrice is the yardstick for growth: the cheapest price of the
// requests r bought as a fraction of one type of the pool (at its cheapest
// offering), or, when cheaper, with the accelerators and the general
// capacity bought separately, so that a big accelerated type is not judged
// fair for CPU pods that cheaper general types would hold. Only types on
// the pool's efficiency frontier can be the cheapest.
func (p *pool) fairPrice(r Resources) float64 {
	var acc, gen Resources
	for _, d := range pricedDims {
		if d == CPU || d == Memory {
			gen[d] = r[d]
		} else {
			acc[d] = r[d]
		}
	}
	if acc.IsZero() {
		return p.fraction(r)
	}
	return min(p.fraction(r), p.fraction(acc)+p.fraction(gen))
}

func (p *pool) fraction(r Resources) float64 {
	best := math.Inf(1)
	for _, i := range p.frontier {
		t := &p.types[i]
		frac := 0.0
		for _, d := range pricedDims {
			if r[d] <= 0 {
				continue
			}
			if t.alloc[d] <= 0 {
				frac = math.Inf(1)
				break
			}
			frac = max(frac, float64(r[d])/float64(t.alloc[d]))
		}
		best = min(best, frac*t.minPrice)
	}
	return best
}

// computeFrontier keeps the types that no other type beats on every
// priced dimension per dollar.
func (p *pool) computeFrontier() {
	per := func(i int, d Resource) float64 { return float64(p.types[i].alloc[d]) / p.types[i].minPrice }
	for u := range p.types {
		dominated := false
		for v := range p.types {
			if u == v {
				continue
			}
			all, strict := true, false
			for _, d := range pricedDims {
				a, b := per(v, d), per(u, d)
				if a < b {
					all = false
					break
				}
				if a > b {
					strict = true
				}
			}
			if all && (strict || v < u) {
				dominated = true
				break
			}
		}
		if !dominated {
			p.frontier = append(p.frontier, int32(u))
		}
	}
}
