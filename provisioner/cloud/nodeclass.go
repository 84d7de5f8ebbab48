package cloud

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"k8s.io/apimachinery/pkg/api/resource"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
)

// ResolvedNodeClass is a NodeClass turned into EC2 ids.
type ResolvedNodeClass struct {
	Name string
	// Subnets by zone; the one with the most free addresses first.
	Subnets        []ResolvedSubnet
	SecurityGroups []v1.SecurityGroup
	// AMIs by architecture (amd64, arm64).
	AMIs            map[string]v1.AMI
	InstanceProfile string
	BlockDevices    []v1.BlockDeviceMapping
	InstanceStore   v1.InstanceStorePolicy
	Tags            map[string]string
}

// ResolvedSubnet is a subnet with its free address count.
type ResolvedSubnet struct {
	v1.Subnet
	AvailableIPs int32
}

// Zones lists the zones the class has subnets in, sorted.
func (c *ResolvedNodeClass) Zones() []string {
	var out []string
	for _, s := range c.Subnets {
		if !slices.Contains(out, s.Zone) {
			out = append(out, s.Zone)
		}
	}
	slices.Sort(out)
	return out
}

// subnet returns the subnet to launch into in a zone.
func (c *ResolvedNodeClass) subnet(zone string) (ResolvedSubnet, bool) {
	for _, s := range c.Subnets { // sorted by free addresses, most first
		if s.Zone == zone {
			return s, true
		}
	}
	return ResolvedSubnet{}, false
}

// defaultBlockDevices are Bottlerocket's two volumes: the OS on /dev/xvda
// and the data volume (containerd, the kubelet) on /dev/xvdb.
func defaultBlockDevices() []v1.BlockDeviceMapping {
	q := func(s string) *resource.Quantity { v := resource.MustParse(s); return &v }
	return []v1.BlockDeviceMapping{
		{DeviceName: "/dev/xvda", RootVolume: true, EBS: v1.BlockDevice{VolumeSize: q("4Gi"), VolumeType: "gp3", Encrypted: aws.Bool(true)}},
		{DeviceName: "/dev/xvdb", EBS: v1.BlockDevice{VolumeSize: q("20Gi"), VolumeType: "gp3", Encrypted: aws.Bool(true)}},
	}
}

// ephemeralStorage is the size of the kubelet's filesystem on a node of this
// class: the RAID0 instance store when the policy asks for it and the type
// has one, else the data volume (the last non-root mapping; the root one
// when it is alone).
func (c *ResolvedNodeClass) ephemeralStorage(localNVMeGB int64) resource.Quantity {
	if c.InstanceStore == v1.InstanceStoreRAID0 && localNVMeGB > 0 {
		return *resource.NewQuantity(localNVMeGB*1000*1000*1000, resource.DecimalSI)
	}
	var size *resource.Quantity
	for _, b := range c.BlockDevices {
		if b.EBS.VolumeSize != nil && (!b.RootVolume || size == nil) {
			size = b.EBS.VolumeSize
		}
	}
	if size == nil {
		return resource.Quantity{}
	}
	return size.DeepCopy()
}

// ResolveNodeClass looks up the subnets, security groups and AMIs a
// NodeClass selects. It fails, naming the class, when any of them matches
// nothing.
func (p *Provider) ResolveNodeClass(ctx context.Context, nc *v1.NodeClass) (*ResolvedNodeClass, error) {
	out := &ResolvedNodeClass{
		Name: nc.Name, InstanceStore: nc.Spec.InstanceStorePolicy, Tags: maps.Clone(nc.Spec.Tags),
		BlockDevices: nc.Spec.BlockDeviceMappings,
		// A role's instance profile is the one of the same name, as IAM
		// creates it for EC2 roles made in the console.
		InstanceProfile: cmp.Or(nc.Spec.InstanceProfile, nc.Status.InstanceProfile, nc.Spec.Role),
	}
	if len(out.BlockDevices) == 0 {
		out.BlockDevices = defaultBlockDevices()
	}
	var err error
	if out.Subnets, err = p.resolveSubnets(ctx, nc.Spec.SubnetSelectorTerms); err != nil {
		return nil, fmt.Errorf("nodeclass %s: %w", nc.Name, err)
	}
	if out.SecurityGroups, err = p.resolveSecurityGroups(ctx, nc.Spec.SecurityGroupSelectorTerms); err != nil {
		return nil, fmt.Errorf("nodeclass %s: %w", nc.Name, err)
	}
	if out.AMIs, err = p.resolveAMIs(ctx, nc.Spec.AMISelectorTerms); err != nil {
		return nil, fmt.Errorf("nodeclass %s: %w", nc.Name, err)
	}
	return out, nil
}

// tagFilters turns selector tags into EC2 filters; "*" matches any value.
func tagFilters(tags map[string]string) []types.Filter {
	var out []types.Filter
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		if tags[k] == "*" {
			out = append(out, types.Filter{Name: aws.String("tag-key"), Values: []string{k}})
			continue
		}
		out = append(out, types.Filter{Name: aws.String("tag:" + k), Values: []string{tags[k]}})
	}
	return out
}

func (p *Provider) resolveSubnets(ctx context.Context, terms []v1.SelectorTerm) ([]ResolvedSubnet, error) {
	seen := map[string]bool{}
	var out []ResolvedSubnet
	for _, term := range terms {
		in := &ec2.DescribeSubnetsInput{Filters: tagFilters(term.Tags)}
		if term.ID != "" {
			in = &ec2.DescribeSubnetsInput{SubnetIds: []string{term.ID}}
		}
		pages := ec2.NewDescribeSubnetsPaginator(p.opts.EC2, in)
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("describing subnets: %w", err)
			}
			for _, s := range page.Subnets {
				id := aws.ToString(s.SubnetId)
				if seen[id] {
					continue
				}
				seen[id] = true
				out = append(out, ResolvedSubnet{
					Subnet:       v1.Subnet{ID: id, Zone: aws.ToString(s.AvailabilityZone), ZoneID: aws.ToString(s.AvailabilityZoneId)},
					AvailableIPs: aws.ToInt32(s.AvailableIpAddressCount),
				})
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no subnet matches the subnet selector terms")
	}
	slices.SortStableFunc(out, func(a, b ResolvedSubnet) int {
		return cmp.Or(cmp.Compare(a.Zone, b.Zone), cmp.Compare(b.AvailableIPs, a.AvailableIPs), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

func (p *Provider) resolveSecurityGroups(ctx context.Context, terms []v1.SecurityGroupSelectorTerm) ([]v1.SecurityGroup, error) {
	seen := map[string]bool{}
	var out []v1.SecurityGroup
	for _, term := range terms {
		in := &ec2.DescribeSecurityGroupsInput{Filters: tagFilters(term.Tags)}
		switch {
		case term.ID != "":
			in = &ec2.DescribeSecurityGroupsInput{GroupIds: []string{term.ID}}
		case term.Name != "":
			in = &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("group-name"), Values: []string{term.Name}}}}
		}
		pages := ec2.NewDescribeSecurityGroupsPaginator(p.opts.EC2, in)
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("describing security groups: %w", err)
			}
			for _, g := range page.SecurityGroups {
				id := aws.ToString(g.GroupId)
				if !seen[id] {
					seen[id] = true
					out = append(out, v1.SecurityGroup{ID: id, Name: aws.ToString(g.GroupName)})
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no security group matches the security group selector terms")
	}
	return out, nil
}

// resolveAMIs picks, per architecture, the newest image any term matches.
// An alias autonode@latest matches every autonode variant release owned by
// the AMI owner (Options.AMIOwner); autonode@v1.2.3 one release, and
// autonode@v1 or autonode@v1.2 the releases under it.
func (p *Provider) resolveAMIs(ctx context.Context, terms []v1.AMISelectorTerm) (map[string]v1.AMI, error) {
	type found struct {
		ami     v1.AMI
		created time.Time
	}
	best := map[string]found{}
	for _, term := range terms {
		in := &ec2.DescribeImagesInput{Filters: append(tagFilters(term.Tags), types.Filter{Name: aws.String("state"), Values: []string{"available"}})}
		switch {
		case term.Alias != "":
			_, version, _ := strings.Cut(term.Alias, "@")
			name := VariantImagePrefix + "*"
			switch n := strings.Count(version, "."); {
			case version == "latest":
			case n == 2:
				name = VariantImagePrefix + "*-" + version + "-*"
			default:
				name = VariantImagePrefix + "*-" + version + ".*"
			}
			in.Owners = []string{p.opts.AMIOwner}
			in.Filters = append(in.Filters, types.Filter{Name: aws.String("name"), Values: []string{name}})
		case term.ID != "":
			in = &ec2.DescribeImagesInput{ImageIds: []string{term.ID}}
		default:
			if term.Name != "" {
				in.Filters = append(in.Filters, types.Filter{Name: aws.String("name"), Values: []string{term.Name}})
			}
			if term.Owner != "" {
				in.Owners = []string{term.Owner}
			}
		}
		pages := ec2.NewDescribeImagesPaginator(p.opts.EC2, in)
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("describing images: %w", err)
			}
			for _, img := range page.Images {
				arch := map[types.ArchitectureValues]string{types.ArchitectureValuesX8664: "amd64", types.ArchitectureValuesArm64: "arm64"}[img.Architecture]
				created, err := time.Parse(time.RFC3339, aws.ToString(img.CreationDate))
				if arch == "" || err != nil {
					continue
				}
				if cur, ok := best[arch]; !ok || created.After(cur.created) {
					best[arch] = found{v1.AMI{ID: aws.ToString(img.ImageId), Name: aws.ToString(img.Name), Architecture: arch}, created}
				}
			}
		}
	}
	if len(best) == 0 {
		return nil, fmt.Errorf("no AMI matches the AMI selector terms")
	}
	out := map[string]v1.AMI{}
	for arch, f := range best {
		out[arch] = f.ami
	}
	return out, nil
}

// VariantImagePrefix starts the name of every autonode variant AMI
// (autonode-aws-k8s-1.37-x86_64-v1.2.0-<hash>).
const VariantImagePrefix = "autonode-"
