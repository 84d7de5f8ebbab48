package v1

// Labels the provisioner puts on the Nodes it makes (DESIGN.md, "Names
// shared across issues"), beside the well-known ones of corev1
// (node.kubernetes.io/instance-type, topology.kubernetes.io/zone and
// region, kubernetes.io/arch).
const (
	LabelNodePool     = "autonode.dev/nodepool"
	LabelNodeClaim    = "autonode.dev/nodeclaim"
	LabelCapacityType = "autonode.dev/capacity-type"
)

// Values of LabelCapacityType.
const (
	CapacityTypeOnDemand = "on-demand"
	CapacityTypeSpot     = "spot"
)

// Labels that requirements may name besides the well-known ones, so that
// pools can pick types by family and generation (c, m, r; generation > 4).
const (
	LabelInstanceCategory   = "autonode.dev/instance-category"
	LabelInstanceFamily     = "autonode.dev/instance-family"
	LabelInstanceGeneration = "autonode.dev/instance-generation"
	LabelInstanceSize       = "autonode.dev/instance-size"
)

// EC2 tags on the instances (and launch templates) the provisioner owns.
const (
	TagCluster   = "autonode.dev/cluster"
	TagNodePool  = "autonode.dev/nodepool"
	TagNodeClaim = "autonode.dev/nodeclaim"
)

// StartupTaintAgentNotReady is on every new node until the node agent reports
// all its subsystems ready; its removal is the provisioner's "initialized"
// signal.
const StartupTaintAgentNotReady = "autonode.dev/agent-not-ready"

// MaxExpireAfter is the longest expireAfter a NodePool may ask for, and
// DefaultExpireAfter the default (Auto Mode's built-in pools use it too).
const (
	MaxExpireAfter     = "504h"
	DefaultExpireAfter = "336h"
)
