package scheduling

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// kubeMatches is the oracle: apimachinery's label selector, which
// kube-scheduler's node affinity builds from node selector requirements. A
// requirement it refuses to build matches nothing there too.
func kubeMatches(t *testing.T, op corev1.NodeSelectorOperator, values []string, value string, present bool) bool {
	t.Helper()
	ops := map[corev1.NodeSelectorOperator]selection.Operator{
		corev1.NodeSelectorOpIn: selection.In, corev1.NodeSelectorOpNotIn: selection.NotIn,
		corev1.NodeSelectorOpExists: selection.Exists, corev1.NodeSelectorOpDoesNotExist: selection.DoesNotExist,
		corev1.NodeSelectorOpGt: selection.GreaterThan, corev1.NodeSelectorOpLt: selection.LessThan,
	}
	sop, ok := ops[op]
	if !ok {
		return false
	}
	r, err := labels.NewRequirement("example.com/k", sop, values)
	if err != nil {
		return false
	}
	set := labels.Set{}
	if present {
		set["example.com/k"] = value
	}
	return r.Matches(set)
}

func TestLabelMatches(t *testing.T) {
	const (
		in    = corev1.NodeSelectorOpIn
		notIn = corev1.NodeSelectorOpNotIn
		ex    = corev1.NodeSelectorOpExists
		dne   = corev1.NodeSelectorOpDoesNotExist
		gt    = corev1.NodeSelectorOpGt
		lt    = corev1.NodeSelectorOpLt
	)
	tests := []struct {
		name    string
		op      corev1.NodeSelectorOperator
		values  []string
		value   string
		present bool
		want    bool
	}{
		{"in hit", in, []string{"a", "b"}, "b", true, true},
		{"in miss", in, []string{"a", "b"}, "c", true, false},
		{"in absent", in, []string{"a"}, "", false, false},
		{"in empty value present", in, []string{""}, "", true, true},
		{"notin hit", notIn, []string{"a"}, "a", true, false},
		{"notin miss", notIn, []string{"a"}, "b", true, true},
		{"notin absent matches", notIn, []string{"a"}, "", false, true},
		{"exists present", ex, nil, "x", true, true},
		{"exists present empty", ex, nil, "", true, true},
		{"exists absent", ex, nil, "", false, false},
		{"doesnotexist present", dne, nil, "x", true, false},
		{"doesnotexist absent", dne, nil, "", false, true},
		{"gt above", gt, []string{"4"}, "5", true, true},
		{"gt equal", gt, []string{"5"}, "5", true, false},
		{"gt below", gt, []string{"6"}, "5", true, false},
		{"gt negative bound", gt, []string{"-3"}, "-2", true, true},
		{"gt absent", gt, []string{"1"}, "", false, false},
		{"gt label not integer", gt, []string{"1"}, "abc", true, false},
		{"gt label trailing junk", gt, []string{"3"}, "5abc", true, false},
		{"gt label hex", gt, []string{"3"}, "0x10", true, false},
		{"gt label space", gt, []string{"3"}, " 5", true, false},
		{"gt label plus sign", gt, []string{"3"}, "+5", true, true},
		{"gt value not integer", gt, []string{"x"}, "5", true, false},
		{"gt no values", gt, nil, "5", true, false},
		{"gt two values", gt, []string{"1", "2"}, "5", true, false},
		{"lt below", lt, []string{"8"}, "7", true, true},
		{"lt equal", lt, []string{"7"}, "7", true, false},
		{"lt above", lt, []string{"6"}, "7", true, false},
		{"lt absent", lt, []string{"8"}, "", false, false},
		{"lt label overflow", lt, []string{"8"}, "99999999999999999999", true, false},
		{"unknown operator", corev1.NodeSelectorOperator("Near"), []string{"a"}, "a", true, false},
	}
	// apimachinery also demands that a requirement's values be valid label
	// values, so it refuses a negative bound that the NodePool CRD
	// (^-?[0-9]+$) and the core API admit.
	kubeRefuses := map[string]bool{"gt negative bound": true}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := LabelMatches(tt.op, tt.values, tt.value, tt.present)
			if got != tt.want {
				t.Fatalf("LabelMatches(%s, %q, %q, present=%v) = %v, want %v", tt.op, tt.values, tt.value, tt.present, got, tt.want)
			}
			if kube := kubeMatches(t, tt.op, tt.values, tt.value, tt.present); kube != (tt.want && !kubeRefuses[tt.name]) {
				t.Fatalf("apimachinery says %v, table says %v", kube, tt.want)
			}
			r := Requirement{Key: "example.com/k", Operator: tt.op, Values: tt.values}
			if m := r.matches(tt.value, tt.present); m != got {
				t.Fatalf("Requirement.matches = %v, LabelMatches = %v", m, got)
			}
		})
	}
}
