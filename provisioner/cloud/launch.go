package cloud

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	corev1 "k8s.io/api/core/v1"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
)

// maxLaunchAttempts bounds the CreateFleet calls of one Launch: each call
// after the first offers the next-cheapest types, once the ones before had
// no capacity.
const maxLaunchAttempts = 4

// Launched is the result of Launch.
type Launched struct {
	Instance *Instance
	// InstanceType is the type EC2 picked, with its capacity, allocatable
	// and labels for the NodeClaim's status.
	InstanceType *InstanceType
}

// candidate is one type and the offerings a launch may use.
type candidate struct {
	it        *InstanceType
	offerings []Offering // of the chosen capacity type, available, allowed zones
	price     float64    // cheapest of offerings
}

// Launch makes one instance for a NodeClaim: among the class's instance
// types that meet the claim's requirements, it offers EC2 the MaxFleetTypes
// cheapest through an instant CreateFleet ("lowest-price" on demand,
// "price-capacity-optimized" for spot, which it prefers when the claim
// allows both and a spot offering exists). Offerings that report no
// capacity are left out for UnavailableTTL and the launch is tried again
// with the rest; spot falls back to on-demand when every spot offering is
// out. It returns an InsufficientCapacityError when nothing had room.
func (p *Provider) Launch(ctx context.Context, claim *v1.NodeClaim, class *ResolvedNodeClass) (*Launched, error) {
	if p.opts.Cluster.Name == "" {
		return nil, fmt.Errorf("nodeclaim %s: no cluster configured", claim.Name)
	}
	all, err := p.InstanceTypes(ctx, class)
	if err != nil {
		return nil, fmt.Errorf("nodeclaim %s: %w", claim.Name, err)
	}
	reqs := claim.Spec.Requirements
	var types []*InstanceType
	for _, it := range all {
		if typeMatches(reqs, it.Labels) && fits(claim.Spec.Resources.Requests, it.Allocatable) {
			types = append(types, it)
		}
	}
	if len(types) == 0 {
		return nil, fmt.Errorf("nodeclaim %s: no instance type of nodeclass %s meets its requirements and requests", claim.Name, class.Name)
	}
	zones := allowed(reqs, corev1.LabelTopologyZone, class.Zones())
	capacityTypes := allowed(reqs, v1.LabelCapacityType, []string{v1.CapacityTypeSpot, v1.CapacityTypeOnDemand})
	if len(zones) == 0 || len(capacityTypes) == 0 {
		return nil, fmt.Errorf("nodeclaim %s: its requirements allow no zone of nodeclass %s or no capacity type", claim.Name, class.Name)
	}
	var refused []string
	for range maxLaunchAttempts {
		capacityType, cands := p.candidates(ctx, types, zones, capacityTypes, reqs)
		if len(cands) == 0 {
			break
		}
		if err := meetsMinValues(cands, reqs); err != nil {
			return nil, fmt.Errorf("nodeclaim %s: %w", claim.Name, err)
		}
		launched, failed, err := p.createFleet(ctx, claim, class, capacityType, cands)
		refused = append(refused, failed...)
		if err != nil || launched != nil {
			return launched, err
		}
	}
	return nil, &InsufficientCapacityError{NodeClaim: claim.Name, Offerings: refused}
}

// keep returns how many of the cheapest candidates a fleet offers: limit,
// or more when fewer would leave a requirement's minValues unmet (Karpenter
// trims the same way, so a pool asking for flexibility keeps it).
func keep(cands []candidate, limit int, reqs []v1.NodeSelectorRequirementWithMinValues) int {
	n := min(len(cands), limit)
	for _, r := range reqs {
		if r.MinValues == nil || r.Key == corev1.LabelTopologyZone || r.Key == v1.LabelCapacityType {
			continue
		}
		seen := map[string]bool{}
		for i, c := range cands {
			if v, ok := c.it.Labels[r.Key]; ok {
				seen[v] = true
			}
			if len(seen) >= int(*r.MinValues) {
				n = max(n, i+1)
				break
			}
		}
	}
	return n
}

// meetsMinValues checks that the candidates span every requirement's
// minValues; capacity errors can leave too few.
func meetsMinValues(cands []candidate, reqs []v1.NodeSelectorRequirementWithMinValues) error {
	for _, r := range reqs {
		if r.MinValues == nil || r.Key == corev1.LabelTopologyZone || r.Key == v1.LabelCapacityType {
			continue
		}
		seen := map[string]bool{}
		for _, c := range cands {
			if v, ok := c.it.Labels[r.Key]; ok {
				seen[v] = true
			}
		}
		if len(seen) < int(*r.MinValues) {
			return fmt.Errorf("requirement %s needs %d distinct values, the available types have %d", r.Key, *r.MinValues, len(seen))
		}
	}
	return nil
}

// fits reports whether requests fit allocatable.
func fits(requests, allocatable corev1.ResourceList) bool {
	for name, q := range requests {
		have, ok := allocatable[name]
		if (!ok && !q.IsZero()) || have.Cmp(q) < 0 {
			return false
		}
	}
	return true
}

// candidates picks the capacity type (spot first when allowed and
// available) and the MaxFleetTypes cheapest types with an available
// offering of it in an allowed zone.
func (p *Provider) candidates(ctx context.Context, types []*InstanceType, zones, capacityTypes []string, minValues []v1.NodeSelectorRequirementWithMinValues) (string, []candidate) {
	now := p.opts.Now()
	for _, ct := range capacityTypes { // spot before on-demand
		var out []candidate
		p.mu.Lock()
		for _, it := range types {
			c := candidate{it: it}
			for _, o := range it.Offerings {
				until, marked := p.unavailable[offeringKey{it.Name, o.Zone, o.CapacityType}]
				if o.CapacityType != ct || !slices.Contains(zones, o.Zone) || (marked && now.Before(until)) {
					continue
				}
				c.offerings = append(c.offerings, o)
				if len(c.offerings) == 1 || o.Price < c.price {
					c.price = o.Price
				}
			}
			if len(c.offerings) > 0 {
				out = append(out, c)
			}
		}
		p.mu.Unlock()
		if len(out) == 0 {
			p.opts.Logger.DebugContext(ctx, "no available offering", "capacity_type", ct)
			continue
		}
		slices.SortStableFunc(out, func(a, b candidate) int {
			return cmp.Or(cmp.Compare(a.price, b.price), cmp.Compare(a.it.Name, b.it.Name))
		})
		return ct, out[:keep(out, p.opts.MaxFleetTypes, minValues)]
	}
	return "", nil
}

// createFleet launches one instance over the candidates. It returns the
// offerings EC2 refused for capacity (now marked unavailable); launched is
// nil when none had room.
func (p *Provider) createFleet(ctx context.Context, claim *v1.NodeClaim, class *ResolvedNodeClass, capacityType string, cands []candidate) (*Launched, []string, error) {
	byArch := map[string][]candidate{}
	for _, c := range cands {
		byArch[c.it.Arch] = append(byArch[c.it.Arch], c)
	}
	var configs []types.FleetLaunchTemplateConfigRequest
	for _, arch := range slices.Sorted(maps.Keys(byArch)) {
		name, err := p.ensureLaunchTemplate(ctx, claim, class, arch, capacityType)
		if err != nil {
			return nil, nil, err
		}
		cfg := types.FleetLaunchTemplateConfigRequest{
			LaunchTemplateSpecification: &types.FleetLaunchTemplateSpecificationRequest{LaunchTemplateName: aws.String(name), Version: aws.String("$Latest")},
		}
		for _, c := range byArch[arch] {
			for _, o := range c.offerings {
				subnet, ok := class.subnet(o.Zone)
				if !ok {
					continue
				}
				cfg.Overrides = append(cfg.Overrides, types.FleetLaunchTemplateOverridesRequest{
					InstanceType: types.InstanceType(c.it.Name), SubnetId: aws.String(subnet.ID), AvailabilityZone: aws.String(o.Zone),
				})
			}
		}
		configs = append(configs, cfg)
	}
	tags := p.instanceTags(claim, class)
	in := &ec2.CreateFleetInput{
		Type:                  types.FleetTypeInstant,
		LaunchTemplateConfigs: configs,
		TargetCapacitySpecification: &types.TargetCapacitySpecificationRequest{
			TotalTargetCapacity: aws.Int32(1), DefaultTargetCapacityType: types.DefaultTargetCapacityType(capacityType),
		},
		OnDemandOptions: &types.OnDemandOptionsRequest{AllocationStrategy: types.FleetOnDemandAllocationStrategyLowestPrice},
		SpotOptions:     &types.SpotOptionsRequest{AllocationStrategy: types.SpotAllocationStrategyPriceCapacityOptimized},
		TagSpecifications: []types.TagSpecification{
			{ResourceType: types.ResourceTypeInstance, Tags: tags},
			{ResourceType: types.ResourceTypeVolume, Tags: tags},
			{ResourceType: types.ResourceTypeFleet, Tags: tags},
		},
	}
	out, err := p.opts.EC2.CreateFleet(ctx, in)
	if isCode(err, "InvalidLaunchTemplateName.NotFoundException", "InvalidLaunchTemplateId.NotFound") {
		// Deleted behind our back: forget it, so the next attempt makes it again.
		p.mu.Lock()
		clear(p.templates)
		p.mu.Unlock()
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("nodeclaim %s: creating fleet: %w", claim.Name, err)
	}
	var refused []string
	var other []error
	for _, e := range out.Errors {
		var typ, zone string
		if lt := e.LaunchTemplateAndOverrides; lt != nil && lt.Overrides != nil {
			typ, zone = string(lt.Overrides.InstanceType), aws.ToString(lt.Overrides.AvailabilityZone)
		}
		code := aws.ToString(e.ErrorCode)
		if capacityErrorCodes[code] {
			p.markUnavailable(offeringKey{typ, zone, capacityType})
			refused = append(refused, typ+"/"+zone+"/"+capacityType)
			continue
		}
		other = append(other, fmt.Errorf("%s in %s: %s: %s", typ, zone, code, aws.ToString(e.ErrorMessage)))
	}
	for _, fi := range out.Instances {
		if len(fi.InstanceIds) == 0 {
			continue
		}
		i := slices.IndexFunc(cands, func(c candidate) bool { return c.it.Name == string(fi.InstanceType) })
		if i < 0 {
			return nil, refused, fmt.Errorf("nodeclaim %s: fleet launched %s, which was not offered", claim.Name, fi.InstanceType)
		}
		inst := &Instance{
			ID: fi.InstanceIds[0], Type: string(fi.InstanceType), CapacityType: capacityType,
			ImageID: class.AMIs[cands[i].it.Arch].ID, State: "pending", Tags: map[string]string{},
		}
		if lt := fi.LaunchTemplateAndOverrides; lt != nil && lt.Overrides != nil {
			inst.Zone = aws.ToString(lt.Overrides.AvailabilityZone)
		}
		for _, t := range tags {
			inst.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
		return &Launched{Instance: inst, InstanceType: cands[i].it}, refused, nil
	}
	if len(refused) == 0 && len(other) > 0 {
		// Nothing failed for capacity, so another attempt would fail alike.
		return nil, nil, fmt.Errorf("nodeclaim %s: creating fleet: %w", claim.Name, errors.Join(other...))
	}
	return nil, refused, nil
}

// instanceTags are the tags of the claim's instance and volumes: the
// NodeClass's, then the provisioner's own, which win.
func (p *Provider) instanceTags(claim *v1.NodeClaim, class *ResolvedNodeClass) []types.Tag {
	tags := maps.Clone(class.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	tags[v1.TagCluster] = p.opts.Cluster.Name
	tags[v1.TagNodePool] = claim.Labels[v1.LabelNodePool]
	tags[v1.TagNodeClaim] = claim.Name
	tags["Name"] = cmp.Or(class.Tags["Name"], claim.Name)
	out := make([]types.Tag, 0, len(tags))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	return out
}

// launchTemplateData is everything a launch template holds; its hash names
// the template, so equal inputs share one and any change makes a new one.
type launchTemplateData struct {
	Cluster         string
	ImageID         string
	InstanceProfile string
	SecurityGroups  []string
	BlockDevices    []v1.BlockDeviceMapping
	UserData        string
	Tags            map[string]string
}

// ensureLaunchTemplate returns the name of the launch template for a
// claim's arch and capacity type, creating it when missing.
func (p *Provider) ensureLaunchTemplate(ctx context.Context, claim *v1.NodeClaim, class *ResolvedNodeClass, arch, capacityType string) (string, error) {
	ami, ok := class.AMIs[arch]
	if !ok {
		return "", fmt.Errorf("nodeclass %s: no %s AMI", class.Name, arch)
	}
	labels := userDataLabels(claim.Labels, v1.LabelNodeClaim)
	labels[v1.LabelCapacityType] = capacityType
	taints := append(slices.Clone(claim.Spec.Taints), claim.Spec.StartupTaints...)
	userData, err := UserData(p.opts.Cluster, labels, taints)
	if err != nil {
		return "", fmt.Errorf("nodeclaim %s: %w", claim.Name, err)
	}
	data := launchTemplateData{
		Cluster: p.opts.Cluster.Name, ImageID: ami.ID, InstanceProfile: class.InstanceProfile,
		BlockDevices: class.BlockDevices, UserData: userData, Tags: class.Tags,
	}
	for _, g := range class.SecurityGroups {
		data.SecurityGroups = append(data.SecurityGroups, g.ID)
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return "", fmt.Errorf("nodeclaim %s: launch template: %w", claim.Name, err)
	}
	h := fnv.New64a()
	_, _ = h.Write(raw) // hash writes cannot fail
	name := fmt.Sprintf("autonode/%s/%016x", p.opts.Cluster.Name, h.Sum64())

	p.mu.Lock()
	known := p.templates[name]
	p.mu.Unlock()
	if known {
		return name, nil
	}
	req := &types.RequestLaunchTemplateData{
		ImageId:          aws.String(ami.ID),
		SecurityGroupIds: data.SecurityGroups,
		UserData:         aws.String(base64.StdEncoding.EncodeToString([]byte(userData))),
		MetadataOptions: &types.LaunchTemplateInstanceMetadataOptionsRequest{
			HttpTokens: types.LaunchTemplateHttpTokensStateRequired, HttpPutResponseHopLimit: aws.Int32(1),
			HttpEndpoint: types.LaunchTemplateInstanceMetadataEndpointStateEnabled,
		},
	}
	if class.InstanceProfile != "" {
		req.IamInstanceProfile = &types.LaunchTemplateIamInstanceProfileSpecificationRequest{Name: aws.String(class.InstanceProfile)}
	}
	for _, b := range class.BlockDevices {
		ebs := &types.LaunchTemplateEbsBlockDeviceRequest{
			VolumeType: types.VolumeType(cmp.Or(b.EBS.VolumeType, "gp3")), Iops: b.EBS.IOPS, Throughput: b.EBS.Throughput,
			Encrypted: b.EBS.Encrypted, DeleteOnTermination: aws.Bool(b.EBS.DeleteOnTermination == nil || *b.EBS.DeleteOnTermination),
		}
		if b.EBS.VolumeSize != nil {
			gib := (b.EBS.VolumeSize.Value() + 1<<30 - 1) >> 30
			ebs.VolumeSize = aws.Int32(int32(min(gib, 64<<10)))
		}
		if b.EBS.KMSKeyID != "" {
			ebs.KmsKeyId = aws.String(b.EBS.KMSKeyID)
		}
		if b.EBS.SnapshotID != "" {
			ebs.SnapshotId = aws.String(b.EBS.SnapshotID)
		}
		req.BlockDeviceMappings = append(req.BlockDeviceMappings, types.LaunchTemplateBlockDeviceMappingRequest{DeviceName: aws.String(b.DeviceName), Ebs: ebs})
	}
	ltTags := maps.Clone(class.Tags)
	if ltTags == nil {
		ltTags = map[string]string{}
	}
	ltTags[v1.TagCluster] = p.opts.Cluster.Name
	ltTags["autonode.dev/nodeclass"] = class.Name
	var tagList []types.Tag
	for _, k := range slices.Sorted(maps.Keys(ltTags)) {
		tagList = append(tagList, types.Tag{Key: aws.String(k), Value: aws.String(ltTags[k])})
	}
	_, err = p.opts.EC2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String(name),
		LaunchTemplateData: req,
		TagSpecifications:  []types.TagSpecification{{ResourceType: types.ResourceTypeLaunchTemplate, Tags: tagList}},
	})
	if err != nil && !isCode(err, "InvalidLaunchTemplateName.AlreadyExistsException") {
		return "", fmt.Errorf("nodeclaim %s: creating launch template %s: %w", claim.Name, name, err)
	}
	p.mu.Lock()
	p.templates[name] = true
	p.mu.Unlock()
	return name, nil
}
