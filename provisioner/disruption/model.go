package disruption

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// Cluster is everything one decision round sees. Build makes it from
// apiserver objects; tests and the simulation harness make it directly.
type Cluster struct {
	Nodes []*Node
	Pools map[string]*Pool
	PDBs  []*PDB
	// DaemonSets are DaemonSet pod templates, for the overhead on new nodes.
	DaemonSets      []*corev1.Pod
	NamespaceLabels map[string]map[string]string
	// AMIs are the images each NodeClass resolves to now, by architecture:
	// NodeClass name -> arch -> image id. A class or arch missing here is
	// not checked for AMI drift.
	AMIs map[string]map[string]string
}

// Node is a NodeClaim and the facts of its Node.
type Node struct {
	// Name is the Node's name, or the NodeClaim's until it registers.
	Name      string
	NodeClaim string
	Pool      string
	// NodeClass launched it (for AMI drift).
	NodeClass    string
	InstanceType string
	Zone         string
	CapacityType string
	Arch         string
	// Price is what the node costs now, $/h.
	Price       float64
	Allocatable scheduling.Resources
	Labels      map[string]string
	Taints      []corev1.Taint
	Conditions  []Condition
	// DoNotDisrupt is the autonode.dev/do-not-disrupt annotation on the
	// NodeClaim or the Node.
	DoNotDisrupt bool
	Created      time.Time
	// Initialized is the NodeClaim's Initialized condition; in-flight
	// nodes are used for placement but never disrupted.
	Initialized bool
	// LastPodEvent is when a pod last came or went; consolidateAfter
	// counts from it (or from Created when later).
	LastPodEvent time.Time
	// TemplateHash and TemplateHashVersion are the NodeClaim's
	// AnnotationNodePoolHash and AnnotationNodePoolHashVersion.
	TemplateHash        string
	TemplateHashVersion string
	// ImageID is the AMI the instance booted (NodeClaim status.imageID).
	ImageID string
	// ExpireAfter and TerminationGracePeriod come from the NodeClaim spec
	// (copied from the pool at launch); nil means never and unbounded.
	ExpireAfter            *time.Duration
	TerminationGracePeriod *time.Duration
	// Disrupting is set when the node is already being taken away: its
	// NodeClaim is deleting, or it carries the disruption taint.
	Disrupting bool
	Pods       []*Pod
}

// Condition is a Node condition with the time of its last transition.
type Condition struct {
	Type   corev1.NodeConditionType
	Status corev1.ConditionStatus
	Since  time.Time
}

// Pod is a pod bound to a node.
type Pod struct {
	Pod      *corev1.Pod
	Requests scheduling.Resources
	// DaemonSet pods stay with their node: they are not moved and do not
	// make a node non-empty.
	DaemonSet bool
	// DoNotDisrupt is the autonode.dev/do-not-disrupt annotation.
	DoNotDisrupt bool
	// Cost is the disruption cost of evicting it (see PodCost).
	Cost float64
	// Healthy pods count toward their PDBs' currently healthy pods.
	Healthy bool
}

// PDB is a PodDisruptionBudget: which pods it covers and how many of them
// may be disrupted now.
type PDB struct {
	Namespace, Name string
	Selector        labels.Selector
	// Allowed is disruptionsAllowed: status's when fresh, else computed.
	Allowed int
}

// Covers reports whether p is one of the PDB's pods.
func (b *PDB) Covers(p *corev1.Pod) bool {
	return p.Namespace == b.Namespace && b.Selector.Matches(labels.Set(p.Labels))
}

// Pool is a NodePool as disruption sees it.
type Pool struct {
	Name             string
	Policy           v1.ConsolidationPolicy
	ConsolidateAfter *time.Duration // nil: Never
	Budgets          []Budget
	// TemplateHash is TemplateHash of the pool now.
	TemplateHash string
	Requirements []scheduling.Requirement
	// Scheduling is the pool as the scheduler sees it (instance types with
	// current offerings and prices, limits left), for replacements.
	Scheduling scheduling.NodePool
}

// Key identifies the node across snapshots: its NodeClaim's name, or its
// Name when it has none.
func (n *Node) Key() string {
	if n.NodeClaim != "" {
		return n.NodeClaim
	}
	return n.Name
}

// Reschedulable are the pods that must move when the node goes.
func (n *Node) Reschedulable() []*Pod {
	var out []*Pod
	for _, p := range n.Pods {
		if !p.DaemonSet {
			out = append(out, p)
		}
	}
	return out
}

// Empty reports whether only DaemonSet pods run on the node.
func (n *Node) Empty() bool {
	for _, p := range n.Pods {
		if !p.DaemonSet {
			return false
		}
	}
	return true
}

// Requested is the sum of its pods' requests.
func (n *Node) Requested() scheduling.Resources {
	var r scheduling.Resources
	for _, p := range n.Pods {
		r = r.Add(p.Requests)
	}
	return r
}

// BlockedByPod reports whether a pod on the node carries do-not-disrupt.
func (n *Node) BlockedByPod() bool {
	for _, p := range n.Pods {
		if p.DoNotDisrupt && !p.DaemonSet {
			return true
		}
	}
	return false
}

// DisruptionCost is the cost of moving the node's pods: the sum of PodCost
// over the pods that must move (0 for an empty node).
func (n *Node) DisruptionCost() float64 {
	var c float64
	for _, p := range n.Pods {
		if !p.DaemonSet {
			c += p.Cost
		}
	}
	return c
}

func (c *Cluster) poolNodes(pool string) (total, disrupting int) {
	for _, n := range c.Nodes {
		if n.Pool == pool {
			total++
			if n.Disrupting {
				disrupting++
			}
		}
	}
	return total, disrupting
}
