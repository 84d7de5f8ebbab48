package v1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodePool says which nodes the provisioner may make for pending pods (the
// template and its requirements), how many (limits), in which order among
// pools (weight), and when it may take them away again (disruption).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=np
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="NodeClass",type=string,JSONPath=`.spec.template.spec.nodeClassRef.name`
// +kubebuilder:printcolumn:name="Weight",type=integer,JSONPath=`.spec.weight`,priority=1
// +kubebuilder:printcolumn:name="CPU",type=string,JSONPath=`.status.resources.cpu`
// +kubebuilder:printcolumn:name="Memory",type=string,JSONPath=`.status.resources.memory`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodePool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   NodePoolSpec   `json:"spec"`
	Status NodePoolStatus `json:"status,omitempty"`
}

// NodePoolSpec is what a NodePool asks for.
type NodePoolSpec struct {
	// Template is what every NodeClaim of the pool starts from.
	Template NodeClaimTemplate `json:"template"`
	// Disruption says when nodes of the pool may be taken away.
	// +kubebuilder:default={consolidateAfter: "0s"}
	// +optional
	Disruption Disruption `json:"disruption"`
	// Limits cap the total capacity (cpu, memory, nvidia.com/gpu, ...) of
	// the pool's nodes; a launch that would pass them does not happen.
	// +optional
	Limits corev1.ResourceList `json:"limits,omitempty"`
	// Weight orders pools: a pod goes to the heaviest pool that can hold it.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	Weight *int32 `json:"weight,omitempty"`
}

// NodeClaimTemplate is the part of a NodeClaim that its pool fixes.
type NodeClaimTemplate struct {
	// +optional
	ObjectMeta TemplateMeta          `json:"metadata,omitempty"`
	Spec       NodeClaimTemplateSpec `json:"spec"`
}

// TemplateMeta is the metadata the pool's Nodes get.
type TemplateMeta struct {
	// Labels are copied onto the NodeClaim and its Node. The labels the
	// provisioner owns may not be set here.
	// +kubebuilder:validation:XValidation:rule="self.all(k, !(k in ['autonode.dev/nodepool', 'autonode.dev/nodeclaim']))",message="autonode.dev/nodepool and autonode.dev/nodeclaim are set by the provisioner"
	// +kubebuilder:validation:MaxProperties=100
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are copied onto the NodeClaim and its Node.
	// +kubebuilder:validation:MaxProperties=100
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// NodeClaimTemplateSpec is the NodeClaim spec a pool fixes; resources come
// from the pods each claim is made for.
type NodeClaimTemplateSpec struct {
	// Taints the Node carries for its whole life.
	// +kubebuilder:validation:MaxItems=50
	// +optional
	Taints []corev1.Taint `json:"taints,omitempty"`
	// StartupTaints the Node carries until something removes them, such as
	// autonode.dev/agent-not-ready, which the node agent removes once ready.
	// Pods need not tolerate them to be planned onto the node.
	// +kubebuilder:validation:MaxItems=50
	// +optional
	StartupTaints []corev1.Taint `json:"startupTaints,omitempty"`
	// Requirements narrow the instance types, zones, capacity types and
	// architectures the pool may launch.
	// +kubebuilder:validation:MaxItems=100
	// +optional
	Requirements []NodeSelectorRequirementWithMinValues `json:"requirements,omitempty"`
	// NodeClassRef names the NodeClass the pool's nodes launch with.
	NodeClassRef NodeClassReference `json:"nodeClassRef"`
	// ExpireAfter is how long a node lives before it is replaced. Default
	// is 336h (14 days); at most 504h (21 days).
	// +kubebuilder:default="336h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s') && duration(self) <= duration('504h')",message="expireAfter must be more than 0s and at most 504h (21 days)"
	// +optional
	ExpireAfter *metav1.Duration `json:"expireAfter,omitempty"`
	// TerminationGracePeriod is how long a draining node may wait for pods
	// (PodDisruptionBudgets, do-not-disrupt) before it drains regardless.
	// Unset, it waits as long as it takes.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(s|m|h))+$`
	// +optional
	TerminationGracePeriod *metav1.Duration `json:"terminationGracePeriod,omitempty"`
}

// ConsolidationPolicy says which nodes consolidation may remove.
// +kubebuilder:validation:Enum=WhenEmpty;WhenEmptyOrUnderutilized
type ConsolidationPolicy string

// The consolidation policies.
const (
	ConsolidationWhenEmpty                = ConsolidationPolicy("WhenEmpty")
	ConsolidationWhenEmptyOrUnderutilized = ConsolidationPolicy("WhenEmptyOrUnderutilized")
)

// DisruptionReason is why a node is disrupted; budgets may name them.
// +kubebuilder:validation:Enum=Empty;Underutilized;Drifted;Expired;Unhealthy
type DisruptionReason string

// The disruption reasons. Empty, Underutilized and Drifted are graceful
// (they never break a PodDisruptionBudget); Expired and Unhealthy are
// forceful once terminationGracePeriod runs out.
const (
	ReasonEmpty         = DisruptionReason("Empty")
	ReasonUnderutilized = DisruptionReason("Underutilized")
	ReasonDrifted       = DisruptionReason("Drifted")
	ReasonExpired       = DisruptionReason("Expired")
	ReasonUnhealthy     = DisruptionReason("Unhealthy")
)

// Disruption is a pool's consolidation policy and disruption budgets.
type Disruption struct {
	// ConsolidationPolicy is which nodes consolidation considers. Default is
	// WhenEmptyOrUnderutilized.
	// +kubebuilder:default=WhenEmptyOrUnderutilized
	// +optional
	ConsolidationPolicy ConsolidationPolicy `json:"consolidationPolicy,omitempty"`
	// ConsolidateAfter is how long a node must have seen no pod come or go
	// before consolidation considers it; "Never" turns consolidation off.
	ConsolidateAfter NillableDuration `json:"consolidateAfter"`
	// Budgets cap how many of the pool's nodes may be disrupted at once,
	// per reason and time window; the most restrictive active one wins.
	// Default is 10% of the nodes for the graceful reasons (a budget that
	// names no reasons covers Empty, Underutilized and Drifted, as in
	// Karpenter); Expired and Unhealthy are limited only by budgets that
	// name them.
	// +kubebuilder:default={{nodes: "10%"}}
	// +kubebuilder:validation:MaxItems=50
	// +optional
	Budgets []Budget `json:"budgets,omitempty"`
}

// Budget caps disruptions of a pool's nodes, for some reasons (the graceful
// ones when unset), always or during a window that opens on a cron schedule
// and stays open for duration.
//
// +kubebuilder:validation:XValidation:rule="has(self.schedule) == has(self.duration)",message="schedule and duration go together"
type Budget struct {
	// Reasons the budget applies to; when unset, the graceful ones (Empty,
	// Underutilized, Drifted).
	// +kubebuilder:validation:MaxItems=5
	// +optional
	Reasons []DisruptionReason `json:"reasons,omitempty"`
	// Nodes is how many nodes may be disrupted at once: a count ("5") or a
	// percentage of the pool's nodes ("10%", rounded up). "0" blocks.
	// +kubebuilder:default="10%"
	// +kubebuilder:validation:Pattern=`^((100|[0-9]{1,2})%|[0-9]+)$`
	// +optional
	Nodes string `json:"nodes"`
	// Schedule is a UTC cron expression (five fields, or @daily and its
	// kin) at which the budget's window opens.
	// +kubebuilder:validation:Pattern=`^(@(annually|yearly|monthly|weekly|daily|midnight|hourly))|((.+)\s(.+)\s(.+)\s(.+)\s(.+))$`
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Schedule *string `json:"schedule,omitempty"`
	// Duration is how long the window stays open after each Schedule tick.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(s|m|h))+$`
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`
}

// NodePoolStatus is what the provisioner observed of a pool.
type NodePoolStatus struct {
	// Resources is the total capacity of the pool's nodes.
	// +optional
	Resources corev1.ResourceList `json:"resources,omitempty"`
	// Nodes is how many NodeClaims the pool has.
	// +optional
	Nodes int64 `json:"nodes,omitempty"`
	// Conditions: Ready once the pool's NodeClass is ready.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NodePoolList is a list of NodePools.
//
// +kubebuilder:object:root=true
type NodePoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodePool `json:"items"`
}
