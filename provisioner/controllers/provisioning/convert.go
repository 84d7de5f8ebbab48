package provisioning

import (
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/cloud"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// InstanceTypes converts the cloud provider's instance types into the
// scheduler's. A type whose capacity names a resource the scheduler does
// not model keeps the rest: the resource is simply not planned with.
func InstanceTypes(in []*cloud.InstanceType) []*scheduling.InstanceType {
	out := make([]*scheduling.InstanceType, 0, len(in))
	for _, it := range in {
		st := &scheduling.InstanceType{
			Name: it.Name, Arch: it.Arch,
			Capacity:    modelled(it.Capacity),
			Allocatable: modelled(it.Allocatable),
			Labels:      maps.Clone(it.Labels),
			Offerings:   make([]scheduling.Offering, 0, len(it.Offerings)),
		}
		for _, o := range it.Offerings {
			st.Offerings = append(st.Offerings, scheduling.Offering{Zone: o.Zone, CapacityType: o.CapacityType, Price: o.Price, Available: o.Available})
		}
		out = append(out, st)
	}
	return out
}

// modelled converts the dimensions of l that the scheduler models.
func modelled(l corev1.ResourceList) scheduling.Resources {
	var r scheduling.Resources
	for res := range scheduling.NumResources {
		if q, ok := l[res.ResourceName()]; ok {
			one, _ := scheduling.ResourcesFromList(corev1.ResourceList{res.ResourceName(): q})
			r[res] = one[res]
		}
	}
	return r
}

// Requirements converts API requirements into the scheduler's.
func Requirements(in []v1.NodeSelectorRequirementWithMinValues) []scheduling.Requirement {
	out := make([]scheduling.Requirement, 0, len(in))
	for _, r := range in {
		sr := scheduling.Requirement{Key: r.Key, Operator: r.Operator, Values: r.Values}
		if r.MinValues != nil {
			sr.MinValues = int(*r.MinValues)
		}
		out = append(out, sr)
	}
	return out
}

// maxRequirementValues is how many values one NodeClaim requirement may
// carry (the CRD's maxItems).
const maxRequirementValues = 100

// maxClaimInstanceTypes is how many of a new node's cheapest types its
// NodeClaim keeps: the cloud provider offers at most 60 to one CreateFleet,
// so more would only make the object bigger.
const maxClaimInstanceTypes = 60

// APIRequirements converts the scheduler's narrowed requirements back into
// a NodeClaim's. An In requirement on the instance type takes the names in
// cheapestFirst order, keeping the cheapest maxClaimInstanceTypes (or as
// many as its minValues needs).
func APIRequirements(in []scheduling.Requirement, cheapestFirst []string) ([]v1.NodeSelectorRequirementWithMinValues, error) {
	out := make([]v1.NodeSelectorRequirementWithMinValues, 0, len(in))
	for _, r := range in {
		values := r.Values
		if r.Key == corev1.LabelInstanceTypeStable && r.Operator == corev1.NodeSelectorOpIn && len(cheapestFirst) > 0 {
			values = cheapestFirst[:min(len(cheapestFirst), max(maxClaimInstanceTypes, r.MinValues))]
		}
		if len(values) > maxRequirementValues {
			return nil, fmt.Errorf("requirement %s has %d values, more than a NodeClaim holds (%d)", r.Key, len(values), maxRequirementValues)
		}
		ar := v1.NodeSelectorRequirementWithMinValues{Key: r.Key, Operator: r.Operator, Values: values}
		if r.MinValues > 0 {
			mv := int32(r.MinValues)
			ar.MinValues = &mv
		}
		out = append(out, ar)
	}
	return out, nil
}
