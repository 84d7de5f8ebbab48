package disruption

import (
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// Objects are the apiserver objects a Cluster is built from, as listed by
// the controller (from its informer caches), plus what the provisioning
// side resolves: each pool as the scheduler sees it (instance types with
// offerings and prices) and the AMIs each NodeClass resolves to.
type Objects struct {
	NodePools  []*v1.NodePool
	NodeClaims []*v1.NodeClaim
	Nodes      []*corev1.Node
	Pods       []*corev1.Pod
	PDBs       []*policyv1.PodDisruptionBudget
	// DaemonSets are DaemonSet pod templates (as pods).
	DaemonSets      []*corev1.Pod
	NamespaceLabels map[string]map[string]string
	// SchedulingPools are the pools resolved for the scheduler, by name.
	SchedulingPools map[string]scheduling.NodePool
	// AMIs: NodeClass name -> arch -> image id (cloud.ResolvedNodeClass).
	AMIs map[string]map[string]string
}

// Build makes the Cluster. An object it cannot read (a bad budget
// schedule, a bad selector) is reported in the joined error and handled
// safely: a pool with a bad budget gets a zero budget for every reason, a
// bad PDB allows no disruption of the pods it could cover (nothing in its
// namespace), so that bad input blocks disruption rather than lets it
// through. The Cluster is always usable.
func Build(o Objects) (*Cluster, error) {
	var errs []error
	c := &Cluster{Pools: map[string]*Pool{}, DaemonSets: o.DaemonSets, NamespaceLabels: o.NamespaceLabels, AMIs: o.AMIs}
	for _, np := range o.NodePools {
		p, err := NewPool(np, o.SchedulingPools[np.Name])
		if err != nil {
			errs = append(errs, err)
		}
		c.Pools[np.Name] = p
	}
	prices := priceIndex(o.SchedulingPools)

	podsByNode := map[string][]*corev1.Pod{}
	lastPodEvent := map[string]time.Time{}
	for _, p := range o.Pods {
		if p.Spec.NodeName == "" {
			continue
		}
		if t := podEventTime(p); t.After(lastPodEvent[p.Spec.NodeName]) {
			lastPodEvent[p.Spec.NodeName] = t
		}
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			podsByNode[p.Spec.NodeName] = append(podsByNode[p.Spec.NodeName], p)
		}
	}
	nodesByName := map[string]*corev1.Node{}
	for _, n := range o.Nodes {
		nodesByName[n.Name] = n
	}
	claimed := map[string]bool{}
	for _, nc := range o.NodeClaims {
		var node *corev1.Node
		if nc.Status.NodeName != "" {
			node = nodesByName[nc.Status.NodeName]
			claimed[nc.Status.NodeName] = true
		}
		n := fromClaim(nc, node, prices)
		if node != nil {
			n.Pods = podsOf(podsByNode[node.Name])
			if t := lastPodEvent[node.Name]; t.After(n.LastPodEvent) {
				n.LastPodEvent = t
			}
		}
		c.Nodes = append(c.Nodes, n)
	}
	// Nodes that no NodeClaim owns are never disrupted, but pods may move
	// onto them.
	for _, node := range o.Nodes {
		if claimed[node.Name] {
			continue
		}
		n := &Node{Name: node.Name, Labels: node.Labels, Taints: node.Spec.Taints, Initialized: true,
			Allocatable: modelled(node.Status.Allocatable), Disrupting: node.DeletionTimestamp != nil || node.Spec.Unschedulable}
		n.Pods = podsOf(podsByNode[node.Name])
		c.Nodes = append(c.Nodes, n)
	}

	byNS := map[string][]*corev1.Pod{}
	for _, p := range o.Pods {
		byNS[p.Namespace] = append(byNS[p.Namespace], p)
	}
	for _, b := range o.PDBs {
		pdb, err := NewPDB(b, byNS[b.Namespace])
		if err != nil {
			errs = append(errs, err)
			pdb = &PDB{Namespace: b.Namespace, Name: b.Name, Selector: labels.Everything()}
		}
		c.PDBs = append(c.PDBs, pdb)
	}
	return c, errors.Join(errs...)
}

// NewPool resolves a NodePool. On a bad budget the error names the pool and
// the pool gets a single "0" budget, which blocks every reason.
func NewPool(np *v1.NodePool, sched scheduling.NodePool) (*Pool, error) {
	d := np.Spec.Disruption
	p := &Pool{Name: np.Name, Policy: d.ConsolidationPolicy, ConsolidateAfter: d.ConsolidateAfter.Duration,
		TemplateHash: TemplateHash(np), Scheduling: sched}
	if p.Policy == "" {
		p.Policy = v1.ConsolidationWhenEmptyOrUnderutilized
	}
	if sched.Name == "" {
		p.Scheduling.Name = np.Name
	}
	for _, r := range np.Spec.Template.Spec.Requirements {
		p.Requirements = append(p.Requirements, scheduling.Requirement{Key: r.Key, Operator: r.Operator, Values: r.Values})
	}
	for i, b := range np.Spec.Disruption.Budgets {
		pb, err := ParseBudget(b)
		if err != nil {
			p.Budgets = []Budget{{Reasons: allReasons(), Nodes: 0}}
			return p, fmt.Errorf("nodepool %s: budget %d: %w (disruption blocked until fixed)", np.Name, i, err)
		}
		p.Budgets = append(p.Budgets, pb)
	}
	return p, nil
}

func allReasons() []v1.DisruptionReason {
	return []v1.DisruptionReason{v1.ReasonEmpty, v1.ReasonUnderutilized, v1.ReasonDrifted, v1.ReasonExpired, v1.ReasonUnhealthy}
}

type offeringKey struct{ it, zone, ct string }

func priceIndex(pools map[string]scheduling.NodePool) map[offeringKey]float64 {
	idx := map[offeringKey]float64{}
	for _, p := range pools {
		for _, it := range p.InstanceTypes {
			for _, o := range it.Offerings {
				idx[offeringKey{it.Name, o.Zone, o.CapacityType}] = o.Price
			}
		}
	}
	return idx
}

func fromClaim(nc *v1.NodeClaim, node *corev1.Node, prices map[offeringKey]float64) *Node {
	lbl := nc.Labels
	if node != nil {
		lbl = node.Labels
	}
	n := &Node{
		Name: nc.Name, NodeClaim: nc.Name, Pool: lbl[v1.LabelNodePool], NodeClass: nc.Spec.NodeClassRef.Name,
		InstanceType: lbl[corev1.LabelInstanceTypeStable], Zone: lbl[corev1.LabelTopologyZone],
		CapacityType: lbl[v1.LabelCapacityType], Arch: lbl[corev1.LabelArchStable], Labels: lbl,
		Allocatable: modelled(nc.Status.Allocatable), Created: nc.CreationTimestamp.Time,
		LastPodEvent: nc.Status.LastPodEventTime.Time, ImageID: nc.Status.ImageID,
		TemplateHash: nc.Annotations[AnnotationNodePoolHash], TemplateHashVersion: nc.Annotations[AnnotationNodePoolHashVersion],
		DoNotDisrupt: nc.Annotations[AnnotationDoNotDisrupt] == "true",
		Disrupting:   nc.DeletionTimestamp != nil || meta.IsStatusConditionTrue(nc.Status.Conditions, v1.ConditionDisrupting),
		Initialized:  meta.IsStatusConditionTrue(nc.Status.Conditions, v1.ConditionInitialized),
	}
	if n.Pool == "" {
		n.Pool = nc.Labels[v1.LabelNodePool]
	}
	n.Price = prices[offeringKey{n.InstanceType, n.Zone, n.CapacityType}]
	if nc.Spec.ExpireAfter != nil {
		d := nc.Spec.ExpireAfter.Duration
		n.ExpireAfter = &d
	}
	if nc.Spec.TerminationGracePeriod != nil {
		d := nc.Spec.TerminationGracePeriod.Duration
		n.TerminationGracePeriod = &d
	}
	if node == nil {
		// Not registered: only the claim's own taints are known; startup
		// taints come off once it initializes, so pods may be planned on it.
		n.Taints = nc.Spec.Taints
		return n
	}
	n.Name = node.Name
	if a := modelled(node.Status.Allocatable); !a.IsZero() {
		n.Allocatable = a
	}
	n.DoNotDisrupt = n.DoNotDisrupt || node.Annotations[AnnotationDoNotDisrupt] == "true"
	n.Disrupting = n.Disrupting || node.DeletionTimestamp != nil
	for _, t := range node.Spec.Taints {
		if t.Key == TaintDisrupted {
			n.Disrupting = true
		}
		if !n.Initialized && isStartupTaint(nc, t) {
			continue
		}
		n.Taints = append(n.Taints, t)
	}
	for _, cd := range node.Status.Conditions {
		n.Conditions = append(n.Conditions, Condition{Type: cd.Type, Status: cd.Status, Since: cd.LastTransitionTime.Time})
	}
	return n
}

func isStartupTaint(nc *v1.NodeClaim, t corev1.Taint) bool {
	for _, s := range nc.Spec.StartupTaints {
		if s.Key == t.Key && s.Effect == t.Effect {
			return true
		}
	}
	return t.Key == v1.StartupTaintAgentNotReady
}

func podsOf(pods []*corev1.Pod) []*Pod {
	out := make([]*Pod, 0, len(pods))
	for _, p := range pods {
		out = append(out, NewPod(p))
	}
	return out
}

// NewPod resolves a bound pod. Requests on resources the scheduler does not
// model are left out of the node's requested sum; the simulation refuses to
// move such a pod, so its node is never consolidated.
func NewPod(p *corev1.Pod) *Pod {
	req, _ := scheduling.PodRequests(p)
	out := &Pod{Pod: p, Requests: req, DoNotDisrupt: p.Annotations[AnnotationDoNotDisrupt] == "true", Cost: PodCost(p), Healthy: podReady(p)}
	if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		out.DaemonSet = true
	}
	for _, ref := range p.OwnerReferences {
		if ref.Kind == "DaemonSet" && ref.Controller != nil && *ref.Controller {
			out.DaemonSet = true
		}
	}
	return out
}

// modelled converts the dimensions the scheduler models and ignores the
// rest (hugepages, other extended resources).
func modelled(l corev1.ResourceList) scheduling.Resources {
	m := corev1.ResourceList{}
	for r := range scheduling.NumResources {
		if q, ok := l[r.ResourceName()]; ok {
			m[r.ResourceName()] = q
		}
	}
	out, _ := scheduling.ResourcesFromList(m)
	return out
}

// podEventTime is when a pod last came to or left its node, as far as the
// pod itself tells: its binding (PodScheduled True), its finishing (the
// latest condition change of a terminal pod) or the start of its deletion.
// NodeClaim status.lastPodEventTime, when something keeps it, can only move
// the clock later; pods already gone are not seen here.
func podEventTime(p *corev1.Pod) time.Time {
	t := p.CreationTimestamp.Time
	terminal := p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	for _, c := range p.Status.Conditions {
		if (c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue || terminal) && c.LastTransitionTime.After(t) {
			t = c.LastTransitionTime.Time
		}
	}
	if d := p.DeletionTimestamp; d != nil {
		started := d.Time
		if g := p.DeletionGracePeriodSeconds; g != nil {
			started = started.Add(-time.Duration(*g) * time.Second)
		}
		if started.After(t) {
			t = started
		}
	}
	return t
}
