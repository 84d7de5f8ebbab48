package disruption

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// Options tune the decisions. The zero value is usable: Default fills it.
type Options struct {
	// MinPriceImprovement is the least $/h a consolidation must save, and
	// MinPriceImprovementPercent the least share (0-100) of the candidates'
	// price; the larger applies. Savings must always be positive.
	MinPriceImprovement        float64
	MinPriceImprovementPercent float64
	// ValidationDelay is how long a consolidation waits before it is
	// re-simulated and executed. Default 15s.
	ValidationDelay time.Duration
	// MultiNodeMaxCandidates bounds the candidates multi-node consolidation
	// searches over. Default 100.
	MultiNodeMaxCandidates int
	// MultiNodeTimeout bounds the multi-node search; the best plan found by
	// then is used. Default 10s.
	MultiNodeTimeout time.Duration
	// OneToMany lets single-node consolidation replace a node with up to
	// MaxReplacements cheaper nodes (karpenter #1442). Default off; then
	// MaxReplacements is 1. Default MaxReplacements with OneToMany is 3.
	OneToMany       bool
	MaxReplacements int
	// Repair is when unhealthy nodes are replaced. Default
	// DefaultRepairPolicy.
	Repair *RepairPolicy
}

// Default returns o with its defaults filled in.
func (o Options) Default() Options {
	if o.ValidationDelay == 0 {
		o.ValidationDelay = 15 * time.Second
	}
	if o.MultiNodeMaxCandidates == 0 {
		o.MultiNodeMaxCandidates = 100
	}
	if o.MultiNodeTimeout == 0 {
		o.MultiNodeTimeout = 10 * time.Second
	}
	switch {
	case !o.OneToMany:
		o.MaxReplacements = 1
	case o.MaxReplacements == 0:
		o.MaxReplacements = 3
	}
	if o.Repair == nil {
		p := DefaultRepairPolicy()
		o.Repair = &p
	}
	return o
}

// Validate checks the options.
func (o Options) Validate() error {
	switch {
	case o.MinPriceImprovement < 0:
		return fmt.Errorf("minimum price improvement %v $/h is negative", o.MinPriceImprovement)
	case o.MinPriceImprovementPercent < 0 || o.MinPriceImprovementPercent >= 100:
		return fmt.Errorf("minimum price improvement %v%% is outside [0, 100)", o.MinPriceImprovementPercent)
	case o.ValidationDelay < 0:
		return fmt.Errorf("validation delay %s is negative", o.ValidationDelay)
	case o.MaxReplacements < 0:
		return fmt.Errorf("max replacements %d is negative", o.MaxReplacements)
	}
	return nil
}

// Engine makes disruption decisions. It holds no cluster state and is safe
// for concurrent use.
type Engine struct {
	opts Options
	// noPrune turns off the price bounds that skip simulations which cannot
	// pay and the node filter in simulate: every candidate is simulated
	// against every node, as Karpenter does (benchmarks compare).
	noPrune bool
}

// New returns an engine with opts (defaults filled in).
func New(opts Options) (*Engine, error) {
	opts = opts.Default()
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("disruption options: %w", err)
	}
	return &Engine{opts: opts}, nil
}

// Options returns the engine's options, defaults filled in.
func (e *Engine) Options() Options { return e.opts }

// round is one Decide call's view: the cluster, the clock and the budget
// left per pool and reason.
type round struct {
	e   *Engine
	c   *Cluster
	now time.Time
	// base are the surviving nodes as the scheduler sees them, in c.Nodes
	// order; idx maps a node to its index there.
	base  []scheduling.ExistingNode
	idx   map[*Node]int
	pools []scheduling.NodePool
	total map[string]int
	busy  map[string]int
	// free is each surviving node's free capacity (by base index) and
	// freeAll their sum.
	free    []scheduling.Resources
	freeAll scheduling.Resources
	// perUnit is the least $/h per unit of CPU and memory of any offering,
	// for the replacement-cost lower bound.
	perUnit [scheduling.NumResources]float64
	scratch []scheduling.ExistingNode
	// antiAffinity: some pod holds a required pod anti-affinity term, so
	// simulations must see every node.
	antiAffinity bool
}

func (e *Engine) newRound(c *Cluster, now time.Time) *round {
	r := &round{e: e, c: c, now: now, idx: make(map[*Node]int, len(c.Nodes)), total: map[string]int{}, busy: map[string]int{}}
	for _, n := range c.Nodes {
		r.total[n.Pool]++
		if n.Disrupting {
			r.busy[n.Pool]++
			continue
		}
		r.idx[n] = len(r.base)
		pods := make([]*corev1.Pod, len(n.Pods))
		for i, p := range n.Pods {
			pods[i] = p.Pod
		}
		for _, p := range n.Pods {
			if a := p.Pod.Spec.Affinity; a != nil && a.PodAntiAffinity != nil && len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) > 0 {
				r.antiAffinity = true
			}
		}
		req := n.Requested()
		r.base = append(r.base, scheduling.ExistingNode{
			Name: n.Name, Labels: n.Labels, Taints: n.Taints, Allocatable: n.Allocatable,
			Requested: req, Pods: pods, InFlight: !n.Initialized,
		})
		free := positive(n.Allocatable.Sub(req))
		r.free = append(r.free, free)
		r.freeAll = r.freeAll.Add(free)
	}
	names := make([]string, 0, len(c.Pools))
	for name := range c.Pools {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		r.pools = append(r.pools, c.Pools[name].Scheduling)
	}
	for _, d := range []scheduling.Resource{scheduling.CPU, scheduling.Memory} {
		r.perUnit[d] = math.Inf(1)
	}
	for _, p := range r.pools {
		for _, t := range p.InstanceTypes {
			for _, o := range t.Offerings {
				for _, d := range []scheduling.Resource{scheduling.CPU, scheduling.Memory} {
					if o.Available && t.Allocatable[d] > 0 {
						r.perUnit[d] = min(r.perUnit[d], o.Price/float64(t.Allocatable[d]))
					}
				}
			}
		}
	}
	return r
}

// cheapestHolding is the price of the cheapest available offering whose
// type's allocatable holds req: what one replacement for req costs at least.
func (r *round) cheapestHolding(req scheduling.Resources) float64 {
	best := math.Inf(1)
	for _, p := range r.pools {
		for _, t := range p.InstanceTypes {
			if !req.Fits(t.Allocatable) {
				continue
			}
			for _, o := range t.Offerings {
				if o.Available {
					best = min(best, o.Price)
				}
			}
		}
	}
	return best
}

func positive(r scheduling.Resources) scheduling.Resources {
	for i := range r {
		r[i] = max(r[i], 0)
	}
	return r
}

// lowerBound is the least that new nodes holding req can cost: no offering
// sells CPU or memory cheaper than perUnit.
func (r *round) lowerBound(req scheduling.Resources) float64 {
	lb := 0.0
	for _, d := range []scheduling.Resource{scheduling.CPU, scheduling.Memory} {
		if req[d] > 0 {
			lb = max(lb, float64(req[d])*r.perUnit[d])
		}
	}
	return lb
}

// left is how many more nodes of pool may be disrupted for reason.
func (r *round) left(pool string, reason v1.DisruptionReason) int {
	p := r.c.Pools[pool]
	if p == nil {
		return 0
	}
	return max(Allowed(p.Budgets, reason, r.total[pool], r.now)-r.busy[pool], 0)
}

// Decide returns the next command, or nil when nothing should be disrupted
// now. Methods are tried in order and the first with a command wins:
// repair, expiry, drift, emptiness, multi-node and single-node
// consolidation. Budgets are charged with the nodes already disrupting;
// the caller reserves the command in a Ledger before executing it.
func (e *Engine) Decide(ctx context.Context, c *Cluster, now time.Time) (*Command, error) {
	r := e.newRound(c, now)
	for _, m := range []func(context.Context) (*Command, error){r.repair, r.expiry, r.drift, r.emptiness, r.multiNode, r.singleNode} {
		cmd, err := m(ctx)
		if err != nil {
			return nil, err
		}
		if cmd != nil {
			cmd.Decided = now
			return cmd, nil
		}
	}
	return nil, nil
}

// repair picks one node that has been unhealthy past its toleration, in a
// pool where the guard allows repair. Its pods are not simulated: they go
// back to pending and the provisioner places them, as in Karpenter.
func (r *round) repair(context.Context) (*Command, error) {
	pol := r.e.opts.Repair
	bad := map[string]int{}
	type cand struct {
		n   *Node
		why string
	}
	var cands []cand
	for _, n := range r.c.Nodes {
		isBad, repair, why := pol.unhealthy(n, r.now)
		if isBad {
			bad[n.Pool]++
		}
		if repair && !n.Disrupting {
			cands = append(cands, cand{n, why})
		}
	}
	for _, cd := range cands {
		n := cd.n
		if float64(bad[n.Pool]) > pol.MaxUnhealthyShare*float64(r.total[n.Pool]) {
			continue
		}
		if r.left(n.Pool, v1.ReasonUnhealthy) < 1 {
			continue
		}
		return &Command{Method: MethodRepair, Reason: v1.ReasonUnhealthy, Candidates: []*Node{n}, Price: n.Price,
			PodsMoved: len(n.Reschedulable()), Why: cd.why}, nil
	}
	return nil, nil
}

// expiry picks the oldest expired node and simulates its replacements; the
// command goes ahead even when some pods fit nowhere.
func (r *round) expiry(ctx context.Context) (*Command, error) {
	var cands []*Node
	for _, n := range r.c.Nodes {
		if !n.Disrupting && n.Initialized && Expired(n, r.now) && r.left(n.Pool, v1.ReasonExpired) > 0 {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return nil, nil
	}
	n := slices.MinFunc(cands, func(a, b *Node) int { return a.Created.Compare(b.Created) })
	res, err := r.simulate(ctx, []*Node{n}, true)
	if err != nil {
		return nil, err
	}
	cmd := r.command(MethodExpiry, v1.ReasonExpired, []*Node{n}, res)
	cmd.Why = fmt.Sprintf("created %s, expireAfter %s", n.Created.UTC().Format(time.RFC3339), *n.ExpireAfter)
	return cmd, nil
}

// drift picks the oldest drifted node whose pods all fit on the others plus
// new nodes, within the Drifted budget and PodDisruptionBudgets.
func (r *round) drift(ctx context.Context) (*Command, error) {
	type cand struct {
		n   *Node
		why string
	}
	var cands []cand
	for _, n := range r.c.Nodes {
		if !r.gracefulCandidate(n) {
			continue
		}
		if why := Drifted(n, r.c.Pools[n.Pool], r.c.AMIs); why != "" && r.left(n.Pool, v1.ReasonDrifted) > 0 {
			cands = append(cands, cand{n, why})
		}
	}
	slices.SortStableFunc(cands, func(a, b cand) int { return a.n.Created.Compare(b.n.Created) })
	for _, cd := range cands {
		res, err := r.simulate(ctx, []*Node{cd.n}, true)
		if err != nil {
			return nil, err
		}
		if len(res.Unschedulable) > 0 {
			continue
		}
		cmd := r.command(MethodDrift, v1.ReasonDrifted, []*Node{cd.n}, res)
		cmd.Why = cd.why
		return cmd, nil
	}
	return nil, nil
}

// gracefulCandidate: initialized, not disrupting, no do-not-disrupt on the
// node or its pods, and its pods' PDBs allow their eviction.
func (r *round) gracefulCandidate(n *Node) bool {
	if !n.Initialized || n.Disrupting || n.DoNotDisrupt || r.c.Pools[n.Pool] == nil || n.BlockedByPod() {
		return false
	}
	ok, _ := pdbsAllow(r.c.PDBs, n.Pods)
	return ok
}

// consolidatable adds consolidation's own rules: the pool consolidates and
// consolidateAfter has passed since the last pod event.
func (r *round) consolidatable(n *Node) bool {
	if !r.gracefulCandidate(n) {
		return false
	}
	p := r.c.Pools[n.Pool]
	if p.ConsolidateAfter == nil {
		return false
	}
	since := n.LastPodEvent
	if n.Created.After(since) {
		since = n.Created
	}
	return !r.now.Before(since.Add(*p.ConsolidateAfter))
}

// emptiness deletes every consolidatable empty node, the most expensive
// first, within each pool's Empty budget.
func (r *round) emptiness(context.Context) (*Command, error) {
	var cands []*Node
	for _, n := range r.c.Nodes {
		if n.Empty() && r.consolidatable(n) {
			cands = append(cands, n)
		}
	}
	slices.SortStableFunc(cands, func(a, b *Node) int { return cmp.Compare(b.Price, a.Price) })
	taken := map[string]int{}
	var picked []*Node
	for _, n := range cands {
		if taken[n.Pool] < r.left(n.Pool, v1.ReasonEmpty) {
			taken[n.Pool]++
			picked = append(picked, n)
		}
	}
	if len(picked) == 0 {
		return nil, nil
	}
	cmd := &Command{Method: MethodEmptiness, Reason: v1.ReasonEmpty, Candidates: picked, Placement: map[types.UID]string{}}
	for _, n := range picked {
		cmd.Price += n.Price
	}
	return cmd, nil
}

// underutilized are the nodes single- and multi-node consolidation may
// take, best first: by savings per disruption cost ($/h over 1 + the sum of
// PodCost), then by name for determinism.
func (r *round) underutilized() []*Node {
	var cands []*Node
	for _, n := range r.c.Nodes {
		if p := r.c.Pools[n.Pool]; p != nil && p.Policy != v1.ConsolidationWhenEmpty && r.consolidatable(n) {
			cands = append(cands, n)
		}
	}
	key := func(n *Node) float64 { return n.Price / (1 + n.DisruptionCost()) }
	slices.SortStableFunc(cands, func(a, b *Node) int {
		return cmp.Or(cmp.Compare(key(b), key(a)), cmp.Compare(a.Name, b.Name))
	})
	return cands
}

// multiNode finds the longest prefix of the ordered candidates (within
// budgets) whose pods fit on the other nodes plus at most one new node that
// saves enough: a binary search over the prefix length, as Karpenter does.
// Feasibility is not monotone in the prefix length, so this is a heuristic;
// single-node consolidation covers what it misses.
func (r *round) multiNode(ctx context.Context) (*Command, error) {
	var cands []*Node
	taken := map[string]int{}
	for _, n := range r.underutilized() {
		if len(cands) == r.e.opts.MultiNodeMaxCandidates {
			break
		}
		if taken[n.Pool] < r.left(n.Pool, v1.ReasonUnderutilized) {
			taken[n.Pool]++
			cands = append(cands, n)
		}
	}
	if len(cands) < 2 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.e.opts.MultiNodeTimeout)
	defer cancel()
	var best *Command
	lo, hi := 2, len(cands)
	for lo <= hi {
		mid := (lo + hi) / 2
		cmd, err := r.consolidate(ctx, MethodMultiNode, cands[:mid], 1)
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			break // the best so far stands
		}
		if err != nil {
			return nil, err
		}
		if cmd != nil {
			best, lo = cmd, mid+1
		} else {
			hi = mid - 1
		}
	}
	return best, nil
}

// singleNode takes the first candidate, in order, whose pods fit on the
// other nodes, or on them plus cheaper replacements (one, or up to
// MaxReplacements with OneToMany).
func (r *round) singleNode(ctx context.Context) (*Command, error) {
	for _, n := range r.underutilized() {
		if r.left(n.Pool, v1.ReasonUnderutilized) < 1 {
			continue
		}
		cmd, err := r.consolidate(ctx, MethodSingleNode, []*Node{n}, r.e.opts.MaxReplacements)
		if err != nil {
			return nil, err
		}
		if cmd != nil {
			return cmd, nil
		}
	}
	return nil, nil
}

// consolidate simulates removing cands and returns the command when it is
// worth it: every pod fits, at most maxNew replacements, and the candidates'
// price less the replacements' worst-case price is at least the minimum
// improvement. It checks PDBs over the whole set.
func (r *round) consolidate(ctx context.Context, method string, cands []*Node, maxNew int) (*Command, error) {
	var pods []*Pod
	var price float64
	for _, n := range cands {
		pods = append(pods, n.Pods...)
		price += n.Price
	}
	if ok, _ := pdbsAllow(r.c.PDBs, pods); !ok {
		return nil, nil
	}
	need := r.e.minImprovement(price)
	if need > price {
		return nil, nil
	}
	// Deleting outright is tried first: cheap, and the best outcome. It
	// cannot work when the pods need more than the others have free; then
	// the excess has to go on new nodes, which must still pay.
	var moving scheduling.Resources
	free := r.freeAll
	for _, n := range cands {
		for _, p := range n.Reschedulable() {
			moving = moving.Add(p.Requests)
		}
		if i, ok := r.idx[n]; ok {
			free = free.Sub(r.free[i])
		}
	}
	deficit := positive(moving.Sub(free))
	var res scheduling.Result
	var err error
	if deficit.IsZero() || r.e.noPrune {
		if res, err = r.simulate(ctx, cands, false); err != nil {
			return nil, err
		}
	} else {
		res.Unschedulable = []scheduling.PodError{{}}
	}
	if len(res.Unschedulable) > 0 {
		if maxNew == 0 {
			return nil, nil
		}
		if !r.e.noPrune {
			left := deficit
			if res.Unschedulable[0].Pod != nil {
				left = scheduling.Resources{}
				for _, u := range res.Unschedulable {
					q, _ := scheduling.PodRequests(u.Pod)
					left = left.Add(q)
				}
			}
			if r.lowerBound(left) > price-need || (maxNew == 1 && r.cheapestHolding(left) > price-need) {
				return nil, nil
			}
		}
		if res, err = r.simulate(ctx, cands, true); err != nil {
			return nil, err
		}
		if len(res.Unschedulable) > 0 {
			return nil, nil
		}
		ok := len(res.NewNodes) <= maxNew && narrowReplacements(res.NewNodes, price-need)
		if !ok && len(res.NewNodes) > 1 {
			// Solve may split pods over several cheap nodes; one node that
			// holds them all can still beat the candidates.
			if res, ok, err = r.packOne(ctx, cands, res, price-need); err != nil {
				return nil, err
			}
		}
		if !ok {
			return nil, nil
		}
	}
	return r.command(method, v1.ReasonUnderutilized, cands, res), nil
}

// minImprovement is the least saving a consolidation of candidates costing
// price must bring: the larger of the absolute and percentage minimums, and
// always more than nothing.
func (e *Engine) minImprovement(price float64) float64 {
	return max(e.opts.MinPriceImprovement, price*e.opts.MinPriceImprovementPercent/100, 1e-9)
}

// simulate places the candidates' pods on the surviving nodes, and with
// withPools on new nodes too.
func (r *round) simulate(ctx context.Context, cands []*Node, withPools bool) (scheduling.Result, error) {
	skip := make(map[int]bool, len(cands))
	var pods []*corev1.Pod
	// Without pod (anti-)affinity or topology spread in play, a node that
	// cannot hold even the smallest moving pod plays no part, and leaving
	// it out makes Solve much cheaper on big clusters.
	prune := !r.antiAffinity && !r.e.noPrune
	smallest := scheduling.NoLimits()
	for _, n := range cands {
		if i, ok := r.idx[n]; ok {
			skip[i] = true
		}
		for _, p := range n.Pods {
			if p.DaemonSet {
				continue
			}
			pods = append(pods, p.Pod)
			if a := p.Pod.Spec.Affinity; len(p.Pod.Spec.TopologySpreadConstraints) > 0 || (a != nil && (a.PodAffinity != nil || a.PodAntiAffinity != nil)) {
				prune = false
			}
			for d := range smallest {
				smallest[d] = min(smallest[d], p.Requests[d])
			}
		}
	}
	// Solve does not keep its input, so one buffer serves every
	// simulation of the round (rounds are not shared between goroutines).
	nodes := r.scratch[:0]
	for i := range r.base {
		if !skip[i] && (!prune || smallest.Fits(r.free[i])) {
			nodes = append(nodes, r.base[i])
		}
	}
	r.scratch = nodes
	in := scheduling.Input{Pods: pods, Nodes: nodes, DaemonSets: r.c.DaemonSets, NamespaceLabels: r.c.NamespaceLabels}
	if withPools {
		in.NodePools = r.pools
	}
	res, err := scheduling.Solve(ctx, in)
	if err != nil {
		return res, fmt.Errorf("simulating the removal of %s: %w", nodeNames(cands), err)
	}
	return res, nil
}

// command turns a simulation into a command.
func (r *round) command(method string, reason v1.DisruptionReason, cands []*Node, res scheduling.Result) *Command {
	cmd := &Command{Method: method, Reason: reason, Candidates: cands, Replacements: res.NewNodes, Placement: map[types.UID]string{}}
	for _, n := range cands {
		cmd.Price += n.Price
		cmd.PodsMoved += len(n.Reschedulable())
	}
	for name, pods := range res.Existing {
		for _, p := range pods {
			cmd.Placement[p.UID] = name
		}
	}
	for _, nn := range res.NewNodes {
		for _, p := range nn.Pods {
			cmd.Placement[p.UID] = nn.Name
		}
		cmd.ReplacementPrice += worstPrice(nn)
	}
	return cmd
}

func nodeNames(ns []*Node) string {
	names := make([]string, len(ns))
	for i, n := range ns {
		names[i] = n.Name
	}
	return fmt.Sprint(names)
}

// offeringPrice is the highest price of t's available offerings in zones and
// capacity types (what a launch that may pick any of them could pay), and
// false when none is available.
func offeringPrice(t *scheduling.InstanceType, zones, cts []string) (float64, bool) {
	p, ok := 0.0, false
	for _, o := range t.Offerings {
		if o.Available && slices.Contains(zones, o.Zone) && slices.Contains(cts, o.CapacityType) {
			p, ok = max(p, o.Price), true
		}
	}
	return p, ok
}

// worstPrice is the most a replacement can cost.
func worstPrice(nn scheduling.NewNode) float64 {
	worst := 0.0
	for _, t := range nn.InstanceTypes {
		if p, ok := offeringPrice(t, nn.Zones, nn.CapacityTypes); ok {
			worst = max(worst, p)
		}
	}
	return worst
}

// narrowReplacements keeps, on each replacement, the capacity type of its
// cheapest offering and the instance types whose worst offering leaves the
// total within limit, so that whatever the launch picks the command saves
// what it promised. It reports false when even the cheapest choices pass
// limit.
func narrowReplacements(nns []scheduling.NewNode, limit float64) bool {
	floor := make([]float64, len(nns))
	sum := 0.0
	for i := range nns {
		nn := &nns[i]
		best, ct := math.Inf(1), ""
		for _, t := range nn.InstanceTypes {
			for _, o := range t.Offerings {
				if o.Available && o.Price < best && slices.Contains(nn.Zones, o.Zone) && slices.Contains(nn.CapacityTypes, o.CapacityType) {
					best, ct = o.Price, o.CapacityType
				}
			}
		}
		if ct == "" {
			return false
		}
		nn.CapacityTypes = []string{ct}
		floor[i] = math.Inf(1)
		for _, t := range nn.InstanceTypes {
			if p, ok := offeringPrice(t, nn.Zones, nn.CapacityTypes); ok {
				floor[i] = min(floor[i], p)
			}
		}
		sum += floor[i]
	}
	if sum > limit {
		return false
	}
	slack := (limit - sum) / float64(len(nns))
	for i := range nns {
		nn := &nns[i]
		var keep []*scheduling.InstanceType
		for _, t := range nn.InstanceTypes {
			if p, ok := offeringPrice(t, nn.Zones, nn.CapacityTypes); ok && p <= floor[i]+slack {
				keep = append(keep, t)
			}
		}
		nn.InstanceTypes = keep
		nn.Requirements = narrowRequirements(nn.Requirements, keep, nn.CapacityTypes)
		if nn.Labels != nil && len(nn.CapacityTypes) == 1 {
			nn.Labels = cloneMap(nn.Labels)
			nn.Labels[scheduling.LabelCapacityType] = nn.CapacityTypes[0]
		}
	}
	return true
}

// narrowRequirements rewrites the instance-type and capacity-type
// requirements to the narrowed lists.
func narrowRequirements(reqs []scheduling.Requirement, types []*scheduling.InstanceType, cts []string) []scheduling.Requirement {
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = t.Name
	}
	out := make([]scheduling.Requirement, 0, len(reqs)+2)
	for _, q := range reqs {
		if q.Key != scheduling.LabelInstanceType && q.Key != scheduling.LabelCapacityType {
			out = append(out, q)
		}
	}
	return append(out,
		scheduling.Requirement{Key: scheduling.LabelInstanceType, Operator: corev1.NodeSelectorOpIn, Values: names},
		scheduling.Requirement{Key: scheduling.LabelCapacityType, Operator: corev1.NodeSelectorOpIn, Values: cts})
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
