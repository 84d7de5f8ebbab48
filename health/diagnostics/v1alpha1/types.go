// Package v1alpha1 is the autonode.dev/v1alpha1 NodeDiagnostic API: a
// cluster-scoped object, named after a Node, that asks that node's agent to
// capture a support bundle (journald units, kernel log, network state, the
// agent's own state) and deliver it to a presigned URL or keep it on the node.
//
// The CRD that serves these types, deploy/crds/autonode.dev_nodediagnostics.yaml,
// and the DeepCopy methods in zz_generated.deepcopy.go are generated from
// these types and their markers by controller-gen v0.23.0, pinned by the
// tools module hack/controller-gen; `make generate` runs the go:generate
// lines below.
//
// +groupName=autonode.dev
// +kubebuilder:object:generate=true
package v1alpha1

//go:generate go run -modfile=../../../hack/controller-gen/go.mod sigs.k8s.io/controller-tools/cmd/controller-gen object paths=./...
//go:generate go run -modfile=../../../hack/controller-gen/go.mod sigs.k8s.io/controller-tools/cmd/controller-gen crd paths=./... output:crd:dir=../../../deploy/crds

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of NodeDiagnostic.
var GroupVersion = schema.GroupVersion{Group: "autonode.dev", Version: "v1alpha1"}

// AddToScheme registers NodeDiagnostic and NodeDiagnosticList with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &NodeDiagnostic{}, &NodeDiagnosticList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// DestinationNode is the LogCapture destination that keeps the bundle on the
// node, where the kubelet's log handler serves it.
const DestinationNode = "node"

// Category selects what a capture collects.
// +kubebuilder:validation:Enum=All;System;Networking;Runtime;Devices;Storage
type Category string

// The categories a capture can ask for.
const (
	// CategoryAll collects everything below.
	CategoryAll Category = "All"
	// CategorySystem: the kubelet's and the agent's journal, the kernel log.
	CategorySystem Category = "System"
	// CategoryNetworking: links, addresses, routes (all tables), rules.
	CategoryNetworking Category = "Networking"
	// CategoryRuntime: containerd's journal and its runtime information.
	CategoryRuntime Category = "Runtime"
	// CategoryDevices: the kernel log, where device errors land.
	CategoryDevices Category = "Devices"
	// CategoryStorage: the kernel log and the mount table.
	CategoryStorage Category = "Storage"
)

// Condition types on a NodeDiagnostic.
const (
	// ConditionStarted is True once the agent has begun the capture of the
	// current generation.
	ConditionStarted = "Started"
	// ConditionSucceeded is Unknown while the capture runs, then True when the
	// bundle reached its destination, or False with the reason it did not.
	ConditionSucceeded = "Succeeded"
)

// Reasons on the conditions and capture statuses.
const (
	ReasonCapturing      = "Capturing"
	ReasonUploaded       = "Uploaded"
	ReasonStoredOnNode   = "StoredOnNode"
	ReasonCaptureFailed  = "CaptureFailed"
	ReasonUploadFailed   = "UploadFailed"
	ReasonBundleTooLarge = "BundleTooLarge"
	ReasonNoLogCapture   = "NoLogCapture"
)

// CaptureType names one kind of capture in status.captureStatuses.
const CaptureTypeLogCapture = "LogCapture"

// CaptureState is where one capture is.
type CaptureState string

// The states of a capture.
const (
	CaptureRunning   CaptureState = "Running"
	CaptureSucceeded CaptureState = "Succeeded"
	CaptureFailed    CaptureState = "Failed"
)

// NodeDiagnostic asks the agent on the Node of the same name for a support
// bundle.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=nd
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Destination",type=string,JSONPath=`.spec.logCapture.destination`,priority=1
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.captureStatuses[?(@.type=="LogCapture")].state`
// +kubebuilder:printcolumn:name="Location",type=string,JSONPath=`.status.captureStatuses[?(@.type=="LogCapture")].location`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeDiagnostic struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   NodeDiagnosticSpec   `json:"spec,omitempty"`
	Status NodeDiagnosticStatus `json:"status,omitempty"`
}

// NodeDiagnosticSpec is what the user asks for. A change to it (a new
// metadata.generation) makes the agent capture again.
type NodeDiagnosticSpec struct {
	// LogCapture asks for a support bundle; without it nothing is captured.
	LogCapture *LogCapture `json:"logCapture,omitempty"`
}

// LogCapture says what to collect and where to deliver it.
type LogCapture struct {
	// Destination is a presigned URL (http or https) that takes an HTTP PUT
	// of the bundle, or "node" to keep the bundle under the node's
	// /var/log/support/, served by the kubelet at
	// /api/v1/nodes/<node>/proxy/logs/support/<file>.
	// +kubebuilder:validation:Pattern=`^(node|https?://[^\s]+)$`
	// +kubebuilder:validation:MaxLength=8192
	Destination string `json:"destination"`
	// Categories select what to collect. Empty means All.
	// +kubebuilder:validation:MaxItems=6
	// +listType=set
	Categories []Category `json:"categories,omitempty"`
}

// NodeDiagnosticStatus is what the agent reports.
type NodeDiagnosticStatus struct {
	// ObservedGeneration is the spec generation the status describes.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions are Started and Succeeded.
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// CaptureStatuses has one entry per capture type (today only LogCapture).
	// +listType=map
	// +listMapKey=type
	CaptureStatuses []CaptureStatus `json:"captureStatuses,omitempty"`
}

// CaptureStatus reports one capture.
type CaptureStatus struct {
	// Type is the kind of capture: LogCapture.
	Type string `json:"type"`
	// State is Running, Succeeded or Failed.
	// +kubebuilder:validation:Enum=Running;Succeeded;Failed
	State CaptureState `json:"state"`
	// Reason is a CamelCase cause, as on the Succeeded condition.
	Reason string `json:"reason,omitempty"`
	// Message says what happened, for humans.
	Message string `json:"message,omitempty"`
	// Location is where the bundle is: the destination URL without its
	// query (the presigned signature is never written), or, when kept on
	// the node, the apiserver path that serves it:
	// /api/v1/nodes/<node>/proxy/logs/support/<file>.
	Location string `json:"location,omitempty"`
	// NodePath is the bundle's path on the node, when it was kept there.
	NodePath string `json:"nodePath,omitempty"`
	// SizeBytes is the bundle's size.
	SizeBytes int64 `json:"sizeBytes,omitempty"`
	// StartTime is when the capture began.
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// CompletionTime is when it succeeded or failed.
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// NodeDiagnosticList is a list of NodeDiagnostics.
//
// +kubebuilder:object:root=true
type NodeDiagnosticList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeDiagnostic `json:"items"`
}
