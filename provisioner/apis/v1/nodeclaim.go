package v1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeClaim is one node the provisioner launches or runs: what it must
// satisfy (spec, fixed once created) and what it became (status: instance,
// Node, capacity, lifecycle conditions).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=nc
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.metadata.labels.node\.kubernetes\.io/instance-type`
// +kubebuilder:printcolumn:name="Capacity",type=string,JSONPath=`.metadata.labels.autonode\.dev/capacity-type`
// +kubebuilder:printcolumn:name="Zone",type=string,JSONPath=`.metadata.labels.topology\.kubernetes\.io/zone`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.nodeName`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="ProviderID",type=string,JSONPath=`.status.providerID`,priority=1
type NodeClaim struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   NodeClaimSpec   `json:"spec"`
	Status NodeClaimStatus `json:"status,omitempty"`
}

// NodeClaimSpec is what the node must satisfy. It cannot change once made;
// a different node is a different claim.
//
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable"
type NodeClaimSpec struct {
	// Taints the Node carries for its whole life.
	// +kubebuilder:validation:MaxItems=50
	// +optional
	Taints []corev1.Taint `json:"taints,omitempty"`
	// StartupTaints the Node carries until something (the node agent, for
	// autonode.dev/agent-not-ready) removes them.
	// +kubebuilder:validation:MaxItems=50
	// +optional
	StartupTaints []corev1.Taint `json:"startupTaints,omitempty"`
	// Requirements the launched instance must meet: instance types, zones,
	// capacity type, architecture and the pool's own.
	// +kubebuilder:validation:MaxItems=100
	// +optional
	Requirements []NodeSelectorRequirementWithMinValues `json:"requirements,omitempty"`
	// Resources the node must offer beyond its daemon sets: the sum of the
	// pods the claim was made for.
	// +optional
	Resources ResourceRequirements `json:"resources,omitempty"`
	// NodeClassRef names the NodeClass to launch with.
	NodeClassRef NodeClassReference `json:"nodeClassRef"`
	// ExpireAfter is how long the node lives before it is replaced.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s') && duration(self) <= duration('504h')",message="expireAfter must be more than 0s and at most 504h (21 days)"
	// +optional
	ExpireAfter *metav1.Duration `json:"expireAfter,omitempty"`
	// TerminationGracePeriod bounds how long draining waits for pods.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(s|m|h))+$`
	// +optional
	TerminationGracePeriod *metav1.Duration `json:"terminationGracePeriod,omitempty"`
}

// ResourceRequirements are the resources a claim must offer.
type ResourceRequirements struct {
	// Requests the node must be able to hold.
	// +optional
	Requests corev1.ResourceList `json:"requests,omitempty"`
}

// NodeClaim condition types. Launched, Registered and Initialized follow a
// claim through its life; Ready is True once all three are.
const (
	// ConditionLaunched: the instance exists (status.providerID is set).
	ConditionLaunched = "Launched"
	// ConditionRegistered: a Node with the claim's providerID has joined.
	ConditionRegistered = "Registered"
	// ConditionInitialized: the Node is Ready, its startup taints are gone
	// (autonode.dev/agent-not-ready among them) and its extended resources
	// are advertised.
	ConditionInitialized = "Initialized"
	// ConditionReady: Launched, Registered and Initialized.
	ConditionReady = "Ready"
	// ConditionDrifted: the claim no longer matches its pool or NodeClass
	// (template hash, requirements, resolved AMI).
	ConditionDrifted = "Drifted"
	// ConditionExpired: the claim has lived past expireAfter.
	ConditionExpired = "Expired"
	// ConditionConsolidatable: consolidateAfter has passed since the last
	// pod came or went, so consolidation may consider the node.
	ConditionConsolidatable = "Consolidatable"
	// ConditionDisrupting: the node is being taken away; the reason says why.
	ConditionDisrupting = "Disrupting"
	// ConditionInstanceTerminating: the instance has been asked to terminate.
	ConditionInstanceTerminating = "InstanceTerminating"
)

// NodeClaimStatus is what the claim became.
type NodeClaimStatus struct {
	// ProviderID of the instance: aws:///<zone>/<instance-id>.
	// +optional
	ProviderID string `json:"providerID,omitempty"`
	// NodeName of the Node that registered for the instance.
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// ImageID is the AMI the instance booted.
	// +optional
	ImageID string `json:"imageID,omitempty"`
	// Capacity of the instance type.
	// +optional
	Capacity corev1.ResourceList `json:"capacity,omitempty"`
	// Allocatable is Capacity less the VM overhead, reserved resources and
	// eviction thresholds, as the node will report it.
	// +optional
	Allocatable corev1.ResourceList `json:"allocatable,omitempty"`
	// LastPodEventTime is when a pod last bound to or left the node;
	// consolidateAfter counts from it.
	// +optional
	LastPodEventTime metav1.Time `json:"lastPodEventTime,omitempty"`
	// Conditions of the claim's lifecycle.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NodeClaimList is a list of NodeClaims.
//
// +kubebuilder:object:root=true
type NodeClaimList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeClaim `json:"items"`
}
