package scheduling

import (
	"fmt"
	"math/bits"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// group counts, per topology domain (a zone, or a node for hostname), the
// pods that a label selector in some namespaces matches, and for required
// anti-affinity also the pods that hold the term (owners), whose domains
// other matching pods must avoid.
type group struct {
	zone bool
	// anti: some pod holds a required anti-affinity term for this group.
	anti   bool
	nsAll  bool
	nsSet  map[string]bool
	nsSel  labels.Selector
	sel    labels.Selector
	counts []int32
	owners []int32
	total  int32
}

func (g *group) matchesNamespace(ns string, nsLabels map[string]map[string]string) bool {
	if g.nsAll || g.nsSet[ns] {
		return true
	}
	return g.nsSel != nil && g.nsSel.Matches(labels.Set(nsLabels[ns]))
}

func (g *group) matches(ns string, podLabels map[string]string, nsLabels map[string]map[string]string) bool {
	return g.matchesNamespace(ns, nsLabels) && g.sel.Matches(labels.Set(podLabels))
}

func (g *group) count(d int) int32 {
	if d < len(g.counts) {
		return g.counts[d]
	}
	return 0
}

func (g *group) owner(d int) int32 {
	if d < len(g.owners) {
		return g.owners[d]
	}
	return 0
}

func (g *group) add(d int, owner bool) {
	if owner {
		if d >= len(g.owners) {
			g.owners = grow(g.owners, d)
		}
		g.owners[d]++
		return
	}
	if d >= len(g.counts) {
		g.counts = grow(g.counts, d)
	}
	g.counts[d]++
	g.total++
}

func grow(s []int32, d int) []int32 {
	n := max(2*len(s), d+1, 16)
	out := make([]int32, n)
	copy(out, s)
	return out
}

type topoKind uint8

const (
	kindSpread topoKind = iota
	kindAffinity
	kindAnti
)

// topo is one pod-level topology constraint.
type topo struct {
	kind       topoKind
	g          *group
	maxSkew    int32
	minDomains int32
	// self: the pod matches its own selector, so placing it adds one.
	self bool
	// pos is the constraint's place in the relaxation order, -1 if hard.
	pos int
	// honorAffinity: spread domains are only those the pod's node
	// affinity allows (nodeAffinityPolicy Honor, the default).
	honorAffinity bool
	// honorTaints: nodes whose taints the pod does not tolerate are no
	// domains (nodeTaintsPolicy Honor; the default is Ignore).
	honorTaints bool
}

// groups interns groups by topology key, namespaces and selector, so that
// every constraint with the same meaning shares one set of counts.
type groups struct {
	byKey map[string]*group
	list  []*group
}

func (gs *groups) get(topologyKey string, ns string, term *corev1.PodAffinityTerm, sel labels.Selector) (*group, error) {
	var nsKey string
	g := &group{zone: topologyKey == LabelZone, sel: sel}
	switch {
	case term == nil:
		g.nsSet = map[string]bool{ns: true}
		nsKey = ns
	case term.NamespaceSelector != nil && len(term.NamespaceSelector.MatchLabels) == 0 && len(term.NamespaceSelector.MatchExpressions) == 0:
		g.nsAll = true
		nsKey = "*"
	default:
		names := term.Namespaces
		if len(names) == 0 && term.NamespaceSelector == nil {
			names = []string{ns}
		}
		g.nsSet = map[string]bool{}
		for _, n := range names {
			g.nsSet[n] = true
		}
		sorted := append([]string(nil), names...)
		sort.Strings(sorted)
		nsKey = strings.Join(sorted, ",")
		if term.NamespaceSelector != nil {
			s, err := metav1.LabelSelectorAsSelector(term.NamespaceSelector)
			if err != nil {
				return nil, fmt.Errorf("namespaceSelector: %w", err)
			}
			g.nsSel = s
			nsKey += "|" + s.String()
		}
	}
	key := topologyKey + "\x00" + nsKey + "\x00" + sel.String()
	if old, ok := gs.byKey[key]; ok {
		return old, nil
	}
	gs.byKey[key] = g
	gs.list = append(gs.list, g)
	return g, nil
}

// selectorFor builds a term's selector, adding matchLabelKeys (key equals
// the pod's value) and mismatchLabelKeys (key differs from it).
func selectorFor(ls *metav1.LabelSelector, podLabels map[string]string, matchKeys, mismatchKeys []string) (labels.Selector, error) {
	if ls == nil {
		return labels.Nothing(), nil
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil, err
	}
	for _, k := range matchKeys {
		if v, ok := podLabels[k]; ok {
			r, err := labels.NewRequirement(k, selection.Equals, []string{v})
			if err != nil {
				return nil, err
			}
			sel = sel.Add(*r)
		}
	}
	for _, k := range mismatchKeys {
		if v, ok := podLabels[k]; ok {
			r, err := labels.NewRequirement(k, selection.NotEquals, []string{v})
			if err != nil {
				return nil, err
			}
			sel = sel.Add(*r)
		}
	}
	return sel, nil
}

func supportedTopologyKey(k string) bool { return k == LabelZone || k == LabelHostname }

// zoneAllowed returns the zones (mask) the class's active zone constraints
// allow now: spreads within maxSkew of the least loaded eligible zone,
// affinity to zones holding a match (any zone for the first pod of a
// self-matching group), anti-affinity away from matches, and away from the
// zones of pods whose required anti-affinity selects this pod.
func (s *solver) zoneAllowed(c *class) uint64 {
	allowed := s.allZones
	for i := range c.topo {
		t := &c.topo[i]
		if !t.g.zone || !c.active(t.pos) {
			continue
		}
		var m uint64
		switch t.kind {
		case kindSpread:
			elig := c.eligibleZones
			if !t.honorAffinity {
				elig = s.allZones
			}
			minCount := int32(1<<31 - 1)
			if int32(bits.OnesCount64(elig)) < t.minDomains {
				minCount = 0
			}
			for e := elig; e != 0; e &= e - 1 {
				minCount = min(minCount, t.g.count(bits.TrailingZeros64(e)))
			}
			self := int32(0)
			if t.self {
				self = 1
			}
			for e := elig; e != 0; e &= e - 1 {
				z := bits.TrailingZeros64(e)
				if t.g.count(z)+self-minCount <= t.maxSkew {
					m |= 1 << z
				}
			}
		case kindAffinity:
			if t.g.total == 0 {
				if t.self {
					m = s.allZones
				}
				break
			}
			for z := range s.zones {
				if t.g.count(z) > 0 {
					m |= 1 << z
				}
			}
		case kindAnti:
			for z := range s.zones {
				if t.g.count(z) == 0 {
					m |= 1 << z
				}
			}
		}
		allowed &= m
	}
	for _, g := range c.feeds {
		if g.zone && g.anti {
			for z := range s.zones {
				if g.owner(z) > 0 {
					allowed &^= 1 << z
				}
			}
		}
	}
	return allowed
}

// hostnameVerdict checks the class's hostname constraints on node id.
func (s *solver) hostnameVerdict(c *class, id int) verdict {
	for i := range c.topo {
		t := &c.topo[i]
		if t.g.zone || !c.active(t.pos) {
			continue
		}
		switch t.kind {
		case kindSpread:
			// A new, empty node can always be added, so the global minimum
			// is taken as zero: a node holds at most maxSkew matches.
			self := int32(0)
			if t.self {
				self = 1
			}
			if t.g.count(id)+self > t.maxSkew {
				return rejectMonotone
			}
		case kindAffinity:
			if t.g.count(id) == 0 && (t.g.total > 0 || !t.self) {
				return rejectChanging
			}
		case kindAnti:
			if t.g.count(id) > 0 {
				return rejectMonotone
			}
		}
	}
	for _, g := range c.feeds {
		if !g.zone && g.owner(id) > 0 {
			return rejectMonotone
		}
	}
	return fits
}
