package scheduling

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
)

// class is a set of pods that the scheduler cannot tell apart: same
// namespace, labels, effective requests and constraints. It is placed pod
// by pod, but everything derived from the spec is computed once.
type class struct {
	pods  []*corev1.Pod
	first int // input index of the first pod, for a stable order
	ns    string
	lbls  map[string]string
	req   Resources
	err   error

	tolerations []corev1.Toleration
	// required are the OR-ed node selector terms, each already ANDed with
	// the nodeSelector and the volume requirements.
	required [][]Requirement
	// preferred are the preferred node affinity terms with their place in
	// the relaxation order.
	preferred []preferredTerm
	topo      []topo
	// feeds are the groups whose selector matches these pods.
	feeds []*group
	// softCount is the number of soft items in relaxation order; the last
	// one, when the round has such taints, tolerates PreferNoSchedule.
	softCount int
	// dropped marks the soft items relaxed so far.
	dropped []bool
	pnsPos  int

	// Derived for the current relaxation level; eligibleZones are the
	// zone domains of the class's zone spreads.
	terms         [][]Requirement
	poolTerms     [][]shape
	eligibleZones uint64
	// newPrice is, per pool, the cheapest type that takes one pod alone.
	newPrice     []float64
	ownZone      bool
	zoneRelevant bool
	cursors      []int
}

type preferredTerm struct {
	weight int32
	reqs   []Requirement
	pos    int
}

// active reports whether the soft item at pos still applies.
func (c *class) active(pos int) bool { return pos < 0 || !c.dropped[pos] }

// toleratesPreferNoSchedule reports whether the last relaxation, which
// only exists when the round has PreferNoSchedule taints, was reached.
func (c *class) toleratesPreferNoSchedule() bool {
	return c.pnsPos >= 0 && c.dropped[c.pnsPos]
}

// signature serialises what makes pods interchangeable.
func signature(buf *bytes.Buffer, pod *corev1.Pod, req Resources, vol []Requirement) error {
	buf.Reset()
	buf.WriteString(pod.Namespace)
	buf.WriteByte(0)
	for _, k := range sortedKeys(pod.Labels) {
		buf.WriteString(k)
		buf.WriteByte('=')
		buf.WriteString(pod.Labels[k])
		buf.WriteByte(0)
	}
	for _, v := range req {
		_ = binary.Write(buf, binary.LittleEndian, v)
	}
	for _, k := range sortedKeys(pod.Spec.NodeSelector) {
		buf.WriteString(k)
		buf.WriteByte('=')
		buf.WriteString(pod.Spec.NodeSelector[k])
		buf.WriteByte(0)
	}
	if a := pod.Spec.Affinity; a != nil {
		b, err := a.Marshal()
		if err != nil {
			return err
		}
		buf.Write(b)
	}
	buf.WriteByte(0)
	for i := range pod.Spec.Tolerations {
		b, err := pod.Spec.Tolerations[i].Marshal()
		if err != nil {
			return err
		}
		buf.Write(b)
	}
	buf.WriteByte(0)
	for i := range pod.Spec.TopologySpreadConstraints {
		b, err := pod.Spec.TopologySpreadConstraints[i].Marshal()
		if err != nil {
			return err
		}
		buf.Write(b)
	}
	buf.WriteByte(0)
	fmt.Fprint(buf, vol)
	return nil
}

// softItem orders a soft constraint for relaxation.
type softItem struct {
	category int // 0 preferred anti-affinity, 1 preferred affinity, 2 preferred node affinity, 3 ScheduleAnyway
	weight   int32
	set      func(pos int)
}

// newClass compiles a pod's constraints.
func (s *solver) newClass(pod *corev1.Pod, req Resources, idx int) *class {
	c := &class{pods: []*corev1.Pod{pod}, first: idx, ns: pod.Namespace, lbls: pod.Labels, req: req,
		tolerations: pod.Spec.Tolerations}
	if err := s.compileClass(c, pod); err != nil {
		c.err = err
	}
	return c
}

func (s *solver) compileClass(c *class, pod *corev1.Pod) error {
	var base []Requirement
	for _, k := range sortedKeys(pod.Spec.NodeSelector) {
		base = append(base, Requirement{Key: k, Operator: corev1.NodeSelectorOpIn, Values: []string{pod.Spec.NodeSelector[k]}})
	}
	base = append(base, s.in.VolumeRequirements[pod.UID]...)
	var soft []softItem
	aff := pod.Spec.Affinity
	if aff != nil && aff.NodeAffinity != nil && aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		for i := range aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
			reqs, ok := fromSelectorTerm(&aff.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[i])
			if ok {
				c.required = append(c.required, append(append([]Requirement(nil), base...), reqs...))
			}
		}
		if len(c.required) == 0 {
			return fmt.Errorf("required node affinity has no term that can match")
		}
	} else {
		c.required = [][]Requirement{base}
	}
	if aff != nil && aff.NodeAffinity != nil {
		for i := range aff.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			p := &aff.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution[i]
			reqs, ok := fromSelectorTerm(&p.Preference)
			if !ok {
				continue
			}
			c.preferred = append(c.preferred, preferredTerm{weight: p.Weight, reqs: reqs})
			j := len(c.preferred) - 1
			soft = append(soft, softItem{category: 2, weight: p.Weight, set: func(pos int) { c.preferred[j].pos = pos }})
		}
	}
	for _, terms := range c.required {
		for i := range terms {
			if err := terms[i].validate(); err != nil {
				return fmt.Errorf("node affinity: %w", err)
			}
		}
	}
	for _, p := range c.preferred {
		for i := range p.reqs {
			if err := p.reqs[i].validate(); err != nil {
				return fmt.Errorf("preferred node affinity: %w", err)
			}
		}
	}
	addTopo := func(t topo, softCategory int, weight int32) {
		if softCategory < 0 {
			t.pos = -1
			c.topo = append(c.topo, t)
			return
		}
		c.topo = append(c.topo, t)
		j := len(c.topo) - 1
		soft = append(soft, softItem{category: softCategory, weight: weight, set: func(pos int) { c.topo[j].pos = pos }})
	}
	for i := range pod.Spec.TopologySpreadConstraints {
		tsc := &pod.Spec.TopologySpreadConstraints[i]
		hard := tsc.WhenUnsatisfiable != corev1.ScheduleAnyway
		if !supportedTopologyKey(tsc.TopologyKey) {
			if hard {
				return fmt.Errorf("topology spread on %q: only %s and %s are supported", tsc.TopologyKey, LabelZone, LabelHostname)
			}
			continue
		}
		if tsc.MaxSkew < 1 {
			return fmt.Errorf("topology spread on %s: maxSkew %d is below 1", tsc.TopologyKey, tsc.MaxSkew)
		}
		sel, err := selectorFor(tsc.LabelSelector, pod.Labels, tsc.MatchLabelKeys, nil)
		if err != nil {
			return fmt.Errorf("topology spread on %s: %w", tsc.TopologyKey, err)
		}
		g, err := s.groups.get(tsc.TopologyKey, pod.Namespace, nil, sel)
		if err != nil {
			return fmt.Errorf("topology spread on %s: %w", tsc.TopologyKey, err)
		}
		t := topo{kind: kindSpread, g: g, maxSkew: tsc.MaxSkew, self: g.matches(pod.Namespace, pod.Labels, s.in.NamespaceLabels),
			honorAffinity: tsc.NodeAffinityPolicy == nil || *tsc.NodeAffinityPolicy == corev1.NodeInclusionPolicyHonor,
			honorTaints:   tsc.NodeTaintsPolicy != nil && *tsc.NodeTaintsPolicy == corev1.NodeInclusionPolicyHonor}
		if tsc.MinDomains != nil {
			t.minDomains = *tsc.MinDomains
		}
		cat := -1
		if !hard {
			cat = 3
		}
		addTopo(t, cat, 0)
	}
	podTerm := func(term *corev1.PodAffinityTerm, kind topoKind, softCategory int, weight int32) error {
		if !supportedTopologyKey(term.TopologyKey) {
			if softCategory >= 0 {
				return nil
			}
			return fmt.Errorf("pod (anti-)affinity on %q: only %s and %s are supported", term.TopologyKey, LabelZone, LabelHostname)
		}
		sel, err := selectorFor(term.LabelSelector, pod.Labels, term.MatchLabelKeys, term.MismatchLabelKeys)
		if err != nil {
			return fmt.Errorf("pod (anti-)affinity on %s: %w", term.TopologyKey, err)
		}
		g, err := s.groups.get(term.TopologyKey, pod.Namespace, term, sel)
		if err != nil {
			return fmt.Errorf("pod (anti-)affinity on %s: %w", term.TopologyKey, err)
		}
		if kind == kindAnti && softCategory < 0 {
			g.anti = true
		}
		addTopo(topo{kind: kind, g: g, self: g.matches(pod.Namespace, pod.Labels, s.in.NamespaceLabels)}, softCategory, weight)
		return nil
	}
	if aff != nil && aff.PodAffinity != nil {
		for i := range aff.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			if err := podTerm(&aff.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution[i], kindAffinity, -1, 0); err != nil {
				return err
			}
		}
		for i := range aff.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			w := &aff.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution[i]
			if err := podTerm(&w.PodAffinityTerm, kindAffinity, 1, w.Weight); err != nil {
				return err
			}
		}
	}
	if aff != nil && aff.PodAntiAffinity != nil {
		for i := range aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			if err := podTerm(&aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[i], kindAnti, -1, 0); err != nil {
				return err
			}
		}
		for i := range aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			w := &aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[i]
			if err := podTerm(&w.PodAffinityTerm, kindAnti, 0, w.Weight); err != nil {
				return err
			}
		}
	}
	// Relaxation order: first the preferred pod anti-affinity, then the
	// preferred pod affinity, then preferred node affinity, then
	// ScheduleAnyway spreads; within each, the lightest weight first.
	sort.SliceStable(soft, func(i, j int) bool {
		if soft[i].category != soft[j].category {
			return soft[i].category < soft[j].category
		}
		return soft[i].weight < soft[j].weight
	})
	for i := range soft {
		soft[i].set(i)
	}
	c.softCount, c.pnsPos = len(soft), -1
	if s.anyPreferNoSchedule {
		c.pnsPos = c.softCount
		c.softCount++
	}
	c.dropped = make([]bool, c.softCount)
	return nil
}

// tolerates reports whether tolerations cover every NoSchedule and
// NoExecute taint (and PreferNoSchedule ones unless relaxed). Comparison
// operators in tolerations follow kube-scheduler's default (off).
func tolerates(tols []corev1.Toleration, taints []corev1.Taint, preferNoSchedule bool) bool {
	for i := range taints {
		t := &taints[i]
		if t.Effect == corev1.TaintEffectPreferNoSchedule && preferNoSchedule {
			continue
		}
		ok := false
		for j := range tols {
			if tols[j].ToleratesTaint(logr.Discard(), t, false) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// prepare derives the class's per-relaxation state: its node terms, their
// shapes per pool, the eligible zones for spreads, and empty cursors.
func (s *solver) prepare(c *class) {
	c.terms = c.terms[:0]
	for _, r := range c.required {
		t := append([]Requirement(nil), r...)
		for _, p := range c.preferred {
			if c.active(p.pos) {
				t = append(t, p.reqs...)
			}
		}
		c.terms = append(c.terms, t)
	}
	if c.poolTerms == nil {
		c.poolTerms = make([][]shape, len(s.pools))
		c.newPrice = make([]float64, len(s.pools))
	}
	c.eligibleZones = 0
	for _, p := range s.pools {
		c.poolTerms[p.idx] = nil
		c.newPrice[p.idx] = math.Inf(1)
		if p.err != nil || !tolerates(c.tolerations, p.np.Taints, c.toleratesPreferNoSchedule()) {
			continue
		}
		for _, reqs := range c.terms {
			sh, ok := s.narrow(p, reqs)
			if !ok {
				continue
			}
			for i := range p.types {
				if sh.types.has(i) && !c.req.Fits(p.types[i].alloc) {
					sh.types[i/64] &^= 1 << (i % 64)
				}
			}
			if sh.types.empty() {
				continue
			}
			for i := range p.types {
				if sh.types.has(i) {
					c.newPrice[p.idx] = min(c.newPrice[p.idx], p.types[i].price(sh.zones, sh.cts))
				}
			}
			c.poolTerms[p.idx] = append(c.poolTerms[p.idx], sh)
		}
	}
	// Pods that an existing or earlier pod's required zone anti-affinity
	// selects must avoid that pod's zone, so they are zone-constrained too.
	c.ownZone = false
	for _, g := range c.feeds {
		if g.zone && g.anti {
			c.ownZone = true
		}
	}
	spread, honorTaints := false, false
	for i := range c.topo {
		if c.topo[i].g.zone && c.active(c.topo[i].pos) {
			c.ownZone = true
			if c.topo[i].kind == kindSpread {
				spread = true
				honorTaints = honorTaints || c.topo[i].honorTaints
			}
		}
	}
	if spread {
		c.eligibleZones = s.spreadDomains(c, honorTaints)
	}
	c.zoneRelevant = c.ownZone
	for _, g := range c.feeds {
		if g.zone {
			c.zoneRelevant = true
		}
	}
	c.cursors = make([]int, len(s.lanes))
}

// spreadDomains are the zones a zone spread counts, as kube-scheduler's
// default nodeAffinityPolicy Honor has it: those of the existing nodes that
// the pod's nodeSelector and required node affinity match (their taints
// only with nodeTaintsPolicy Honor), and those where a pool whose taints the
// pod tolerates could launch a node that matches them.
func (s *solver) spreadDomains(c *class, honorTaints bool) uint64 {
	var zones uint64
	for _, p := range s.pools {
		if p.err != nil || !tolerates(c.tolerations, p.np.Taints, true) {
			continue
		}
		for _, reqs := range c.required {
			sh, ok := s.narrow(p, reqs)
			if !ok {
				continue
			}
			for i := range p.types {
				if sh.types.has(i) {
					for ct, z := range p.types[i].availZones {
						if sh.cts&(1<<ct) != 0 {
							zones |= z & sh.zones
						}
					}
				}
			}
		}
	}
	for _, n := range s.nodes {
		if !n.existing || n.zone < 0 || (honorTaints && !tolerates(c.tolerations, n.taints, true)) {
			continue
		}
		for _, t := range c.required {
			if matchesLabels(t, n.labels, n.name) {
				zones |= 1 << n.zone
				break
			}
		}
	}
	return zones
}

// existingMatches reports whether an existing node satisfies the class's
// node affinity and taints (resources aside).
func (s *solver) existingMatches(c *class, n *node) bool {
	if !tolerates(c.tolerations, n.taints, c.toleratesPreferNoSchedule()) {
		return false
	}
	for _, t := range c.terms {
		if matchesLabels(t, n.labels, n.name) {
			return true
		}
	}
	return false
}

// narrow returns pool p's base shape narrowed by every requirement of one
// term, and false when the term leaves the pool nothing to launch.
func (s *solver) narrow(p *pool, reqs []Requirement) (shape, bool) {
	sh := shape{zones: p.base.zones, cts: p.base.cts, types: p.base.types.clone(), custom: p.base.custom}
	for i := range reqs {
		if !s.apply(p, &sh, &reqs[i]) {
			return sh, false
		}
	}
	return sh, true
}
