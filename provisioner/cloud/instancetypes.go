package cloud

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/autonode/autonode/agent/nodeconfig"
	v1 "github.com/autonode/autonode/provisioner/apis/v1"
)

// Labels an instance type sets beyond the well-known ones and those of
// provisioner/apis/v1 (category, family, generation, size).
const (
	LabelInstanceCPU             = "autonode.dev/instance-cpu"
	LabelInstanceMemory          = "autonode.dev/instance-memory" // MiB
	LabelInstanceGPUName         = "autonode.dev/instance-gpu-name"
	LabelInstanceGPUManufacturer = "autonode.dev/instance-gpu-manufacturer"
	LabelInstanceGPUCount        = "autonode.dev/instance-gpu-count"
	LabelInstanceLocalNVMe       = "autonode.dev/instance-local-nvme" // GiB
	LabelInstanceHypervisor      = "autonode.dev/instance-hypervisor"
)

// Extended resources the provisioner plans with (DESIGN.md).
const (
	ResourceNVIDIAGPU  corev1.ResourceName = "nvidia.com/gpu"
	ResourceNeuron     corev1.ResourceName = "aws.amazon.com/neuron"
	ResourceNeuronCore corev1.ResourceName = "aws.amazon.com/neuroncore"
	ResourceEFA        corev1.ResourceName = "vpc.amazonaws.com/efa"
)

// typeLabelKeys are the labels an instance type may define; a requirement
// on one of them that the type lacks is unmet (a GPU count on a CPU type).
var typeLabelKeys = []string{
	corev1.LabelInstanceTypeStable, corev1.LabelArchStable, corev1.LabelOSStable,
	v1.LabelInstanceCategory, v1.LabelInstanceFamily, v1.LabelInstanceGeneration, v1.LabelInstanceSize,
	LabelInstanceCPU, LabelInstanceMemory, LabelInstanceGPUName, LabelInstanceGPUManufacturer,
	LabelInstanceGPUCount, LabelInstanceLocalNVMe, LabelInstanceHypervisor,
}

func wellKnownTypeLabel(key string) bool { return slices.Contains(typeLabelKeys, key) }

// InstanceType is one launchable type for a NodeClass.
type InstanceType struct {
	Name string
	// Arch is amd64 or arm64.
	Arch string
	// Labels are the type's labels (instance-type, arch, os, category,
	// family, generation, size, cpu, memory, GPU, local NVMe).
	Labels map[string]string
	// Capacity is what the Node will report as capacity; Allocatable what
	// it offers pods (agent/nodeconfig computes both).
	Capacity, Allocatable corev1.ResourceList
	// Offerings are the (zone, capacity type) pools with their prices.
	Offerings []Offering
}

// Offering is a (zone, capacity type) in which a type can be launched.
type Offering struct {
	Zone         string
	CapacityType string // on-demand or spot
	Price        float64
	// Available is false while the offering is left out after a capacity
	// error.
	Available bool
}

// typeInfo is what DescribeInstanceTypes said about a type, kept between
// refreshes.
type typeInfo struct {
	name        string
	arch        string
	vcpus       int
	memoryMiB   int64
	limits      nodeconfig.InstanceLimits
	usage       []string // on-demand, spot
	localNVMe   int64    // GB
	extended    corev1.ResourceList
	labels      map[string]string
	nitro       bool
	bareMetal   bool
	currentGen  bool
	unsupported string // why it cannot run nodes, or ""
}

// describeInstanceTypes reads every instance type, page by page.
func describeInstanceTypes(ctx context.Context, api ec2.DescribeInstanceTypesAPIClient) ([]typeInfo, error) {
	var out []typeInfo
	p := ec2.NewDescribeInstanceTypesPaginator(api, &ec2.DescribeInstanceTypesInput{MaxResults: aws.Int32(100)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describing instance types: %w", err)
		}
		for _, t := range page.InstanceTypes {
			out = append(out, newTypeInfo(t))
		}
	}
	return out, nil
}

// familyPattern splits an instance family (c6gn) into category (c) and
// generation (6).
var familyPattern = regexp.MustCompile(`^([a-z]+)([0-9]+)`)

func newTypeInfo(t types.InstanceTypeInfo) typeInfo {
	ti := typeInfo{name: string(t.InstanceType), extended: corev1.ResourceList{}, labels: map[string]string{}}
	limits, err := nodeconfig.LimitsFromEC2(t)
	if err != nil {
		ti.unsupported = err.Error()
	}
	ti.limits = limits
	if t.VCpuInfo != nil && t.VCpuInfo.DefaultVCpus != nil {
		ti.vcpus = int(*t.VCpuInfo.DefaultVCpus)
	}
	if t.MemoryInfo != nil && t.MemoryInfo.SizeInMiB != nil {
		ti.memoryMiB = *t.MemoryInfo.SizeInMiB
	}
	if t.ProcessorInfo != nil {
		for _, a := range t.ProcessorInfo.SupportedArchitectures {
			switch a {
			case types.ArchitectureTypeX8664:
				ti.arch = "amd64"
			case types.ArchitectureTypeArm64:
				ti.arch = "arm64"
			}
			if ti.arch != "" {
				break
			}
		}
	}
	if ti.arch == "" && ti.unsupported == "" {
		ti.unsupported = "no amd64 or arm64 architecture"
	}
	for _, u := range t.SupportedUsageClasses {
		ti.usage = append(ti.usage, string(u))
	}
	ti.bareMetal = aws.ToBool(t.BareMetal)
	ti.nitro = t.Hypervisor == types.InstanceTypeHypervisorNitro
	ti.currentGen = aws.ToBool(t.CurrentGeneration)
	if s := t.InstanceStorageInfo; s != nil && s.TotalSizeInGB != nil {
		ti.localNVMe = *s.TotalSizeInGB
	}
	if g := t.GpuInfo; g != nil {
		for _, gpu := range g.Gpus {
			n := int64(aws.ToInt32(gpu.Count))
			if strings.EqualFold(aws.ToString(gpu.Manufacturer), "NVIDIA") && n > 0 {
				ti.extended[ResourceNVIDIAGPU] = *resource.NewQuantity(n, resource.DecimalSI)
			}
			ti.labels[LabelInstanceGPUName] = strings.ToLower(aws.ToString(gpu.Name))
			ti.labels[LabelInstanceGPUManufacturer] = strings.ToLower(aws.ToString(gpu.Manufacturer))
			ti.labels[LabelInstanceGPUCount] = strconv.FormatInt(n, 10)
		}
	}
	if nr := t.NeuronInfo; nr != nil {
		var devices, cores int64
		for _, d := range nr.NeuronDevices {
			n := int64(aws.ToInt32(d.Count))
			devices += n
			if d.CoreInfo != nil {
				cores += n * int64(aws.ToInt32(d.CoreInfo.Count))
			}
		}
		if devices > 0 {
			ti.extended[ResourceNeuron] = *resource.NewQuantity(devices, resource.DecimalSI)
			ti.extended[ResourceNeuronCore] = *resource.NewQuantity(cores, resource.DecimalSI)
		}
	}
	if n := t.NetworkInfo; n != nil && n.EfaInfo != nil && aws.ToInt32(n.EfaInfo.MaximumEfaInterfaces) > 0 {
		ti.extended[ResourceEFA] = *resource.NewQuantity(int64(*n.EfaInfo.MaximumEfaInterfaces), resource.DecimalSI)
	}

	family, size, _ := strings.Cut(ti.name, ".")
	ti.labels[corev1.LabelInstanceTypeStable] = ti.name
	ti.labels[corev1.LabelArchStable] = ti.arch
	ti.labels[corev1.LabelOSStable] = "linux"
	ti.labels[v1.LabelInstanceFamily] = family
	ti.labels[v1.LabelInstanceSize] = size
	if m := familyPattern.FindStringSubmatch(family); m != nil {
		ti.labels[v1.LabelInstanceCategory] = m[1]
		ti.labels[v1.LabelInstanceGeneration] = m[2]
	}
	ti.labels[LabelInstanceCPU] = strconv.Itoa(ti.vcpus)
	ti.labels[LabelInstanceMemory] = strconv.FormatInt(ti.memoryMiB, 10)
	if ti.localNVMe > 0 {
		ti.labels[LabelInstanceLocalNVMe] = strconv.FormatInt(ti.localNVMe, 10)
	}
	if t.Hypervisor != "" {
		ti.labels[LabelInstanceHypervisor] = string(t.Hypervisor)
	}
	return ti
}

// resources computes capacity and allocatable of a type for a NodeClass
// through agent/nodeconfig.
func (p *Provider) resources(ti typeInfo, class *ResolvedNodeClass) (capacity, allocatable corev1.ResourceList, err error) {
	maxPods, err := nodeconfig.MaxPods(ti.limits, nodeconfig.MaxPodsOptions{PrefixDelegation: p.opts.PrefixDelegation && (ti.nitro || ti.bareMetal)})
	if err != nil {
		return nil, nil, err
	}
	c := nodeconfig.NodeCapacity{
		VCPUs: ti.vcpus, MemoryMiB: ti.memoryMiB, MaxPods: maxPods,
		EphemeralStorage: class.ephemeralStorage(ti.localNVMe), Extended: ti.extended,
	}
	opts := nodeconfig.AllocatableOptions{VMMemoryOverheadPercent: p.opts.VMMemoryOverheadPercent, SystemReserved: p.opts.SystemReserved}
	if capacity, err = nodeconfig.Capacity(c, opts); err != nil {
		return nil, nil, err
	}
	if allocatable, err = nodeconfig.Allocatable(c, opts); err != nil {
		return nil, nil, err
	}
	return capacity, allocatable, nil
}
