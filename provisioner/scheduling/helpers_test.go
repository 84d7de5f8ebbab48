package scheduling

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
)

// podOpts builds test pods, in the manner of Karpenter's test.Pod builder.
type podOpts struct {
	name, ns     string
	labels       map[string]string
	cpu, mem     string
	extra        corev1.ResourceList
	nodeSelector map[string]string
	required     []corev1.NodeSelectorRequirement
	preferred    []corev1.PreferredSchedulingTerm
	tolerations  []corev1.Toleration
	spread       []corev1.TopologySpreadConstraint
	affinity     []corev1.PodAffinityTerm
	anti         []corev1.PodAffinityTerm
	prefAnti     []corev1.WeightedPodAffinityTerm
	prefAff      []corev1.WeightedPodAffinityTerm
}

func mkPod(o podOpts) *corev1.Pod {
	if o.ns == "" {
		o.ns = "default"
	}
	req := corev1.ResourceList{}
	if o.cpu != "" {
		req[corev1.ResourceCPU] = resource.MustParse(o.cpu)
	}
	if o.mem != "" {
		req[corev1.ResourceMemory] = resource.MustParse(o.mem)
	}
	for k, v := range o.extra {
		req[k] = v
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: o.name, Namespace: o.ns, Labels: o.labels, UID: types.UID(o.ns + "/" + o.name)},
		Spec: corev1.PodSpec{
			Containers:                []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Requests: req}}},
			NodeSelector:              o.nodeSelector,
			Tolerations:               o.tolerations,
			TopologySpreadConstraints: o.spread,
		},
	}
	aff := &corev1.Affinity{}
	used := false
	if len(o.required) > 0 || len(o.preferred) > 0 {
		aff.NodeAffinity = &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: o.preferred}
		if len(o.required) > 0 {
			aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: o.required}}}
		}
		used = true
	}
	if len(o.affinity) > 0 || len(o.prefAff) > 0 {
		aff.PodAffinity = &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: o.affinity,
			PreferredDuringSchedulingIgnoredDuringExecution: o.prefAff}
		used = true
	}
	if len(o.anti) > 0 || len(o.prefAnti) > 0 {
		aff.PodAntiAffinity = &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: o.anti,
			PreferredDuringSchedulingIgnoredDuringExecution: o.prefAnti}
		used = true
	}
	if used {
		p.Spec.Affinity = aff
	}
	return p
}

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

// diverseTypes re-creates the benchmark catalog from the spec:
// type i has i vCPU, 2i GiB and 10i pods, 100m and 10 MiB of overhead,
// spot in zone-1 and zone-2, on-demand in zone-1..3, priced
// 0.1 per vCPU + 0.1 per GB.
func diverseTypes(n int) []*InstanceType {
	var out []*InstanceType
	for i := 1; i <= n; i++ {
		var capa Resources
		capa[CPU] = int64(i) * 1000
		capa[Memory] = int64(i) * 2 << 30
		capa[Pods] = int64(i) * 10
		alloc := capa
		alloc[CPU] -= 100
		alloc[Memory] -= 10 << 20
		price := 0.1*float64(i) + 0.1*float64(capa[Memory])/1e9
		it := &InstanceType{Name: fmt.Sprintf("fake-it-%d", i), Arch: "amd64", Capacity: capa, Allocatable: alloc}
		for _, o := range []struct{ z, ct string }{{"zone-1", "spot"}, {"zone-2", "spot"}, {"zone-1", "on-demand"}, {"zone-2", "on-demand"}, {"zone-3", "on-demand"}} {
			it.Offerings = append(it.Offerings, Offering{Zone: o.z, CapacityType: o.ct, Price: price, Available: true})
		}
		out = append(out, it)
	}
	return out
}

// verify checks a result against the input independently of the solver:
// every pod accounted for once; capacity, taints, node affinity and pool
// limits on every node, whichever listed type and offering is launched;
// and the topology constraints that a final state can show.
func verify(t testing.TB, in Input, res Result) {
	t.Helper()
	seen := map[*corev1.Pod]int{}
	for _, ps := range res.Existing {
		for _, p := range ps {
			seen[p]++
		}
	}
	for _, n := range res.NewNodes {
		for _, p := range n.Pods {
			seen[p]++
		}
	}
	for _, e := range res.Unschedulable {
		seen[e.Pod]++
	}
	for _, p := range in.Pods {
		if seen[p] != 1 {
			t.Fatalf("pod %s appears %d times in the result", p.Name, seen[p])
		}
	}
	// where: the node each placed pod is on, with its label sets.
	type place struct {
		node   string
		zone   string // "" when the node has no single zone
		labels []map[string]string
	}
	where := map[*corev1.Pod]place{}
	pools := map[string]*NodePool{}
	for i := range in.NodePools {
		pools[in.NodePools[i].Name] = &in.NodePools[i]
	}
	for name, ps := range res.Existing {
		var e *ExistingNode
		for i := range in.Nodes {
			if in.Nodes[i].Name == name {
				e = &in.Nodes[i]
			}
		}
		if e == nil {
			t.Fatalf("result places pods on unknown node %s", name)
		}
		used := e.Requested
		for _, p := range ps {
			r, _ := PodRequests(p)
			used = used.Add(r)
			checkTaints(t, p, e.Taints, name)
		}
		if !used.Fits(e.Allocatable) {
			t.Fatalf("node %s: requested %s exceeds allocatable %s", name, used, e.Allocatable)
		}
		for _, p := range ps {
			where[p] = place{node: name, zone: e.Labels[LabelZone], labels: []map[string]string{e.Labels}}
		}
	}
	usage := map[string]Resources{}
	for _, n := range res.NewNodes {
		pool := pools[n.NodePool]
		if len(n.InstanceTypes) == 0 || len(n.Zones) == 0 || len(n.CapacityTypes) == 0 {
			t.Fatalf("new node %s lists no types, zones or capacity types", n.Name)
		}
		var req Resources
		for _, p := range n.Pods {
			r, _ := PodRequests(p)
			req = req.Add(r)
			checkTaints(t, p, pool.Taints, n.Name)
		}
		if req != n.Requests {
			t.Fatalf("new node %s: requests %s, pods add up to %s", n.Name, n.Requests, req)
		}
		var maxCap Resources
		var sets []map[string]string
		cheapest := math.Inf(1)
		for k, it := range n.InstanceTypes {
			ovh := daemonOverhead(in.DaemonSets, pool, it)
			if !req.Add(ovh).Fits(it.Allocatable) {
				t.Fatalf("new node %s: type %s allocatable %s < pods %s + daemonsets %s", n.Name, it.Name, it.Allocatable, req, ovh)
			}
			if k == 0 && ovh != n.Overhead {
				t.Fatalf("new node %s: overhead %s, want %s", n.Name, n.Overhead, ovh)
			}
			maxCap = maxResources(maxCap, it.Capacity)
			offered := false
			for _, o := range it.Offerings {
				if o.Available && slices.Contains(n.Zones, o.Zone) && slices.Contains(n.CapacityTypes, o.CapacityType) {
					offered = true
					if k == 0 {
						cheapest = min(cheapest, o.Price)
					}
					l := map[string]string{LabelInstanceType: it.Name, LabelArch: it.Arch, LabelOS: "linux",
						LabelZone: o.Zone, LabelCapacityType: o.CapacityType, LabelNodePool: pool.Name}
					for k, v := range it.Labels {
						l[k] = v
					}
					for k, v := range pool.Labels {
						l[k] = v
					}
					for k, v := range n.Labels {
						l[k] = v
					}
					sets = append(sets, l)
				}
			}
			if !offered {
				t.Fatalf("new node %s: type %s has no available offering in %v %v", n.Name, it.Name, n.Zones, n.CapacityTypes)
			}
		}
		if n.Price != cheapest {
			t.Fatalf("new node %s: price %v, cheapest offering of its first type is %v", n.Name, n.Price, cheapest)
		}
		for k := 1; k < len(n.InstanceTypes); k++ {
			if n.InstanceTypes[k].Offerings[0].Price < n.InstanceTypes[0].Offerings[0].Price && len(n.InstanceTypes[k].Offerings) == 1 {
				t.Fatalf("new node %s: types not cheapest first", n.Name)
			}
		}
		usage[n.NodePool] = usage[n.NodePool].Add(maxCap)
		zone := ""
		if len(n.Zones) == 1 {
			zone = n.Zones[0]
		}
		for _, p := range n.Pods {
			where[p] = place{node: n.Name, zone: zone, labels: sets}
		}
	}
	for name, u := range usage {
		if l := pools[name].Limits; l != nil && !u.Fits(*l) {
			t.Fatalf("nodepool %s: new capacity %s exceeds limits %s", name, u, *l)
		}
	}
	// Node affinity: every label set the node may end up with satisfies
	// the nodeSelector and one required term.
	for p, w := range where {
		for _, l := range w.labels {
			if !podMatchesNode(p, l, w.node) {
				t.Fatalf("pod %s on %s: node affinity does not hold for labels %v", p.Name, w.node, l)
			}
			if vr := in.VolumeRequirements[p.UID]; len(vr) > 0 && !reqsMatch(vr, l) {
				t.Fatalf("pod %s on %s: volume requirements do not hold for labels %v", p.Name, w.node, l)
			}
		}
	}
	// Topology, on the final state. Existing pods count too.
	type podAt struct {
		p *corev1.Pod
		place
	}
	var all []podAt
	for p, w := range where {
		all = append(all, podAt{p, w})
	}
	for i := range in.Nodes {
		for _, p := range in.Nodes[i].Pods {
			all = append(all, podAt{p, place{node: in.Nodes[i].Name, zone: in.Nodes[i].Labels[LabelZone]}})
		}
	}
	matching := func(s labels.Selector, ns string, domain func(place) string, d string, except *corev1.Pod) int {
		n := 0
		for _, q := range all {
			if q.p != except && q.p.Namespace == ns && domain(q.place) == d && s.Matches(labels.Set(q.p.Labels)) {
				n++
			}
		}
		return n
	}
	domainOf := func(key string) func(place) string {
		if key == LabelZone {
			return func(p place) string { return p.zone }
		}
		return func(p place) string { return p.node }
	}
	for p, w := range where {
		a := p.Spec.Affinity
		if a == nil {
			continue
		}
		if a.PodAntiAffinity != nil {
			for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
				s, _ := metav1.LabelSelectorAsSelector(term.LabelSelector)
				d := domainOf(term.TopologyKey)
				if d(w) == "" {
					t.Fatalf("pod %s has %s anti-affinity but its node %s has no single domain", p.Name, term.TopologyKey, w.node)
				}
				if n := matching(s, p.Namespace, d, d(w), p); n > 0 {
					t.Fatalf("pod %s: anti-affinity on %s violated by %d pods in %s", p.Name, term.TopologyKey, n, d(w))
				}
			}
		}
		if a.PodAffinity != nil {
			for _, term := range a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
				s, _ := metav1.LabelSelectorAsSelector(term.LabelSelector)
				d := domainOf(term.TopologyKey)
				if d(w) == "" {
					t.Fatalf("pod %s has %s affinity but its node %s has no single domain", p.Name, term.TopologyKey, w.node)
				}
				if matching(s, p.Namespace, d, d(w), nil) == 0 {
					t.Fatalf("pod %s: affinity on %s has no match in %s", p.Name, term.TopologyKey, d(w))
				}
			}
		}
	}
	// Anti-affinity is symmetric: a pod must not land where an existing
	// pod's anti-affinity selects it.
	for i := range in.Nodes {
		for _, q := range in.Nodes[i].Pods {
			if q.Spec.Affinity == nil || q.Spec.Affinity.PodAntiAffinity == nil {
				continue
			}
			for _, term := range q.Spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
				s, _ := metav1.LabelSelectorAsSelector(term.LabelSelector)
				d := domainOf(term.TopologyKey)
				qd := d(place{node: in.Nodes[i].Name, zone: in.Nodes[i].Labels[LabelZone]})
				for p, w := range where {
					if p.Namespace == q.Namespace && d(w) == qd && s.Matches(labels.Set(p.Labels)) {
						t.Fatalf("pod %s placed in %s, where existing pod %s's anti-affinity forbids it", p.Name, qd, q.Name)
					}
				}
			}
		}
	}
	// Spreads whose selected pods all carry the same constraint: the final
	// counts are within maxSkew (zones: over every zone the pool offers;
	// hostname: at most maxSkew per node).
	for p, w := range where {
		for _, c := range p.Spec.TopologySpreadConstraints {
			if c.WhenUnsatisfiable != corev1.DoNotSchedule {
				continue
			}
			s, _ := metav1.LabelSelectorAsSelector(c.LabelSelector)
			uniform := true
			for _, q := range all {
				if q.p.Namespace == p.Namespace && s.Matches(labels.Set(q.p.Labels)) && !slices.EqualFunc(q.p.Spec.TopologySpreadConstraints, p.Spec.TopologySpreadConstraints, func(a, b corev1.TopologySpreadConstraint) bool { return a.String() == b.String() }) {
					uniform = false
				}
			}
			if !uniform {
				continue
			}
			d := domainOf(c.TopologyKey)
			if d(w) == "" {
				t.Fatalf("pod %s spreads on %s but its node %s has no single domain", p.Name, c.TopologyKey, w.node)
			}
			if c.TopologyKey == LabelHostname {
				if n := matching(s, p.Namespace, d, d(w), nil); n > int(c.MaxSkew) {
					t.Fatalf("pod %s: %d matching pods on node %s, maxSkew %d", p.Name, n, w.node, c.MaxSkew)
				}
				continue
			}
			zones := eligibleZones(in, p)
			lo, hi := math.MaxInt, 0
			for z := range zones {
				n := matching(s, p.Namespace, d, z, nil)
				lo, hi = min(lo, n), max(hi, n)
			}
			if hi-lo > int(c.MaxSkew) {
				t.Fatalf("pod %s: zone spread skew %d > %d", p.Name, hi-lo, c.MaxSkew)
			}
		}
	}
}

func checkTaints(t testing.TB, p *corev1.Pod, taints []corev1.Taint, node string) {
	t.Helper()
	for i := range taints {
		if taints[i].Effect == corev1.TaintEffectPreferNoSchedule {
			continue
		}
		ok := false
		for j := range p.Spec.Tolerations {
			if p.Spec.Tolerations[j].ToleratesTaint(logr.Discard(), &taints[i], false) {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("pod %s on %s does not tolerate taint %s", p.Name, node, taints[i].ToString())
		}
	}
}

// daemonOverhead: the DaemonSets whose nodeSelector the type's labels and
// the pool's labels meet and whose tolerations cover the pool's taints.
func daemonOverhead(ds []*corev1.Pod, pool *NodePool, it *InstanceType) Resources {
	var sum Resources
	for _, d := range ds {
		l := map[string]string{LabelInstanceType: it.Name, LabelArch: it.Arch, LabelOS: "linux", LabelNodePool: pool.Name}
		for k, v := range it.Labels {
			l[k] = v
		}
		for k, v := range pool.Labels {
			l[k] = v
		}
		if !labels.SelectorFromSet(d.Spec.NodeSelector).Matches(labels.Set(l)) {
			continue
		}
		ok := true
		for i := range pool.Taints {
			tol := false
			for j := range d.Spec.Tolerations {
				if d.Spec.Tolerations[j].ToleratesTaint(logr.Discard(), &pool.Taints[i], false) {
					tol = true
				}
			}
			if !tol && pool.Taints[i].Effect != corev1.TaintEffectPreferNoSchedule {
				ok = false
			}
		}
		if ok {
			r, _ := PodRequests(d)
			sum = sum.Add(r)
		}
	}
	return sum
}

var ops = map[corev1.NodeSelectorOperator]selection.Operator{
	corev1.NodeSelectorOpIn: selection.In, corev1.NodeSelectorOpNotIn: selection.NotIn,
	corev1.NodeSelectorOpExists: selection.Exists, corev1.NodeSelectorOpDoesNotExist: selection.DoesNotExist,
	corev1.NodeSelectorOpGt: selection.GreaterThan, corev1.NodeSelectorOpLt: selection.LessThan,
}

func reqsMatch(reqs []Requirement, l map[string]string) bool {
	for _, r := range reqs {
		lr, err := labels.NewRequirement(r.Key, ops[r.Operator], r.Values)
		if err != nil || !lr.Matches(labels.Set(l)) {
			return false
		}
	}
	return true
}

func podMatchesNode(p *corev1.Pod, l map[string]string, node string) bool {
	if !labels.SelectorFromSet(p.Spec.NodeSelector).Matches(labels.Set(l)) {
		return false
	}
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return true
	}
	for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		ok := len(term.MatchExpressions)+len(term.MatchFields) > 0
		for _, e := range term.MatchExpressions {
			if !reqsMatch([]Requirement{{Key: e.Key, Operator: e.Operator, Values: e.Values}}, l) {
				ok = false
			}
		}
		for _, f := range term.MatchFields {
			if !reqsMatch([]Requirement{{Key: "n", Operator: f.Operator, Values: f.Values}}, map[string]string{"n": node}) {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// eligibleZones are the zone domains of a pod's zone spread: zones of the
// existing nodes its nodeSelector and required affinity match, and of the
// available offerings of pools it tolerates whose labels (type, offering,
// pool labels, each value of the pool's own In keys) the pool's
// requirements and the pod's affinity both accept.
func eligibleZones(in Input, p *corev1.Pod) map[string]bool {
	out := map[string]bool{}
	for _, e := range in.Nodes {
		if z, ok := e.Labels[LabelZone]; ok && podMatchesNode(p, e.Labels, e.Name) {
			out[z] = true
		}
	}
	for _, pool := range in.NodePools {
		tol := true
		for i := range pool.Taints {
			ok := false
			for j := range p.Spec.Tolerations {
				if p.Spec.Tolerations[j].ToleratesTaint(logr.Discard(), &pool.Taints[i], false) {
					ok = true
				}
			}
			tol = tol && ok
		}
		if !tol {
			continue
		}
		for _, it := range pool.InstanceTypes {
			for _, o := range it.Offerings {
				if !o.Available {
					continue
				}
				base := map[string]string{LabelInstanceType: it.Name, LabelArch: it.Arch, LabelOS: "linux",
					LabelZone: o.Zone, LabelCapacityType: o.CapacityType, LabelNodePool: pool.Name}
				for k, v := range it.Labels {
					base[k] = v
				}
				for k, v := range pool.Labels {
					base[k] = v
				}
				sets := []map[string]string{base}
				for _, r := range pool.Requirements {
					if _, ok := base[r.Key]; ok || r.Operator != corev1.NodeSelectorOpIn || r.Key == LabelZone || r.Key == LabelCapacityType {
						continue
					}
					var next []map[string]string
					for _, s := range sets {
						for _, v := range r.Values {
							c := maps.Clone(s)
							c[r.Key] = v
							next = append(next, c)
						}
					}
					sets = next
				}
				for _, l := range sets {
					if reqsMatch(pool.Requirements, l) && podMatchesNode(p, l, "") {
						out[o.Zone] = true
					}
				}
			}
		}
	}
	return out
}
