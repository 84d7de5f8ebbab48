package scheduling

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
)

// verdict is the answer of a fit check. A monotone rejection stays true
// for the rest of the round (capacity only shrinks, counts only grow), so a
// class's cursor may skip that node for good; a changing one may not.
type verdict uint8

const (
	fits verdict = iota
	rejectMonotone
	rejectChanging
)

// node is an existing, in-flight or new node.
type node struct {
	id       int
	name     string
	existing bool
	src      *ExistingNode
	labels   map[string]string
	taints   []corev1.Taint
	// zone is the zone index once known, -1 before (or never, for an
	// existing node without the label).
	zone   int
	free   Resources
	placed []*corev1.Pod

	pool       *pool
	zones, cts uint64
	custom     map[string][]string
	cands      []int32
	req        Resources
	maxAlloc   Resources
	charge     Resources
}

type solver struct {
	in                  *Input
	zones, cts          []string
	zoneIdx, ctIdx      map[string]int
	allZones, allCTs    uint64
	pools               []*pool // heaviest first
	nodes               []*node
	lanes               [][]int32
	groups              groups
	anyPreferNoSchedule bool
	prices              []float64
	// waiting is the sum of the requests of the pods not yet placed.
	waiting Resources
}

func (s *solver) laneUnpinned() int { return len(s.zones) }
func (s *solver) laneNoZone() int   { return len(s.zones) + 1 }

// Solve places in.Pods: first on the free capacity of existing nodes, then
// of in-flight ones, then on new nodes of the cheapest types that fit. It
// returns an error only for input it cannot interpret as a whole (more than
// 64 zones or capacity types, a nil pod) or when ctx ends; a pod or pool
// that cannot be honoured is reported in Result.Unschedulable.
func Solve(ctx context.Context, in Input) (Result, error) {
	s := &solver{in: &in, groups: groups{byKey: map[string]*group{}}}
	if err := s.index(); err != nil {
		return Result{}, err
	}
	s.compilePools()
	classes, res, err := s.classify()
	if err != nil {
		return Result{}, err
	}
	s.addExisting()
	if err := s.countExisting(); err != nil {
		return Result{}, err
	}
	for _, c := range classes {
		for _, g := range s.groups.list {
			if g.matches(c.ns, c.lbls, in.NamespaceLabels) {
				c.feeds = append(c.feeds, g)
			}
		}
	}
	// Biggest first (CPU, then memory), as first-fit-decreasing packs.
	sort.SliceStable(classes, func(i, j int) bool {
		a, b := classes[i].req, classes[j].req
		if a[CPU] != b[CPU] {
			return a[CPU] > b[CPU]
		}
		if a[Memory] != b[Memory] {
			return a[Memory] > b[Memory]
		}
		return classes[i].first < classes[j].first
	})
	for _, c := range classes {
		if c.err == nil {
			for range c.pods {
				s.waiting = s.waiting.Add(c.req)
			}
		}
	}
	placedCount := 0
	for _, c := range classes {
		if c.err != nil {
			for _, p := range c.pods {
				res.Unschedulable = append(res.Unschedulable, PodError{Pod: p, Err: fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, c.err)})
			}
			continue
		}
		s.prepare(c)
		for k, p := range c.pods {
			if placedCount++; placedCount%256 == 0 {
				if err := ctx.Err(); err != nil {
					return Result{}, err
				}
			}
			if !s.placeRelaxing(c, p) {
				why := s.explain(c)
				for _, q := range c.pods[k:] {
					s.waiting = s.waiting.Sub(c.req)
					res.Unschedulable = append(res.Unschedulable, PodError{Pod: q, Err: fmt.Errorf("pod %s/%s: %w", q.Namespace, q.Name, why)})
				}
				break
			}
		}
	}
	s.result(&res)
	return res, nil
}

// placeRelaxing places one pod, relaxing the class's soft constraints
// while it fits nowhere: first it tries dropping each remaining one alone,
// in relaxation order, and keeps the first that lets the pod fit (so an
// unsatisfiable preference does not take a satisfiable one with it); if
// none does, it drops the first for good and tries again. Later pods of the
// class start from what was dropped.
func (s *solver) placeRelaxing(c *class, p *corev1.Pod) bool {
	if s.place(c, p) {
		return true
	}
	for {
		first := -1
		for i := range c.dropped {
			if c.dropped[i] {
				continue
			}
			if first < 0 {
				first = i
			}
			c.dropped[i] = true
			s.prepare(c)
			if s.place(c, p) {
				return true
			}
			c.dropped[i] = false
		}
		if first < 0 {
			s.prepare(c)
			return false
		}
		c.dropped[first] = true
	}
}

// index collects zones and capacity types.
func (s *solver) index() error {
	zs, cs := map[string]bool{}, map[string]bool{}
	for i := range s.in.NodePools {
		for _, it := range s.in.NodePools[i].InstanceTypes {
			if it == nil {
				return fmt.Errorf("nodepool %s: nil instance type", s.in.NodePools[i].Name)
			}
			for _, o := range it.Offerings {
				zs[o.Zone] = true
				cs[o.CapacityType] = true
			}
		}
		for _, t := range s.in.NodePools[i].Taints {
			if t.Effect == corev1.TaintEffectPreferNoSchedule {
				s.anyPreferNoSchedule = true
			}
		}
	}
	for i := range s.in.Nodes {
		if z, ok := s.in.Nodes[i].Labels[LabelZone]; ok {
			zs[z] = true
		}
		for _, t := range s.in.Nodes[i].Taints {
			if t.Effect == corev1.TaintEffectPreferNoSchedule {
				s.anyPreferNoSchedule = true
			}
		}
	}
	if len(zs) > 64 || len(cs) > 64 {
		return fmt.Errorf("%d zones and %d capacity types: at most 64 of each are supported", len(zs), len(cs))
	}
	s.zones, s.cts = sortedKeys(zs), sortedKeys(cs)
	s.zoneIdx, s.ctIdx = map[string]int{}, map[string]int{}
	for i, z := range s.zones {
		s.zoneIdx[z] = i
		s.allZones |= 1 << i
	}
	for i, c := range s.cts {
		s.ctIdx[c] = i
		s.allCTs |= 1 << i
	}
	s.lanes = make([][]int32, len(s.zones)+2)
	return nil
}

// classify groups the pods into classes.
func (s *solver) classify() ([]*class, Result, error) {
	var res Result
	byKey := map[string]*class{}
	var classes []*class
	var buf bytes.Buffer
	for i, pod := range s.in.Pods {
		if pod == nil {
			return nil, res, fmt.Errorf("pod %d is nil", i)
		}
		req, err := PodRequests(pod)
		if err != nil {
			res.Unschedulable = append(res.Unschedulable, PodError{Pod: pod, Err: fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)})
			continue
		}
		vol := s.in.VolumeRequirements[pod.UID]
		if err := signature(&buf, pod, req, vol); err != nil {
			return nil, res, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		if c, ok := byKey[string(buf.Bytes())]; ok {
			c.pods = append(c.pods, pod)
			continue
		}
		c := s.newClass(pod, req, i)
		byKey[buf.String()] = c
		classes = append(classes, c)
	}
	return classes, res, nil
}

// addExisting creates the existing and in-flight nodes, registered first.
func (s *solver) addExisting() {
	for _, inflight := range []bool{false, true} {
		for i := range s.in.Nodes {
			e := &s.in.Nodes[i]
			if e.InFlight != inflight {
				continue
			}
			n := &node{id: len(s.nodes), name: e.Name, existing: true, src: e, labels: e.Labels, taints: e.Taints, zone: -1,
				free: e.Allocatable.Sub(e.Requested)}
			lane := s.laneNoZone()
			if z, ok := e.Labels[LabelZone]; ok {
				n.zone = s.zoneIdx[z]
				lane = n.zone
			}
			s.nodes = append(s.nodes, n)
			s.lanes[lane] = append(s.lanes[lane], int32(n.id))
		}
	}
}

// countExisting records the pods already on nodes in the topology groups,
// with their required anti-affinity terms as owners.
func (s *solver) countExisting() error {
	for _, n := range s.nodes {
		for _, pod := range n.src.Pods {
			aff := pod.Spec.Affinity
			if aff == nil || aff.PodAntiAffinity == nil {
				continue
			}
			for i := range aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
				term := &aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[i]
				if !supportedTopologyKey(term.TopologyKey) {
					continue
				}
				sel, err := selectorFor(term.LabelSelector, pod.Labels, term.MatchLabelKeys, term.MismatchLabelKeys)
				if err != nil {
					return fmt.Errorf("pod %s/%s on node %s: anti-affinity: %w", pod.Namespace, pod.Name, n.name, err)
				}
				g, err := s.groups.get(term.TopologyKey, pod.Namespace, term, sel)
				if err != nil {
					return fmt.Errorf("pod %s/%s on node %s: anti-affinity: %w", pod.Namespace, pod.Name, n.name, err)
				}
				g.anti = true
				if d := s.domain(g, n); d >= 0 {
					g.add(d, true)
				}
			}
		}
	}
	for _, n := range s.nodes {
		for _, pod := range n.src.Pods {
			for _, g := range s.groups.list {
				if d := s.domain(g, n); d >= 0 && g.matches(pod.Namespace, pod.Labels, s.in.NamespaceLabels) {
					g.add(d, false)
				}
			}
		}
	}
	return nil
}

// domain is n's domain for g, or -1 when n has none.
func (s *solver) domain(g *group, n *node) int {
	if g.zone {
		return n.zone
	}
	return n.id
}

// place puts one pod on the first node that takes it, or on a new node.
func (s *solver) place(c *class, p *corev1.Pod) bool {
	allowed := s.allZones
	if c.ownZone {
		allowed = s.zoneAllowed(c)
	}
	var best *node
	var bestPlan plan
	for l := range s.lanes {
		if c.ownZone && l < len(s.zones) && allowed&(1<<l) == 0 {
			continue
		}
		if c.ownZone && l == s.laneNoZone() {
			continue
		}
		lane := s.lanes[l]
		advance := true
		for i := c.cursors[l]; i < len(lane); i++ {
			n := s.nodes[lane[i]]
			if best != nil && n.id > best.id {
				break
			}
			var v verdict
			var pl plan
			if l == s.laneUnpinned() && n.zone >= 0 {
				v = rejectMonotone // pinned since; it is in its zone's lane now
			} else if n.existing {
				v = s.checkExisting(c, n, allowed)
			} else {
				v, pl = s.checkNew(c, n, allowed)
			}
			if v == fits {
				best, bestPlan = n, pl
				break
			}
			if advance && v == rejectMonotone {
				c.cursors[l] = i + 1
			} else {
				advance = false
			}
		}
	}
	if best != nil {
		if best.existing {
			s.commitExisting(c, p, best)
		} else {
			s.commitNew(c, p, best, bestPlan)
		}
		return true
	}
	return s.placeNew(c, p, allowed)
}

func (s *solver) checkExisting(c *class, n *node, allowed uint64) verdict {
	if !c.req.Fits(n.free) {
		return rejectMonotone
	}
	if !s.existingMatches(c, n) {
		return rejectMonotone
	}
	if c.ownZone {
		if n.zone < 0 {
			return rejectMonotone
		}
		if allowed&(1<<n.zone) == 0 {
			return rejectChanging
		}
	}
	return s.hostnameVerdict(c, n.id)
}

func (s *solver) commitExisting(c *class, p *corev1.Pod, n *node) {
	n.free = n.free.Sub(c.req)
	n.placed = append(n.placed, p)
	s.count(c, n)
}

func (s *solver) count(c *class, n *node) {
	s.waiting = s.waiting.Sub(c.req)
	for _, g := range c.feeds {
		if d := s.domain(g, n); d >= 0 {
			g.add(d, false)
		}
	}
	for i := range c.topo {
		t := &c.topo[i]
		if t.kind == kindAnti && t.pos < 0 {
			if d := s.domain(t.g, n); d >= 0 {
				t.g.add(d, true)
			}
		}
	}
}

// plan is how a pod goes on a new node: the term it uses and the zones and
// capacity types left.
type plan struct {
	term       int
	zones, cts uint64
}

// usable reports whether type i can still be the node's type after adding
// need, within zones and cts, and within the pool's limits.
func (n *node) usable(i int32, need Resources, zones, cts uint64) bool {
	t := &n.pool.types[i]
	if !need.Fits(t.alloc) || !t.available(zones, cts) {
		return false
	}
	if n.pool.limited {
		// The node's charge moves from its current cheapest type to this
		// one; the difference must fit what the pool has left.
		for r := range NumResources {
			if n.pool.remaining[r] != Unlimited && t.it.Capacity[r]-n.charge[r] > n.pool.remaining[r] {
				return false
			}
		}
	}
	return true
}

func (s *solver) checkNew(c *class, n *node, allowed uint64) (verdict, plan) {
	terms := c.poolTerms[n.pool.idx]
	if len(terms) == 0 {
		return rejectMonotone, plan{}
	}
	need := n.req.Add(c.req)
	if !need.Fits(n.maxAlloc) {
		return rejectMonotone, plan{}
	}
	if v := s.hostnameVerdict(c, n.id); v != fits {
		return v, plan{}
	}
	changing := false
	for ti := range terms {
		t := &terms[ti]
		zones, cts := n.zones&t.zones, n.cts&t.cts
		if zones == 0 || cts == 0 || !customCompatible(n.custom, t.custom) {
			continue
		}
		if c.ownZone {
			zones &= allowed
			if zones == 0 {
				changing = true
				continue
			}
		}
		if c.zoneRelevant && n.zone < 0 {
			z, ok := s.pickZone(c, n, t, need, zones, cts)
			if !ok {
				continue
			}
			zones = 1 << z
		} else if !s.anyUsable(n, t, need, zones, cts) {
			continue
		}
		if len(n.pool.minValues) > 0 && !s.minValuesHold(n, t, need, zones, cts) {
			continue
		}
		if len(n.placed) > 0 && !s.worthGrowing(c, n, t, need, zones, cts) {
			s.maybeFreeze(c, n)
			continue
		}
		return fits, plan{term: ti, zones: zones, cts: cts}
	}
	if changing {
		return rejectChanging, plan{}
	}
	return rejectMonotone, plan{}
}

// anyUsable looks for a type that still fits, from the largest end, where
// one is most likely.
func (s *solver) anyUsable(n *node, t *shape, need Resources, zones, cts uint64) bool {
	for k := len(n.cands) - 1; k >= 0; k-- {
		i := n.cands[k]
		if t.types.has(int(i)) && n.usable(i, need, zones, cts) {
			return true
		}
	}
	return false
}

// pickZone chooses the zone an unpinned node is pinned to for a pod that
// topology counts by zone: the least loaded zone for the groups the class
// spreads over or feeds, among those where a type still fits.
func (s *solver) pickZone(c *class, n *node, t *shape, need Resources, zones, cts uint64) (int, bool) {
	best, bestScore := -1, int64(math.MaxInt64)
	for m := zones; m != 0; m &= m - 1 {
		z := bits.TrailingZeros64(m)
		var score int64
		for i := range c.topo {
			if tp := &c.topo[i]; tp.g.zone && tp.kind == kindSpread && c.active(tp.pos) {
				score += int64(tp.g.count(z))
			}
		}
		for _, g := range c.feeds {
			if g.zone {
				score += int64(g.count(z))
			}
		}
		if score < bestScore && s.anyUsable(n, t, need, 1<<z, cts) {
			best, bestScore = z, score
		}
	}
	return best, best >= 0
}

// minValuesHold checks the pool's minValues over the types that would be
// left.
func (s *solver) minValuesHold(n *node, t *shape, need Resources, zones, cts uint64) bool {
	for _, r := range n.pool.minValues {
		seen := map[string]bool{}
		switch r.Key {
		case LabelZone, LabelCapacityType:
			for _, i := range n.cands {
				if !t.types.has(int(i)) || !n.usable(i, need, zones, cts) {
					continue
				}
				pt := &n.pool.types[i]
				for _, o := range pt.offers {
					if zones&(1<<o.zone) != 0 && cts&(1<<o.ct) != 0 {
						if r.Key == LabelZone {
							seen[s.zones[o.zone]] = true
						} else {
							seen[s.cts[o.ct]] = true
						}
					}
				}
			}
		default:
			if vals, ok := intersectCustom(n.custom, t.custom); ok && vals[r.Key] != nil {
				for _, v := range vals[r.Key] {
					seen[v] = true
				}
				break
			}
			for _, i := range n.cands {
				if t.types.has(int(i)) && n.usable(i, need, zones, cts) {
					if v, ok := n.pool.types[i].labels[r.Key]; ok {
						seen[v] = true
					}
				}
			}
		}
		if len(seen) < r.MinValues {
			return false
		}
	}
	return true
}

func (s *solver) commitNew(c *class, p *corev1.Pod, n *node, pl plan) {
	t := &c.poolTerms[n.pool.idx][pl.term]
	need := n.req.Add(c.req)
	resort := pl.zones != n.zones || pl.cts != n.cts
	kept := n.cands[:0]
	for _, i := range n.cands {
		if t.types.has(int(i)) && n.usable(i, need, pl.zones, pl.cts) {
			kept = append(kept, i)
		}
	}
	n.cands = kept
	n.req, n.zones, n.cts = need, pl.zones, pl.cts
	n.custom, _ = intersectCustom(n.custom, t.custom)
	if resort {
		s.sortByPrice(n)
	}
	n.maxAlloc = Resources{}
	for _, i := range n.cands {
		n.maxAlloc = maxResources(n.maxAlloc, n.pool.types[i].alloc)
	}
	if n.pool.limited {
		charge := n.pool.types[n.cands[0]].it.Capacity
		for r := range NumResources {
			if n.pool.remaining[r] != Unlimited {
				n.pool.remaining[r] -= charge[r] - n.charge[r]
			}
		}
		n.charge = charge
	}
	if n.zone < 0 && bits.OnesCount64(n.zones) == 1 {
		n.zone = bits.TrailingZeros64(n.zones)
		s.lanes[n.zone] = append(s.lanes[n.zone], int32(n.id))
	}
	n.placed = append(n.placed, p)
	s.count(c, n)
}

func (s *solver) sortByPrice(n *node) {
	if cap(s.prices) < len(n.pool.types) {
		s.prices = make([]float64, len(n.pool.types))
	}
	for _, i := range n.cands {
		s.prices[i] = n.pool.types[i].price(n.zones, n.cts)
	}
	cmp := func(a, b int32) int {
		pa, pb := s.prices[a], s.prices[b]
		switch {
		case pa < pb:
			return -1
		case pa > pb:
			return 1
		}
		return int(a - b)
	}
	if !slices.IsSortedFunc(n.cands, cmp) {
		slices.SortFunc(n.cands, cmp)
	}
}

// placeNew opens a node for the pod in the heaviest pool that can take it,
// the cheapest among pools of equal weight.
func (s *solver) placeNew(c *class, p *corev1.Pod, allowed uint64) bool {
	var best *node
	var bestPlan plan
	bestPrice := math.Inf(1)
	for _, pl := range s.pools {
		if best != nil && pl.np.Weight < best.pool.np.Weight {
			break
		}
		if pl.err != nil || len(c.poolTerms[pl.idx]) == 0 {
			continue
		}
		n := &node{id: len(s.nodes), pool: pl, zone: -1, zones: pl.base.zones, cts: pl.base.cts, custom: pl.base.custom,
			cands: pl.all, maxAlloc: pl.maxAlloc}
		v, plan := s.checkNew(c, n, allowed)
		if v != fits {
			continue
		}
		price := math.Inf(1)
		t := &c.poolTerms[pl.idx][plan.term]
		need := c.req
		for _, i := range n.cands {
			if t.types.has(int(i)) && n.usable(i, need, plan.zones, plan.cts) {
				price = pl.types[i].price(plan.zones, plan.cts)
				break
			}
		}
		if price < bestPrice {
			best, bestPlan, bestPrice = n, plan, price
		}
	}
	if best == nil {
		return false
	}
	best.cands = slices.Clone(best.pool.all)
	best.pool.seq++
	best.name = fmt.Sprintf("%s-%d", best.pool.np.Name, best.pool.seq)
	s.nodes = append(s.nodes, best)
	s.commitNew(c, p, best, bestPlan)
	if best.zone < 0 {
		s.lanes[s.laneUnpinned()] = append(s.lanes[s.laneUnpinned()], int32(best.id))
	}
	return true
}
