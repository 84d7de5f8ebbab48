package ec2

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/autonode/autonode/sandbox/catalog"
	"github.com/autonode/autonode/sandbox/vpc"
)

// CreateFleet error codes beyond the common ones.
const (
	CodeUnsupportedOperation         = "UnsupportedOperation"
	CodeInsufficientInstanceCapacity = "InsufficientInstanceCapacity"
	CodeSpotMaxPriceTooLow           = "SpotMaxPriceTooLow"
)

// Bounds of one request: EC2 caps overrides, and an instant fleet's
// capacity is capped here so a typo cannot launch a whole subnet.
const (
	maxFleetOverrides = 300
	maxFleetCapacity  = 1000
)

// fleetCandidate is one launch template config with one of its overrides.
type fleetCandidate struct {
	template  *LaunchTemplate
	version   string
	byName    bool
	instType  catalog.InstanceType
	subnet    vpc.Subnet
	imageID   string
	priority  float64
	hasPrio   bool
	maxPrice  float64
	order     int
	typeKnown bool
	typeName  string
}

type xmlFleetLaunchTemplateSpec struct {
	LaunchTemplateID   string `xml:"launchTemplateId,omitempty"`
	LaunchTemplateName string `xml:"launchTemplateName,omitempty"`
	Version            string `xml:"version"`
}

type xmlFleetOverrides struct {
	InstanceType     string `xml:"instanceType"`
	SubnetID         string `xml:"subnetId,omitempty"`
	AvailabilityZone string `xml:"availabilityZone,omitempty"`
	ImageID          string `xml:"imageId,omitempty"`
	Priority         string `xml:"priority,omitempty"`
}

type xmlLaunchTemplateAndOverrides struct {
	LaunchTemplateSpecification xmlFleetLaunchTemplateSpec `xml:"launchTemplateSpecification"`
	Overrides                   xmlFleetOverrides          `xml:"overrides"`
}

type xmlFleetError struct {
	LaunchTemplateAndOverrides xmlLaunchTemplateAndOverrides `xml:"launchTemplateAndOverrides"`
	Lifecycle                  string                        `xml:"lifecycle"`
	ErrorCode                  string                        `xml:"errorCode"`
	ErrorMessage               string                        `xml:"errorMessage"`
}

type xmlFleetInstance struct {
	LaunchTemplateAndOverrides xmlLaunchTemplateAndOverrides `xml:"launchTemplateAndOverrides"`
	Lifecycle                  string                        `xml:"lifecycle"`
	InstanceIDs                Items[string]                 `xml:"instanceIds"`
	InstanceType               string                        `xml:"instanceType"`
	SubnetID                   string                        `xml:"subnetId"`
	AvailabilityZone           string                        `xml:"availabilityZone"`
	Platform                   string                        `xml:"platform,omitempty"`
}

type createFleetResponse struct {
	FleetID          string                  `xml:"fleetId"`
	ErrorSet         Items[xmlFleetError]    `xml:"errorSet"`
	FleetInstanceSet Items[xmlFleetInstance] `xml:"fleetInstanceSet"`
}

func (c *fleetCandidate) xml() xmlLaunchTemplateAndOverrides {
	spec := xmlFleetLaunchTemplateSpec{Version: c.version}
	if c.byName {
		spec.LaunchTemplateName = c.template.Name
	} else {
		spec.LaunchTemplateID = c.template.ID
	}
	o := xmlFleetOverrides{InstanceType: c.typeName, SubnetID: c.subnet.ID, AvailabilityZone: c.subnet.Zone.Name, ImageID: c.imageID}
	if c.hasPrio {
		o.Priority = strconv.FormatFloat(c.priority, 'f', -1, 64)
	}
	return xmlLaunchTemplateAndOverrides{LaunchTemplateSpecification: spec, Overrides: o}
}

// createFleet serves instant fleets the way EC2 does: malformed requests
// are API errors, while each pool that cannot launch (no capacity, spot
// price above MaxPrice, an image of the wrong architecture) becomes an entry
// of errorSet in an HTTP 200 answer, and the fleet launches what it can from
// the other pools in allocation-strategy order.
//
// On-demand "lowest-price" orders pools by on-demand price and
// "prioritized" by Priority. Spot "price-capacity-optimized",
// "capacity-optimized", "lowest-price" and "diversified" all order by spot
// price: every pool of the sandbox has the same depth until
// SetInsufficientCapacity empties it, so price is the only signal left;
// "capacity-optimized-prioritized" orders by Priority.
func (s *Server) createFleet(_ context.Context, r *Request) (any, error) {
	if typ := r.Get("Type"); typ != "instant" {
		if typ == "" {
			typ = "maintain"
		}
		return nil, Errorf(CodeUnsupportedOperation, "The sandbox serves only instant fleets, not %q", typ)
	}
	total, ok, err := r.Int("TargetCapacitySpecification.TotalTargetCapacity")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, Errorf(CodeMissingParameter, "The request must contain the parameter TargetCapacitySpecification.TotalTargetCapacity")
	}
	if total < 1 || total > maxFleetCapacity {
		return nil, Errorf(CodeInvalidParameterValue, "The target capacity must be between 1 and %d", maxFleetCapacity)
	}
	defaultType := r.Get("TargetCapacitySpecification.DefaultTargetCapacityType")
	if defaultType == "" {
		return nil, Errorf(CodeMissingParameter, "The request must contain the parameter TargetCapacitySpecification.DefaultTargetCapacityType")
	}
	if defaultType != "on-demand" && defaultType != "spot" {
		return nil, Errorf(CodeInvalidParameterValue, "Invalid value '%s' for DefaultTargetCapacityType", defaultType)
	}
	spotCount, spotSet, err := r.Int("TargetCapacitySpecification.SpotTargetCapacity")
	if err != nil {
		return nil, err
	}
	odCount, odSet, err := r.Int("TargetCapacitySpecification.OnDemandTargetCapacity")
	if err != nil {
		return nil, err
	}
	switch {
	case spotSet && odSet && spotCount+odCount > total:
		return nil, Errorf(CodeInvalidParameterValue, "The sum of SpotTargetCapacity and OnDemandTargetCapacity exceeds TotalTargetCapacity")
	case spotSet:
		odCount = total - spotCount
	case odSet:
		spotCount = total - odCount
	case defaultType == "spot":
		spotCount, odCount = total, 0
	default:
		spotCount, odCount = 0, total
	}
	odStrategy := cmp.Or(r.Get("OnDemandOptions.AllocationStrategy"), "lowest-price")
	if !slices.Contains([]string{"lowest-price", "prioritized"}, odStrategy) {
		return nil, Errorf(CodeInvalidParameterValue, "Invalid value '%s' for OnDemandOptions.AllocationStrategy", odStrategy)
	}
	spotStrategy := cmp.Or(r.Get("SpotOptions.AllocationStrategy"), "lowest-price")
	if !slices.Contains([]string{"lowest-price", "diversified", "capacity-optimized", "capacity-optimized-prioritized", "price-capacity-optimized"}, spotStrategy) {
		return nil, Errorf(CodeInvalidParameterValue, "Invalid value '%s' for SpotOptions.AllocationStrategy", spotStrategy)
	}
	candidates, err := s.fleetCandidates(r)
	if err != nil {
		return nil, err
	}
	var fleetTags, volumeTags []Tag
	for _, spec := range r.TagSpecifications() {
		switch spec.ResourceType {
		case "instance":
			fleetTags = append(fleetTags, spec.Tags...)
		case "volume":
			volumeTags = append(volumeTags, spec.Tags...)
		case "fleet":
		default:
			return nil, Errorf(CodeInvalidParameterValue, "'%s' is not a valid taggable resource type for this operation.", spec.ResourceType)
		}
	}
	_ = volumeTags // the sandbox models no volumes

	resp := createFleetResponse{FleetID: "fleet-" + s.launch.nextID("x")[2:]}
	launched := map[int]*xmlFleetInstance{} // by candidate order
	for _, part := range []struct {
		lifecycle, strategy string
		count               int
	}{{"on-demand", odStrategy, odCount}, {"spot", spotStrategy, spotCount}} {
		if part.count == 0 {
			continue
		}
		ordered := s.orderCandidates(candidates, part.lifecycle, part.strategy)
		failed := map[int]bool{}
		for range part.count {
			placed := false
			for _, c := range ordered {
				if failed[c.order] {
					continue
				}
				code, msg := s.cannotLaunch(c, part.lifecycle)
				if code != "" {
					failed[c.order] = true
					resp.ErrorSet.Items = append(resp.ErrorSet.Items, xmlFleetError{
						LaunchTemplateAndOverrides: c.xml(), Lifecycle: part.lifecycle, ErrorCode: code, ErrorMessage: msg,
					})
					continue
				}
				tags := maps.Clone(c.template.InstanceTags)
				addTags(tags, fleetTags)
				inst, err := s.model.Launch(vpc.LaunchSpec{
					InstanceType: c.typeName, SubnetID: c.subnet.ID, ImageID: c.imageID,
					SecurityGroupIDs: c.template.SecurityGroupIDs, Tags: tags, Spot: part.lifecycle == "spot", Pending: true,
				})
				if err != nil {
					// An exhausted subnet is a per-pool failure too.
					failed[c.order] = true
					e := apiError(err)
					resp.ErrorSet.Items = append(resp.ErrorSet.Items, xmlFleetError{
						LaunchTemplateAndOverrides: c.xml(), Lifecycle: part.lifecycle, ErrorCode: e.Code, ErrorMessage: e.Message,
					})
					continue
				}
				fi := launched[c.order]
				if fi == nil {
					fi = &xmlFleetInstance{
						LaunchTemplateAndOverrides: c.xml(), Lifecycle: part.lifecycle, InstanceType: c.typeName,
						SubnetID: c.subnet.ID, AvailabilityZone: c.subnet.Zone.Name,
					}
					launched[c.order] = fi
				}
				fi.InstanceIDs.Items = append(fi.InstanceIDs.Items, inst.ID)
				placed = true
				break
			}
			if !placed {
				break // every pool failed; the errors say why
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(launched)) {
		resp.FleetInstanceSet.Items = append(resp.FleetInstanceSet.Items, *launched[k])
	}
	return resp, nil
}

// fleetCandidates resolves every LaunchTemplateConfigs.N.Overrides.M.
func (s *Server) fleetCandidates(r *Request) ([]*fleetCandidate, error) {
	configs := r.indices("LaunchTemplateConfigs")
	if len(configs) == 0 {
		return nil, Errorf(CodeMissingParameter, "The request must contain the parameter LaunchTemplateConfigs")
	}
	subnets := s.model.Subnets()
	var (
		out []*fleetCandidate
		err error
	)
	for _, n := range configs {
		p := "LaunchTemplateConfigs." + strconv.Itoa(n) + "."
		id, name := r.Get(p+"LaunchTemplateSpecification.LaunchTemplateId"), r.Get(p+"LaunchTemplateSpecification.LaunchTemplateName")
		switch {
		case id != "" && name != "":
			return nil, Errorf(CodeInvalidParameterCombination, "Specify either a launch template ID or a launch template name, not both")
		case id == "" && name == "":
			return nil, Errorf(CodeMissingParameter, "The request must contain the parameter LaunchTemplateSpecification.LaunchTemplateId or LaunchTemplateName")
		}
		version := cmp.Or(r.Get(p+"LaunchTemplateSpecification.Version"), "$Default")
		if version != "$Latest" && version != "$Default" && version != "1" {
			return nil, Errorf(CodeLaunchTemplateVersion, "Could not find launch template version %s", version)
		}
		s.launch.mu.Lock()
		tmpl := s.launch.template(id, name)
		var copied *LaunchTemplate
		if tmpl != nil {
			c := tmpl.clone()
			copied = &c
		}
		s.launch.mu.Unlock()
		if copied == nil {
			if id != "" {
				return nil, Errorf(CodeLaunchTemplateIDNotFound, "The specified launch template, with template ID %s, does not exist.", id)
			}
			return nil, Errorf(CodeLaunchTemplateNameNotFound, "The specified launch template, with template name %s, does not exist.", name)
		}
		overrides := r.indices(p + "Overrides")
		if len(overrides) == 0 {
			overrides = []int{0} // the template alone
		}
		for _, m := range overrides {
			o := p + "Overrides." + strconv.Itoa(m) + "."
			c := &fleetCandidate{
				template: copied, version: version, byName: name != "", order: len(out),
				typeName: cmp.Or(r.Get(o+"InstanceType"), copied.InstanceType),
				imageID:  cmp.Or(r.Get(o+"ImageId"), copied.ImageID),
			}
			if c.typeName == "" {
				return nil, Errorf(CodeMissingParameter, "The request must contain the parameter InstanceType in the launch template or its overrides")
			}
			c.instType, c.typeKnown = s.instanceType(c.typeName)
			subnetID, zone := r.Get(o+"SubnetId"), r.Get(o+"AvailabilityZone")
			i := slices.IndexFunc(subnets, func(sn vpc.Subnet) bool {
				return (subnetID != "" && sn.ID == subnetID) || (subnetID == "" && (zone == "" || sn.Zone.Name == zone))
			})
			if i < 0 {
				if subnetID != "" {
					return nil, Errorf(CodeSubnetNotFound, "The subnet ID '%s' does not exist", subnetID)
				}
				return nil, Errorf(CodeInvalidParameterValue, "Invalid availability zone: [%s]", zone)
			}
			c.subnet = subnets[i]
			if v := r.Get(o + "Priority"); v != "" {
				if c.priority, err = strconv.ParseFloat(v, 64); err != nil {
					return nil, Errorf(CodeInvalidParameterValue, "Invalid value '%s' for Priority", v)
				}
				c.hasPrio = true
			}
			if v := r.Get(o + "MaxPrice"); v != "" {
				if c.maxPrice, err = strconv.ParseFloat(v, 64); err != nil || c.maxPrice <= 0 {
					return nil, Errorf(CodeInvalidParameterValue, "Invalid value '%s' for MaxPrice", v)
				}
			}
			out = append(out, c)
		}
	}
	if len(out) > maxFleetOverrides {
		return nil, Errorf(CodeInvalidParameterValue, "A fleet request can have at most %d launch template overrides, not %d", maxFleetOverrides, len(out))
	}
	return out, nil
}

// orderCandidates sorts pools in the order a strategy tries them.
func (s *Server) orderCandidates(cs []*fleetCandidate, lifecycle, strategy string) []*fleetCandidate {
	out := slices.Clone(cs)
	byPriority := strategy == "prioritized" || strategy == "capacity-optimized-prioritized"
	s.launch.mu.Lock()
	price := func(c *fleetCandidate) float64 {
		if !c.typeKnown {
			return 0
		}
		if lifecycle == "spot" {
			return s.launch.spotPrice(c.instType, c.subnet.Zone.Name)
		}
		return c.instType.PriceUSDHour
	}
	prices := make(map[int]float64, len(out))
	for _, c := range out {
		prices[c.order] = price(c)
	}
	s.launch.mu.Unlock()
	slices.SortStableFunc(out, func(a, b *fleetCandidate) int {
		if byPriority {
			// Lower Priority values go first; pools without one go last.
			if a.hasPrio != b.hasPrio {
				if a.hasPrio {
					return -1
				}
				return 1
			}
			if c := cmp.Compare(a.priority, b.priority); c != 0 {
				return c
			}
		}
		return cmp.Compare(prices[a.order], prices[b.order])
	})
	return out
}

// cannotLaunch says why a pool cannot launch now, as a fleet error code and
// message, or "" when it can.
func (s *Server) cannotLaunch(c *fleetCandidate, lifecycle string) (string, string) {
	if !c.typeKnown {
		return CodeInvalidParameterValue, fmt.Sprintf("The instance type '%s' does not exist", c.typeName)
	}
	s.launch.mu.Lock()
	defer s.launch.mu.Unlock()
	if c.imageID == "" {
		return CodeMissingParameter, "The request must contain the parameter ImageId"
	}
	img, ok := s.launch.image(c.imageID)
	if !ok {
		return CodeImageNotFound, fmt.Sprintf("The image id '[%s]' does not exist", c.imageID)
	}
	if img.Architecture != c.instType.EC2Architecture() {
		return CodeInvalidParameterValue, fmt.Sprintf("The architecture '%s' of the specified instance type does not match the architecture '%s' of the specified AMI.", c.instType.EC2Architecture(), img.Architecture)
	}
	if s.launch.isExhausted(Offering{InstanceType: c.typeName, Zone: c.subnet.Zone.Name, CapacityType: lifecycle}) {
		return CodeInsufficientInstanceCapacity, fmt.Sprintf("We currently do not have sufficient %s capacity in the Availability Zone you requested (%s). Our system will be working on provisioning additional capacity.", c.typeName, c.subnet.Zone.Name)
	}
	if lifecycle == "spot" && c.maxPrice > 0 && c.maxPrice < s.launch.spotPrice(c.instType, c.subnet.Zone.Name) {
		return CodeSpotMaxPriceTooLow, fmt.Sprintf("Your Spot request price of %g is lower than the minimum required Spot request fulfillment price of %g.", c.maxPrice, s.launch.spotPrice(c.instType, c.subnet.Zone.Name))
	}
	return "", ""
}
