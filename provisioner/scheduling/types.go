package scheduling

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Well-known node labels the scheduler reasons about.
const (
	LabelZone         = corev1.LabelTopologyZone
	LabelInstanceType = corev1.LabelInstanceTypeStable
	LabelArch         = corev1.LabelArchStable
	LabelOS           = corev1.LabelOSStable
	LabelHostname     = corev1.LabelHostname
	LabelCapacityType = "autonode.dev/capacity-type"
	LabelNodePool     = "autonode.dev/nodepool"

	CapacityTypeSpot     = "spot"
	CapacityTypeOnDemand = "on-demand"
)

// InstanceType is one launchable type with its offerings.
type InstanceType struct {
	Name string
	// Arch is amd64 or arm64; it becomes the kubernetes.io/arch label.
	Arch string
	// Capacity counts against NodePool limits.
	Capacity Resources
	// Allocatable is what the kubelet offers to pods (capacity minus
	// reservations and eviction thresholds), before DaemonSet overhead,
	// which the scheduler subtracts per NodePool.
	Allocatable Resources
	// Labels are the type's own labels (family, size, GPU name, ...).
	// node.kubernetes.io/instance-type, kubernetes.io/arch and
	// kubernetes.io/os=linux are added when missing.
	Labels    map[string]string
	Offerings []Offering
}

// Offering is a (zone, capacity type) in which a type can be launched.
type Offering struct {
	Zone         string
	CapacityType string // spot or on-demand
	Price        float64
	// Available is false while the offering is known to lack capacity.
	Available bool
}

// Requirement is a NodePool or node requirement: a key, an operator (In,
// NotIn, Exists, DoesNotExist, Gt, Lt) and values. MinValues, on a NodePool
// requirement, asks that every new node keep at least that many distinct
// values of the key among its candidate instance types (or zones, capacity
// types), so that a launch has room to fall back.
type Requirement struct {
	Key       string
	Operator  corev1.NodeSelectorOperator
	Values    []string
	MinValues int
}

// NodePool is the part of a NodePool the scheduler needs, resolved by the
// caller: its instance types are already filtered by its NodeClass.
type NodePool struct {
	Name string
	// Weight orders pools: a new node comes from the heaviest pool that can
	// take the pod; among equal weights, the one with the cheapest type.
	Weight       int32
	Requirements []Requirement
	// Labels are set on every node of the pool (autonode.dev/nodepool is
	// added).
	Labels map[string]string
	Taints []corev1.Taint
	// StartupTaints go on new nodes until they initialize; pods need not
	// tolerate them.
	StartupTaints []corev1.Taint
	// Limits is what the pool may still add in capacity (the pool's limits
	// minus what its nodes already have); nil means no limits, and
	// Unlimited marks a dimension without one.
	Limits        *Resources
	InstanceTypes []*InstanceType
}

// ExistingNode is a node, or a NodeClaim not yet registered (InFlight),
// that pods may still go on.
type ExistingNode struct {
	Name   string
	Labels map[string]string
	Taints []corev1.Taint
	// Allocatable and Requested (by the pods already bound or nominated,
	// DaemonSet pods included) give its free capacity.
	Allocatable, Requested Resources
	// Pods are its pods, which count toward pod (anti-)affinity and
	// topology spread.
	Pods []*corev1.Pod
	// InFlight nodes are filled after registered ones.
	InFlight bool
}

// Input is everything one scheduling round sees.
type Input struct {
	Pods      []*corev1.Pod
	Nodes     []ExistingNode
	NodePools []NodePool
	// DaemonSets are the pod templates of the cluster's DaemonSets (as
	// pods); each new node reserves room for those that would run on it.
	DaemonSets []*corev1.Pod
	// VolumeRequirements add node requirements per pod UID, resolved by the
	// caller from its volumes: the zones of bound PersistentVolumes and the
	// allowedTopologies of WaitForFirstConsumer StorageClasses.
	VolumeRequirements map[types.UID][]Requirement
	// NamespaceLabels serves pod (anti-)affinity namespaceSelectors.
	NamespaceLabels map[string]map[string]string
}

// NewNode is a node to launch.
type NewNode struct {
	NodePool string
	// Name is a placeholder hostname, unique in the result, under which
	// hostname topology was counted.
	Name string
	// InstanceTypes are the types that fit, cheapest first: at most
	// MaxInstanceTypes, unless the pool's minValues needs more.
	InstanceTypes []*InstanceType
	// Zones and CapacityTypes the launch may use, sorted.
	Zones         []string
	CapacityTypes []string
	// Requirements are the pool's requirements narrowed by the pods:
	// instance type, zone and capacity type In the lists above, plus the
	// pool's other requirements.
	Requirements []Requirement
	// Labels are the labels known now: the pool's, and every key narrowed to
	// one value.
	Labels        map[string]string
	Taints        []corev1.Taint
	StartupTaints []corev1.Taint
	Pods          []*corev1.Pod
	// Requests are the pods' effective requests; Overhead the DaemonSets'
	// on the cheapest type.
	Requests, Overhead Resources
	// Price is the cheapest offering's price of the cheapest type.
	Price float64
}

// PodError says why a pod could not be placed.
type PodError struct {
	Pod *corev1.Pod
	Err error
}

// Result is one round's decisions.
type Result struct {
	// Existing maps an existing or in-flight node's name to the pods placed
	// on it.
	Existing map[string][]*corev1.Pod
	NewNodes []NewNode
	// Unschedulable lists the pods that fit nowhere, in input order.
	Unschedulable []PodError
}

// Cost is the total price per hour of the new nodes.
func (r *Result) Cost() float64 {
	var c float64
	for i := range r.NewNodes {
		c += r.NewNodes[i].Price
	}
	return c
}
