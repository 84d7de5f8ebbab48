package disruption

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// TestSimulation runs seeded random clusters through random events (pod
// churn, price changes, AMI and template changes, unhealthy nodes, time
// passing), with a provisioner that places pending pods and the disruption
// engine acting after each event, and checks at every step that:
//   - a graceful command never starts past its pool's budget (counted by
//     the harness, independently of the Ledger) or its pods' PDBs;
//   - PDBs are never broken except by a forceful drain past its deadline;
//   - consolidation evicts a pod only when the plan has a place for it,
//     and the pod fits there;
//   - each completed consolidation lowers the cluster's $/h strictly;
//   - every evicted pod runs again by the end of the run.
//
// CI runs the full 10,000 runs; -short runs 500.
func TestSimulation(t *testing.T) {
	runs := 10000
	if testing.Short() {
		runs = 500
	}
	// Runs are independent: spread them over the CPUs. t.Errorf is safe
	// from any goroutine; a fatal error in a run aborts that run only.
	var (
		stats  simStats
		mu     sync.Mutex
		wg     sync.WaitGroup
		failed atomic.Bool
		next   atomic.Int64
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				seed := next.Add(1) - 1
				if seed >= int64(runs) {
					return
				}
				s := newSim(t, uint64(seed))
				if !s.runSafely() {
					failed.Store(true)
					t.Errorf("seed %d failed; rerun with that seed to debug", seed)
					return
				}
				mu.Lock()
				stats.add(s.stats)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed.Load() {
		return
	}
	t.Logf("%d runs: %+v", runs, stats)
	// The harness must exercise every method, or it proves little.
	for m, n := range map[string]int{
		MethodEmptiness: stats.byMethod[MethodEmptiness], MethodSingleNode: stats.byMethod[MethodSingleNode],
		MethodMultiNode: stats.byMethod[MethodMultiNode], MethodDrift: stats.byMethod[MethodDrift],
		MethodExpiry: stats.byMethod[MethodExpiry], MethodRepair: stats.byMethod[MethodRepair],
	} {
		if n == 0 {
			t.Errorf("no %s command completed in %d runs", m, runs)
		}
	}
	if stats.evicted == 0 || stats.invalidated == 0 || stats.stalled == 0 {
		t.Errorf("harness did not exercise evictions, validation failures and PDB stalls: %+v", stats)
	}
}

type simStats struct {
	byMethod                                        map[string]int
	evicted, invalidated, stalled, forced, launched int
}

func (a *simStats) add(b simStats) {
	if a.byMethod == nil {
		a.byMethod = map[string]int{}
	}
	for k, v := range b.byMethod {
		a.byMethod[k] += v
	}
	a.evicted += b.evicted
	a.invalidated += b.invalidated
	a.stalled += b.stalled
	a.forced += b.forced
	a.launched += b.launched
}

// simPDB is a PDB of one app: at least minAvailable healthy pods.
type simPDB struct {
	app          string
	minAvailable int
}

// inflight is a command being executed.
type inflight struct {
	cmd   *Command
	start time.Time
	// launched maps a replacement's placeholder name to its node.
	launched map[string]*Node
	res      *Reservation
}

type sim struct {
	t      *testing.T
	seed   uint64
	r      *rand.Rand
	now    time.Time
	e      *Engine
	ledger *Ledger
	c      *Cluster
	types  []*scheduling.InstanceType
	pdbs   []simPDB
	// pending pods wait for the provisioner.
	pending []*Pod
	evicted map[types.UID]*Pod
	running []*inflight
	seq     int
	stats   simStats
	bad     bool
}

func newSim(t *testing.T, seed uint64) *sim {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	s := &sim{t: t, seed: seed, r: r, now: t0, evicted: map[types.UID]*Pod{}, ledger: NewLedger(), stats: simStats{byMethod: map[string]int{}}}
	opts := Options{}
	switch r.IntN(4) {
	case 0:
		opts.MinPriceImprovement = 0.01
	case 1:
		opts.MinPriceImprovementPercent = 10
	case 2:
		opts.OneToMany = true
	}
	s.e = mustEngine(opts)
	// Types of 1-16 vCPU, price per vCPU varying by type; spot is cheaper
	// and offered in one zone only for some types.
	for i, cpu := range []int64{1, 2, 4, 8, 16} {
		per := 0.04 + 0.02*r.Float64()
		it := itype(fmt.Sprintf("t%d.%dx", i, cpu), cpu, per*float64(cpu))
		it.Offerings[1].Price *= 1 + 0.1*r.Float64()
		spot := scheduling.Offering{Zone: "z1", CapacityType: "spot", Price: it.Offerings[0].Price * (0.3 + 0.5*r.Float64()), Available: true}
		it.Offerings = append(it.Offerings, spot)
		s.types = append(s.types, it)
	}
	s.c = &Cluster{Pools: map[string]*Pool{}, AMIs: map[string]map[string]string{"default": {"amd64": "ami-1"}}}
	for i := range 1 + r.IntN(2) {
		p := testPool(fmt.Sprintf("pool%d", i), s.types)
		if r.IntN(5) == 0 {
			p.Scheduling.Requirements = []scheduling.Requirement{{Key: scheduling.LabelCapacityType, Operator: corev1.NodeSelectorOpIn, Values: []string{"on-demand"}}}
			p.Requirements = p.Scheduling.Requirements
		}
		p.Scheduling.Weight = int32(r.IntN(3))
		switch r.IntN(4) {
		case 0:
			p.Budgets = []Budget{{Nodes: 1 + r.IntN(2)}}
		case 1:
			p.Budgets = []Budget{{Nodes: 20 + r.IntN(40), Percent: true}}
		case 2:
			p.Budgets = []Budget{{Nodes: 2}, {Nodes: 0, Reasons: []v1.DisruptionReason{v1.ReasonDrifted, v1.ReasonUnderutilized},
				Schedule: mustCron("0 */2 * * *"), Duration: time.Hour}}
		default:
			p.Budgets = []Budget{{Nodes: 100, Percent: true}}
		}
		if r.IntN(6) == 0 {
			p.Budgets = append(p.Budgets, Budget{Nodes: 1, Reasons: []v1.DisruptionReason{v1.ReasonExpired}})
		}
		d := time.Duration(r.IntN(3)) * 30 * time.Second
		p.ConsolidateAfter = &d
		if r.IntN(6) == 0 {
			p.Policy = v1.ConsolidationWhenEmpty
		}
		p.TemplateHash = "h1"
		s.c.Pools[p.Name] = p
	}
	for i := range 1 + r.IntN(3) {
		s.pdbs = append(s.pdbs, simPDB{app: fmt.Sprintf("app%d", i), minAvailable: 1 + r.IntN(2)})
	}
	for range 8 + r.IntN(30) {
		s.pending = append(s.pending, s.newPod())
	}
	s.provision()
	return s
}

func mustCron(spec string) cron.Schedule {
	b, err := ParseBudget(v1.Budget{Nodes: "0", Schedule: &spec, Duration: &metav1.Duration{Duration: time.Hour}})
	if err != nil {
		panic(err)
	}
	return b.Schedule
}

func (s *sim) newPod() *Pod {
	s.seq++
	app := fmt.Sprintf("app%d", s.r.IntN(5))
	cpu := []int64{100, 250, 500, 1000, 1500, 3000}[s.r.IntN(6)]
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", s.seq), Namespace: "default", UID: types.UID(fmt.Sprintf("p%d", s.seq)),
			Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU:    *resource.NewMilliQuantity(cpu, resource.DecimalSI),
			corev1.ResourceMemory: *resource.NewQuantity(cpu*gi/1000*int64(1+s.r.IntN(3)), resource.BinarySI),
		}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	if app == "app4" {
		// One per node.
		p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			TopologyKey: corev1.LabelHostname, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "app4"}}}}}}
	}
	if s.r.IntN(25) == 0 {
		p.Annotations = map[string]string{AnnotationDoNotDisrupt: "true"}
	}
	return NewPod(p)
}

// simAbort unwinds a run after a fatal error.
type simAbort struct{}

func (s *sim) errorf(format string, args ...any) {
	s.bad = true
	s.t.Errorf(format, args...)
}

func (s *sim) fatalf(format string, args ...any) {
	s.errorf(format, args...)
	panic(simAbort{})
}

// runSafely runs the simulation and reports whether it found no error.
func (s *sim) runSafely() (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			if _, abort := r.(simAbort); !abort {
				panic(r)
			}
			ok = false
		}
	}()
	s.run()
	return !s.bad
}

func (s *sim) run() {
	steps := 12 + s.r.IntN(12)
	for range steps {
		s.event()
		s.provision()
		s.refreshPDBs()
		s.progress()
		s.disrupt()
		if s.bad {
			return
		}
	}
	// Let everything finish: time passes with no new events.
	for range 30 {
		if len(s.running) == 0 {
			break
		}
		s.now = s.now.Add(10 * time.Minute)
		s.provision()
		s.refreshPDBs()
		s.progress()
	}
	s.provision()
	for uid, p := range s.evicted {
		if p.Pod.Spec.NodeName == "" {
			s.errorf("seed %d: evicted pod %s (%s) is not running at the end", s.seed, p.Pod.Name, uid)
		}
	}
}

// event applies one random event.
func (s *sim) event() {
	s.now = s.now.Add(time.Duration(10+s.r.IntN(1800)) * time.Second)
	switch k := s.r.IntN(10); {
	case k < 3: // scale in
		for range 1 + s.r.IntN(6) {
			s.deleteRandomPod()
		}
	case k < 5: // scale out
		for range 1 + s.r.IntN(6) {
			s.pending = append(s.pending, s.newPod())
		}
	case k == 5: // prices move
		it := s.types[s.r.IntN(len(s.types))]
		o := &it.Offerings[s.r.IntN(len(it.Offerings))]
		o.Price *= 0.7 + 0.6*s.r.Float64()
	case k == 6: // a new AMI, or a template change
		if s.r.IntN(2) == 0 {
			s.c.AMIs["default"]["amd64"] = fmt.Sprintf("ami-%d", s.seq)
		} else {
			for _, p := range s.c.Pools {
				p.TemplateHash = fmt.Sprintf("h%d", s.seq)
				break
			}
		}
	case k == 7: // a node goes unhealthy, or one recovers
		if len(s.c.Nodes) > 0 {
			n := s.c.Nodes[s.r.IntN(len(s.c.Nodes))]
			if len(n.Conditions) == 0 {
				typ := []corev1.NodeConditionType{"Ready", "KernelReady", "AcceleratedHardwareReady"}[s.r.IntN(3)]
				n.Conditions = []Condition{{Type: typ, Status: corev1.ConditionFalse, Since: s.now}}
			} else {
				n.Conditions = nil
			}
		}
	default: // time passes
		s.now = s.now.Add(time.Duration(s.r.IntN(4)) * time.Hour)
	}
	for _, n := range s.c.Nodes {
		n.Price = s.price(n)
	}
}

func (s *sim) price(n *Node) float64 {
	for _, it := range s.types {
		if it.Name == n.InstanceType {
			for _, o := range it.Offerings {
				if o.Zone == n.Zone && o.CapacityType == n.CapacityType {
					return o.Price
				}
			}
		}
	}
	s.fatalf("seed %d: node %s has no offering", s.seed, n.Name)
	return 0
}

func (s *sim) deleteRandomPod() {
	var all []*Pod
	for _, n := range s.c.Nodes {
		all = append(all, n.Reschedulable()...)
	}
	if len(all) == 0 {
		return
	}
	p := all[s.r.IntN(len(all))]
	n := s.nodeNamed(p.Pod.Spec.NodeName)
	n.Pods = slices.DeleteFunc(n.Pods, func(q *Pod) bool { return q == p })
	n.LastPodEvent = s.now
	delete(s.evicted, p.Pod.UID)
}

func (s *sim) nodeNamed(name string) *Node {
	for _, n := range s.c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// provision places pending pods as the provisioner would.
func (s *sim) provision() {
	if len(s.pending) == 0 {
		return
	}
	var nodes []scheduling.ExistingNode
	for _, n := range s.c.Nodes {
		if n.Disrupting {
			continue
		}
		nodes = append(nodes, scheduling.ExistingNode{Name: n.Name, Labels: n.Labels, Taints: n.Taints, Allocatable: n.Allocatable,
			Requested: n.Requested(), Pods: corePods(n.Pods), InFlight: !n.Initialized})
	}
	var pools []scheduling.NodePool
	for _, name := range sortedPoolNames(s.c) {
		pools = append(pools, s.c.Pools[name].Scheduling)
	}
	pods := make([]*corev1.Pod, len(s.pending))
	byUID := map[types.UID]*Pod{}
	for i, p := range s.pending {
		pods[i] = p.Pod
		byUID[p.Pod.UID] = p
	}
	res, err := scheduling.Solve(context.Background(), scheduling.Input{Pods: pods, Nodes: nodes, NodePools: pools})
	if err != nil {
		s.fatalf("seed %d: provisioning: %v", s.seed, err)
	}
	s.pending = s.pending[:0]
	for _, u := range res.Unschedulable {
		s.pending = append(s.pending, byUID[u.Pod.UID])
	}
	for name, placed := range res.Existing {
		n := s.nodeNamed(name)
		for _, p := range placed {
			s.bind(byUID[p.UID], n)
		}
	}
	for _, nn := range res.NewNodes {
		n := s.launch(nn, false)
		for _, p := range nn.Pods {
			s.bind(byUID[p.UID], n)
		}
	}
}

func sortedPoolNames(c *Cluster) []string {
	var names []string
	for n := range c.Pools {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func corePods(ps []*Pod) []*corev1.Pod {
	out := make([]*corev1.Pod, len(ps))
	for i, p := range ps {
		out[i] = p.Pod
	}
	return out
}

func (s *sim) bind(p *Pod, n *Node) {
	p.Pod.Spec.NodeName = n.Name
	p.Healthy = true
	n.Pods = append(n.Pods, p)
	n.LastPodEvent = s.now
}

// launch starts a node for nn. The provisioner takes the cheapest choice;
// disruption replacements take a random listed type and offering, so that
// the savings promise holds whatever the launch picks.
func (s *sim) launch(nn scheduling.NewNode, random bool) *Node {
	type choice struct {
		it *scheduling.InstanceType
		o  scheduling.Offering
	}
	var choices []choice
	for _, it := range nn.InstanceTypes {
		for _, o := range it.Offerings {
			if o.Available && slices.Contains(nn.Zones, o.Zone) && slices.Contains(nn.CapacityTypes, o.CapacityType) {
				choices = append(choices, choice{it, o})
			}
		}
	}
	if len(choices) == 0 {
		s.fatalf("seed %d: new node %s has no offering", s.seed, nn.Name)
	}
	ch := choices[0]
	if random {
		ch = choices[s.r.IntN(len(choices))]
	} else {
		for _, c := range choices {
			if c.o.Price < ch.o.Price {
				ch = c
			}
		}
	}
	s.seq++
	name := fmt.Sprintf("n%d", s.seq)
	n := testNode(name, nn.NodePool, ch.it)
	n.Zone, n.CapacityType, n.Price = ch.o.Zone, ch.o.CapacityType, ch.o.Price
	n.Labels[scheduling.LabelZone], n.Labels[scheduling.LabelCapacityType] = ch.o.Zone, ch.o.CapacityType
	n.Created, n.LastPodEvent = s.now, s.now
	n.TemplateHash, n.ImageID = s.c.Pools[nn.NodePool].TemplateHash, s.c.AMIs["default"]["amd64"]
	exp := time.Duration(4+s.r.IntN(20)) * time.Hour
	tgp := time.Hour
	n.ExpireAfter, n.TerminationGracePeriod = &exp, &tgp
	s.c.Nodes = append(s.c.Nodes, n)
	s.stats.launched++
	return n
}

// pdbState is a PDB's live allowed disruptions.
func (s *sim) pdbState() []*PDB {
	var out []*PDB
	for _, b := range s.pdbs {
		healthy := 0
		for _, n := range s.c.Nodes {
			for _, p := range n.Pods {
				if p.Pod.Labels["app"] == b.app && p.Healthy {
					healthy++
				}
			}
		}
		out = append(out, &PDB{Namespace: "default", Name: b.app, Selector: labels.SelectorFromSet(labels.Set{"app": b.app}),
			Allowed: max(healthy-b.minAvailable, 0)})
	}
	return out
}

func (s *sim) refreshPDBs() {
	// Pods bound in an earlier step are ready by now.
	for _, n := range s.c.Nodes {
		for _, p := range n.Pods {
			p.Healthy = true
		}
	}
	s.c.PDBs = s.pdbState()
}

func (s *sim) healthy(app string) int {
	k := 0
	for _, n := range s.c.Nodes {
		for _, p := range n.Pods {
			if p.Pod.Labels["app"] == app && p.Healthy {
				k++
			}
		}
	}
	return k
}

func (s *sim) totalCost() float64 {
	sum := 0.0
	for _, n := range s.c.Nodes {
		sum += n.Price
	}
	return sum
}

// disrupt decides, validates (consolidation) and starts a command.
func (s *sim) disrupt() {
	s.c.PDBs = s.pdbState() // the snapshot is taken now
	cmd, err := s.e.Decide(context.Background(), s.c, s.now)
	if err != nil {
		s.fatalf("seed %d: decide: %v", s.seed, err)
	}
	if cmd == nil {
		return
	}
	if cmd.Consolidation() {
		s.now = s.now.Add(s.e.Options().ValidationDelay)
		if s.r.IntN(4) == 0 {
			// Something changes during the validation delay.
			if s.r.IntN(2) == 0 {
				s.deleteRandomPod()
			} else {
				s.pending = append(s.pending, s.newPod())
				s.provision()
			}
		}
		s.c.PDBs = s.pdbState()
		valid, err := s.e.Validate(context.Background(), s.c, cmd, s.now)
		if err != nil {
			s.stats.invalidated++
			return
		}
		cmd = valid
	}
	s.checkStart(cmd)
	res, err := s.ledger.Reserve(s.c, cmd, s.now)
	if err != nil {
		s.errorf("seed %d: ledger refused %s: %v", s.seed, cmd.Decision(), err)
		return
	}
	before := s.totalCost()
	f := &inflight{cmd: cmd, start: s.now, launched: map[string]*Node{}, res: res}
	for _, n := range cmd.Candidates {
		n.Disrupting = true
		n.Taints = append(n.Taints, DisruptedTaint())
	}
	for _, nn := range cmd.Replacements {
		f.launched[nn.Name] = s.launch(nn, true)
	}
	s.running = append(s.running, f)
	if s.step(f) && cmd.Consolidation() {
		if after := s.totalCost(); after >= before {
			s.errorf("seed %d: %s: cluster $/h %.4f -> %.4f, not lower", s.seed, cmd.Decision(), before, after)
		}
	}
}

// checkStart: a graceful command starts within its budget and PDBs,
// counted from the world.
func (s *sim) checkStart(cmd *Command) {
	perPool := map[string]int{}
	for _, n := range cmd.Candidates {
		perPool[n.Pool]++
		if n.Disrupting {
			s.errorf("seed %d: %s: node %s already disrupting", s.seed, cmd.Decision(), n.Name)
		}
	}
	for pool, k := range perPool {
		total, busy := s.c.poolNodes(pool)
		if allowed := Allowed(s.c.Pools[pool].Budgets, cmd.Reason, total, s.now); busy+k > allowed {
			s.errorf("seed %d: %s: pool %s has %d disrupting, adds %d, budget %d", s.seed, cmd.Decision(), pool, busy, k, allowed)
		}
	}
	if cmd.Forceful() {
		return
	}
	var pods []*Pod
	for _, n := range cmd.Candidates {
		pods = append(pods, n.Pods...)
	}
	if ok, why := pdbsAllow(s.pdbState(), pods); !ok {
		s.errorf("seed %d: %s starts past a PDB: %s", s.seed, cmd.Decision(), why)
	}
}

// progress drives the commands in flight.
func (s *sim) progress() {
	for _, f := range slices.Clone(s.running) {
		s.step(f)
	}
}

// step drains f's candidates as far as PDBs allow and deletes them once
// empty; it reports whether f completed.
func (s *sim) step(f *inflight) bool {
	cmd := f.cmd
	done := true
	for _, n := range cmd.Candidates {
		for _, p := range n.Reschedulable() {
			if !s.evict(f, n, p) {
				done = false
			}
		}
	}
	if !done {
		return false
	}
	for _, n := range cmd.Candidates {
		s.c.Nodes = slices.DeleteFunc(s.c.Nodes, func(m *Node) bool { return m == n })
	}
	f.res.Release()
	s.running = slices.DeleteFunc(s.running, func(g *inflight) bool { return g == f })
	s.stats.byMethod[cmd.Method]++
	if cmd.Consolidation() {
		var replaced float64
		for _, n := range f.launched {
			replaced += n.Price
		}
		var removed float64
		for _, n := range cmd.Candidates {
			removed += n.Price
		}
		if replaced >= removed {
			s.errorf("seed %d: %s: replacements cost %.4f, candidates %.4f", s.seed, cmd.Decision(), replaced, removed)
		}
	}
	return true
}

// evict evicts p through a simulated Eviction API (which refuses what its
// PDB does not allow) unless a forceful command is past its deadline, and
// rebinds it where the plan said (consolidation) or leaves it pending.
func (s *sim) evict(f *inflight, n *Node, p *Pod) bool {
	cmd := f.cmd
	forced := false
	if ok, _ := pdbsAllow(s.pdbState(), []*Pod{p}); !ok || p.DoNotDisrupt {
		dl, has := DrainDeadline(cmd, n, f.start)
		if !has || s.now.Before(dl) {
			s.stats.stalled++
			return false
		}
		forced = true
		s.stats.forced++
	}
	healthyBefore := s.healthy(p.Pod.Labels["app"])
	n.Pods = slices.DeleteFunc(n.Pods, func(q *Pod) bool { return q == p })
	p.Pod.Spec.NodeName = ""
	p.Healthy = false
	s.evicted[p.Pod.UID] = p
	s.stats.evicted++
	for _, b := range s.pdbs {
		if b.app == p.Pod.Labels["app"] && !forced && healthyBefore >= b.minAvailable && s.healthy(b.app) < b.minAvailable {
			s.errorf("seed %d: %s: evicting %s broke pdb %s (%d healthy, min %d)", s.seed, cmd.Decision(), p.Pod.Name, b.app, s.healthy(b.app), b.minAvailable)
		}
	}
	if !cmd.Consolidation() {
		s.pending = append(s.pending, p)
		return true
	}
	target := cmd.Placement[p.Pod.UID]
	if target == "" {
		s.errorf("seed %d: %s evicted pod %s with no place in the plan", s.seed, cmd.Decision(), p.Pod.Name)
		s.pending = append(s.pending, p)
		return true
	}
	dest := f.launched[target]
	if dest == nil {
		dest = s.nodeNamed(target)
	}
	if dest == nil || dest.Disrupting || !dest.Requested().Add(p.Requests).Fits(dest.Allocatable) {
		s.errorf("seed %d: %s: pod %s does not fit its planned node %s", s.seed, cmd.Decision(), p.Pod.Name, target)
		s.pending = append(s.pending, p)
		return true
	}
	s.bind(p, dest)
	p.Healthy = false // ready at the next step
	return true
}
