// Package catalog is the sandbox's built-in list of real EC2 instance types:
// a few of each kind (burstable, general purpose, arm64, instance store, GPU,
// Neuron, EFA, bare metal) with the facts AWS publishes for them.
//
// The EC2 emulator answers DescribeInstanceTypes from it and the IMDS emulator
// takes each instance's architecture from it. The product never reads it; at
// run time it asks EC2. The facts were taken from the instance-type table in
// shared/data (Karpenter's generated data), which catalog_test checks them
// against; network performance strings and disk layouts are AWS's published
// values, which that table does not carry.
package catalog

import "strings"

// GPU describes an instance type's GPUs.
type GPU struct {
	Count        int32
	Name         string // as EC2 spells it: A10G, T4, A100
	Manufacturer string // NVIDIA
	MemoryMiB    int64  // per GPU
}

// Neuron describes AWS Inferentia or Trainium devices.
type Neuron struct {
	Count          int32
	Name           string // Inferentia2, Trainium
	CoresPerDevice int32
	CoreVersion    int32
	MemoryMiB      int64 // per device
}

// Storage describes local NVMe instance store.
type Storage struct {
	TotalGiB    int64
	Disks       int32
	DiskSizeGiB int64
}

// InstanceType holds the facts of one instance type.
type InstanceType struct {
	Name   string
	Arch   string // amd64 or arm64, as Kubernetes names them
	VCPU   int32
	Memory int64 // MiB
	GPU    GPU
	Neuron Neuron
	// EFAMaxInterfaces is 0 when the type has no EFA.
	EFAMaxInterfaces int32
	LocalNVMe        Storage
	// NetworkBandwidthMbps is the baseline bandwidth.
	NetworkBandwidthMbps int64
	NetworkPerformance   string // as EC2 says it: "Up to 10 Gigabit"
	// NetworkCards is how many network cards the type has; each takes MaxENIs.
	NetworkCards int32
	// MaxENIs is the ENI limit of the default network card.
	MaxENIs    int32
	IPv4PerENI int32
	IPv6PerENI int32
	Hypervisor string // nitro, or empty for bare metal
	BareMetal  bool
	// PriceUSDHour is the us-east-1 on-demand Linux price.
	PriceUSDHour float64
	// EBS is the type's EBS attachment limit, as DescribeInstanceTypes'
	// EbsInfo reports it.
	EBS EBSLimit
}

// EBSLimit is an EBS volume attachment limit: Dedicated counts EBS volumes
// only; otherwise ENIs and NVMe instance-store disks share the slots.
type EBSLimit struct {
	MaxAttachments int32
	Dedicated      bool
}

// EC2Architecture is the architecture as EC2 names it (x86_64, arm64).
func (t InstanceType) EC2Architecture() string {
	if t.Arch == "amd64" {
		return "x86_64"
	}
	return t.Arch
}

// Family is the part of the name before the dot (m5 in m5.large).
func (t InstanceType) Family() string {
	family, _, _ := strings.Cut(t.Name, ".")
	return family
}

// Lookup finds a type by name in the default catalog.
func Lookup(name string) (InstanceType, bool) {
	for _, t := range Default() {
		if t.Name == name {
			return t, true
		}
	}
	return InstanceType{}, false
}
