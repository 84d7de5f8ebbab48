package v1

import corev1 "k8s.io/api/core/v1"

// NodeSelectorRequirementWithMinValues is a node selector requirement on a
// label, plus how many distinct values of it the candidate instance types
// must still span (minValues), so that a pool keeps launch flexibility.
//
// +kubebuilder:validation:XValidation:rule="self.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] || (has(self.values) && size(self.values) == 1 && self.values[0].matches('^-?[0-9]+$'))",message="Gt and Lt take exactly one integer value"
// +kubebuilder:validation:XValidation:rule="self.operator != 'In' || (has(self.values) && size(self.values) > 0)",message="In needs at least one value"
// +kubebuilder:validation:XValidation:rule="!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",message="Exists and DoesNotExist take no values"
// +kubebuilder:validation:XValidation:rule="!has(self.minValues) || self.operator in ['Exists', 'NotIn'] || (self.operator == 'In' && has(self.values) && size(self.values) >= self.minValues)",message="minValues needs In with at least minValues values, Exists or NotIn"
type NodeSelectorRequirementWithMinValues struct {
	// Key is the label the requirement reads.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=316
	Key string `json:"key"`
	// Operator is In, NotIn, Exists, DoesNotExist, Gt or Lt.
	// +kubebuilder:validation:Enum=In;NotIn;Exists;DoesNotExist;Gt;Lt
	Operator corev1.NodeSelectorOperator `json:"operator"`
	// Values of the label; one integer for Gt and Lt, none for Exists and
	// DoesNotExist.
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=63
	// +optional
	Values []string `json:"values,omitempty"`
	// MinValues is the least number of distinct values of Key that the
	// instance types chosen for a launch must cover.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=50
	// +optional
	MinValues *int32 `json:"minValues,omitempty"`
}

// NodeClassReference names the NodeClass a pool or claim launches with.
type NodeClassReference struct {
	// Group of the NodeClass. Default is autonode.dev.
	// +kubebuilder:default=autonode.dev
	// +kubebuilder:validation:Enum=autonode.dev
	// +optional
	Group string `json:"group,omitempty"`
	// Kind of the NodeClass. Default is NodeClass.
	// +kubebuilder:default=NodeClass
	// +kubebuilder:validation:Enum=NodeClass
	// +optional
	Kind string `json:"kind,omitempty"`
	// Name of the NodeClass.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}
