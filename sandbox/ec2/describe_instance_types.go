package ec2

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/autonode/autonode/sandbox/catalog"
)

type xmlVCPUInfo struct {
	DefaultVCpus int32 `xml:"defaultVCpus"`
}

type xmlMemoryInfo struct {
	SizeInMiB int64 `xml:"sizeInMiB"`
}

type xmlProcessorInfo struct {
	SupportedArchitectures Items[string] `xml:"supportedArchitectures"`
}

type xmlDisk struct {
	SizeInGB int64  `xml:"sizeInGB"`
	Count    int32  `xml:"count"`
	Type     string `xml:"type"`
}

type xmlStorageInfo struct {
	TotalSizeInGB int64          `xml:"totalSizeInGB"`
	Disks         Items[xmlDisk] `xml:"disks"`
	NvmeSupport   string         `xml:"nvmeSupport"`
}

type xmlEFAInfo struct {
	MaximumEfaInterfaces int32 `xml:"maximumEfaInterfaces"`
}

type xmlNetworkCard struct {
	NetworkCardIndex         int32   `xml:"networkCardIndex"`
	NetworkPerformance       string  `xml:"networkPerformance"`
	MaximumNetworkInterfaces int32   `xml:"maximumNetworkInterfaces"`
	BaselineBandwidthInGbps  float64 `xml:"baselineBandwidthInGbps"`
}

type xmlNetworkInfo struct {
	NetworkPerformance        string                `xml:"networkPerformance"`
	MaximumNetworkInterfaces  int32                 `xml:"maximumNetworkInterfaces"`
	MaximumNetworkCards       int32                 `xml:"maximumNetworkCards"`
	DefaultNetworkCardIndex   int32                 `xml:"defaultNetworkCardIndex"`
	NetworkCards              Items[xmlNetworkCard] `xml:"networkCards"`
	IPv4AddressesPerInterface int32                 `xml:"ipv4AddressesPerInterface"`
	IPv6AddressesPerInterface int32                 `xml:"ipv6AddressesPerInterface"`
	IPv6Supported             bool                  `xml:"ipv6Supported"`
	EnaSupport                string                `xml:"enaSupport"`
	EfaSupported              bool                  `xml:"efaSupported"`
	EfaInfo                   *xmlEFAInfo           `xml:"efaInfo,omitempty"`
}

type xmlGPU struct {
	Name         string        `xml:"name"`
	Manufacturer string        `xml:"manufacturer"`
	Count        int32         `xml:"count"`
	MemoryInfo   xmlMemoryInfo `xml:"memoryInfo"`
}

type xmlGPUInfo struct {
	Gpus                Items[xmlGPU] `xml:"gpus"`
	TotalGpuMemoryInMiB int64         `xml:"totalGpuMemoryInMiB"`
}

type xmlNeuronCore struct {
	Count   int32 `xml:"count"`
	Version int32 `xml:"version"`
}

type xmlNeuronDevice struct {
	Name       string        `xml:"name"`
	Count      int32         `xml:"count"`
	CoreInfo   xmlNeuronCore `xml:"coreInfo"`
	MemoryInfo xmlMemoryInfo `xml:"memoryInfo"`
}

type xmlNeuronInfo struct {
	NeuronDevices                Items[xmlNeuronDevice] `xml:"neuronDevices"`
	TotalNeuronDeviceMemoryInMiB int64                  `xml:"totalNeuronDeviceMemoryInMiB"`
}

type xmlInstanceType struct {
	InstanceType                  string           `xml:"instanceType"`
	CurrentGeneration             bool             `xml:"currentGeneration"`
	SupportedUsageClasses         Items[string]    `xml:"supportedUsageClasses"`
	SupportedRootDeviceTypes      Items[string]    `xml:"supportedRootDeviceTypes"`
	SupportedVirtualizationTypes  Items[string]    `xml:"supportedVirtualizationTypes"`
	BareMetal                     bool             `xml:"bareMetal"`
	Hypervisor                    string           `xml:"hypervisor,omitempty"`
	BurstablePerformanceSupported bool             `xml:"burstablePerformanceSupported"`
	ProcessorInfo                 xmlProcessorInfo `xml:"processorInfo"`
	VCpuInfo                      xmlVCPUInfo      `xml:"vCpuInfo"`
	MemoryInfo                    xmlMemoryInfo    `xml:"memoryInfo"`
	InstanceStorageSupported      bool             `xml:"instanceStorageSupported"`
	InstanceStorageInfo           *xmlStorageInfo  `xml:"instanceStorageInfo,omitempty"`
	NetworkInfo                   xmlNetworkInfo   `xml:"networkInfo"`
	GpuInfo                       *xmlGPUInfo      `xml:"gpuInfo,omitempty"`
	NeuronInfo                    *xmlNeuronInfo   `xml:"neuronInfo,omitempty"`
	EbsInfo                       *xmlEBSInfo      `xml:"ebsInfo,omitempty"`
}

type xmlEBSInfo struct {
	EbsOptimizedSupport   string `xml:"ebsOptimizedSupport"`
	NvmeSupport           string `xml:"nvmeSupport"`
	MaximumEbsAttachments int32  `xml:"maximumEbsAttachments"`
	AttachmentLimitType   string `xml:"attachmentLimitType"`
}

type describeInstanceTypesResponse struct {
	InstanceTypeSet Items[xmlInstanceType] `xml:"instanceTypeSet"`
	NextToken       string                 `xml:"nextToken,omitempty"`
}

func (s *Server) describeInstanceTypes(_ context.Context, r *Request) (any, error) {
	types := slices.Clone(s.catalog)
	if names := r.List("InstanceType"); len(names) > 0 {
		var missing []string
		for _, n := range names {
			if _, ok := s.instanceType(n); !ok {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			return nil, Errorf(CodeInvalidInstanceType, "The following supplied instance types do not exist: [%s]", strings.Join(missing, ", "))
		}
		types = slices.DeleteFunc(types, func(t catalog.InstanceType) bool { return !slices.Contains(names, t.Name) })
	}
	types, err := applyFilters(types, r.Filters(), fieldFuncs[catalog.InstanceType]{
		"instance-type":                         func(t catalog.InstanceType) []string { return one(t.Name) },
		"processor-info.supported-architecture": func(t catalog.InstanceType) []string { return one(t.EC2Architecture()) },
		"current-generation":                    func(catalog.InstanceType) []string { return one("true") },
		"bare-metal":                            func(t catalog.InstanceType) []string { return one(strconv.FormatBool(t.BareMetal)) },
		"hypervisor":                            func(t catalog.InstanceType) []string { return one(t.Hypervisor) },
		"vcpu-info.default-vcpus":               func(t catalog.InstanceType) []string { return one(strconv.Itoa(int(t.VCPU))) },
		"memory-info.size-in-mib":               func(t catalog.InstanceType) []string { return one(strconv.FormatInt(t.Memory, 10)) },
		"network-info.efa-supported":            func(t catalog.InstanceType) []string { return one(strconv.FormatBool(t.EFAMaxInterfaces > 0)) },
		"instance-storage-supported":            func(t catalog.InstanceType) []string { return one(strconv.FormatBool(t.LocalNVMe.TotalGiB > 0)) },
	}, nil)
	if err != nil {
		return nil, err
	}
	page, next, err := paginate(r, types, pageLimits{min: 5, max: 100, def: 100})
	if err != nil {
		return nil, err
	}
	out := make([]xmlInstanceType, len(page))
	for i, t := range page {
		out[i] = instanceTypeXML(t)
	}
	return describeInstanceTypesResponse{InstanceTypeSet: ItemsOf(out), NextToken: next}, nil
}

func instanceTypeXML(t catalog.InstanceType) xmlInstanceType {
	x := xmlInstanceType{
		InstanceType:                  t.Name,
		CurrentGeneration:             true, // the catalog holds only current generations
		SupportedUsageClasses:         ItemsOf([]string{"on-demand", "spot"}),
		SupportedRootDeviceTypes:      ItemsOf([]string{"ebs"}),
		SupportedVirtualizationTypes:  ItemsOf([]string{"hvm"}),
		BareMetal:                     t.BareMetal,
		Hypervisor:                    t.Hypervisor,
		BurstablePerformanceSupported: strings.HasPrefix(t.Name, "t"),
		ProcessorInfo:                 xmlProcessorInfo{SupportedArchitectures: ItemsOf([]string{t.EC2Architecture()})},
		VCpuInfo:                      xmlVCPUInfo{DefaultVCpus: t.VCPU},
		MemoryInfo:                    xmlMemoryInfo{SizeInMiB: t.Memory},
		InstanceStorageSupported:      t.LocalNVMe.TotalGiB > 0,
		NetworkInfo: xmlNetworkInfo{
			NetworkPerformance:        t.NetworkPerformance,
			MaximumNetworkInterfaces:  t.MaxENIs * t.NetworkCards,
			MaximumNetworkCards:       t.NetworkCards,
			IPv4AddressesPerInterface: t.IPv4PerENI,
			IPv6AddressesPerInterface: t.IPv6PerENI,
			IPv6Supported:             true,
			EnaSupport:                "required",
			EfaSupported:              t.EFAMaxInterfaces > 0,
		},
	}
	for i := range t.NetworkCards {
		x.NetworkInfo.NetworkCards.Items = append(x.NetworkInfo.NetworkCards.Items, xmlNetworkCard{
			NetworkCardIndex: i, NetworkPerformance: t.NetworkPerformance, MaximumNetworkInterfaces: t.MaxENIs,
			BaselineBandwidthInGbps: float64(t.NetworkBandwidthMbps) / 1000 / float64(t.NetworkCards),
		})
	}
	if e := t.EBS; e.MaxAttachments > 0 {
		x.EbsInfo = &xmlEBSInfo{EbsOptimizedSupport: "default", NvmeSupport: "required", MaximumEbsAttachments: e.MaxAttachments, AttachmentLimitType: "shared"}
		if e.Dedicated {
			x.EbsInfo.AttachmentLimitType = "dedicated"
		}
	}
	if t.EFAMaxInterfaces > 0 {
		x.NetworkInfo.EfaInfo = &xmlEFAInfo{MaximumEfaInterfaces: t.EFAMaxInterfaces}
	}
	if s := t.LocalNVMe; s.TotalGiB > 0 {
		x.InstanceStorageInfo = &xmlStorageInfo{
			TotalSizeInGB: s.TotalGiB, NvmeSupport: "required",
			Disks: ItemsOf([]xmlDisk{{SizeInGB: s.DiskSizeGiB, Count: s.Disks, Type: "ssd"}}),
		}
	}
	if g := t.GPU; g.Count > 0 {
		x.GpuInfo = &xmlGPUInfo{
			Gpus:                ItemsOf([]xmlGPU{{Name: g.Name, Manufacturer: g.Manufacturer, Count: g.Count, MemoryInfo: xmlMemoryInfo{SizeInMiB: g.MemoryMiB}}}),
			TotalGpuMemoryInMiB: int64(g.Count) * g.MemoryMiB,
		}
	}
	if n := t.Neuron; n.Count > 0 {
		x.NeuronInfo = &xmlNeuronInfo{
			NeuronDevices: ItemsOf([]xmlNeuronDevice{{
				Name: n.Name, Count: n.Count, CoreInfo: xmlNeuronCore{Count: n.CoresPerDevice, Version: n.CoreVersion},
				MemoryInfo: xmlMemoryInfo{SizeInMiB: n.MemoryMiB},
			}}),
			TotalNeuronDeviceMemoryInMiB: int64(n.Count) * n.MemoryMiB,
		}
	}
	return x
}
