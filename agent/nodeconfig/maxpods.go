// Package nodeconfig computes the per-node settings that several parts of
// autonode need and that follow from the instance type alone: the kubelet's
// max-pods, kube-reserved, eviction thresholds and allocatable, the EBS
// volume limit, and the kubelet and containerd settings. The agent, its
// settings-generator subcommands and the provisioner all use this one
// implementation. It is pure: callers fetch the instance facts (EC2
// DescribeInstanceTypes) and pass them in.
package nodeconfig

import (
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// InstanceLimits are the facts of an instance type that max-pods depends on.
type InstanceLimits struct {
	Name  string
	VCPUs int32
	// ENIs is the ENI limit of the default network card: pods get addresses
	// only from ENIs there, as the VPC CNI and Karpenter count them.
	ENIs       int32
	IPv4PerENI int32
	// Nitro is true for Nitro and bare-metal types, the ones that support
	// /28 prefix delegation.
	Nitro bool
}

// MaxPodsOptions select the formula.
type MaxPodsOptions struct {
	// PrefixDelegation counts /28 prefixes (16 addresses) per ENI slot
	// instead of single secondary IPs. Nitro types only.
	PrefixDelegation bool
	// Uncapped returns the raw formula without EKS's 110/250 cap.
	Uncapped bool
}

// The caps EKS's max-pods calculator applies: the kubelet is not tested for
// more pods on small nodes, nor above 250 on any.
const (
	smallNodeCap  = 110
	largeNodeCap  = 250
	smallNodeCPUs = 30
	prefixSize    = 16 // addresses in a /28
)

// ErrNoPrefixDelegation is returned for prefix delegation on a non-Nitro type.
var ErrNoPrefixDelegation = errors.New("prefix delegation needs a Nitro instance type")

// MaxPods returns the kubelet max-pods for an instance type:
//
//	secondary IPs:      ENIs × (IPv4 per ENI − 1) + 2
//	prefix delegation:  ENIs × (IPv4 per ENI − 1) × 16 + 2
//
// The primary address of each ENI serves no pod; the + 2 is for the
// host-network pods (kube-proxy and the agent's own), as the VPC CNI counts.
// Unless opts.Uncapped, the result is capped at 110 for types with 30 vCPUs
// or fewer and at 250 above.
func MaxPods(l InstanceLimits, opts MaxPodsOptions) (int, error) {
	if l.ENIs < 1 || l.IPv4PerENI < 2 {
		return 0, fmt.Errorf("instance type %s: %d ENIs with %d IPv4 addresses each leave no pod addresses", l.Name, l.ENIs, l.IPv4PerENI)
	}
	perSlot := 1
	if opts.PrefixDelegation {
		if !l.Nitro {
			return 0, fmt.Errorf("instance type %s: %w", l.Name, ErrNoPrefixDelegation)
		}
		perSlot = prefixSize
	}
	pods := int(l.ENIs)*(int(l.IPv4PerENI)-1)*perSlot + 2
	if opts.Uncapped {
		return pods, nil
	}
	limit := largeNodeCap
	if l.VCPUs <= smallNodeCPUs {
		limit = smallNodeCap
	}
	return min(pods, limit), nil
}

// LimitsFromEC2 reads InstanceLimits from a DescribeInstanceTypes answer.
func LimitsFromEC2(t types.InstanceTypeInfo) (InstanceLimits, error) {
	l := InstanceLimits{Name: string(t.InstanceType)}
	if t.VCpuInfo == nil || t.VCpuInfo.DefaultVCpus == nil {
		return l, fmt.Errorf("instance type %s: no vCPU count", l.Name)
	}
	l.VCPUs = *t.VCpuInfo.DefaultVCpus
	n := t.NetworkInfo
	if n == nil || n.Ipv4AddressesPerInterface == nil || n.MaximumNetworkInterfaces == nil {
		return l, fmt.Errorf("instance type %s: no ENI limits", l.Name)
	}
	l.IPv4PerENI = *n.Ipv4AddressesPerInterface
	l.ENIs = *n.MaximumNetworkInterfaces
	// Multi-card types report the total across cards; pods use the default card.
	defaultCard := int32(0)
	if n.DefaultNetworkCardIndex != nil {
		defaultCard = *n.DefaultNetworkCardIndex
	}
	for _, card := range n.NetworkCards {
		if card.NetworkCardIndex != nil && *card.NetworkCardIndex == defaultCard && card.MaximumNetworkInterfaces != nil {
			l.ENIs = *card.MaximumNetworkInterfaces
		}
	}
	l.Nitro = t.Hypervisor == types.InstanceTypeHypervisorNitro || (t.BareMetal != nil && *t.BareMetal)
	return l, nil
}
