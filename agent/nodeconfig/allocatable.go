package nodeconfig

import (
	"errors"
	"fmt"
	"math"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// DefaultVMMemoryOverheadPercent is the share of an instance type's nominal
// memory that the guest does not see (firmware, the kernel's reservations),
// as Karpenter assumes by default.
const DefaultVMMemoryOverheadPercent = 7.5

// NodeCapacity is what an instance type offers, before the kubelet's
// reservations.
type NodeCapacity struct {
	VCPUs     int
	MemoryMiB int64 // nominal, as DescribeInstanceTypes reports it
	// EphemeralStorage is the size of the kubelet's filesystem: the root
	// volume, or the instance store when it holds /var/lib/kubelet.
	EphemeralStorage resource.Quantity
	MaxPods          int
	// Extended are the device-plugin resources (nvidia.com/gpu,
	// aws.amazon.com/neuron, ...); reservations never touch them.
	Extended corev1.ResourceList
}

// AllocatableOptions tune the reservations. The zero value means EKS's
// defaults with the default VM overhead.
type AllocatableOptions struct {
	// VMMemoryOverheadPercent replaces DefaultVMMemoryOverheadPercent when
	// above zero.
	VMMemoryOverheadPercent float64
	// SystemReserved is held for the OS daemons; EKS's images reserve none.
	SystemReserved corev1.ResourceList
}

// Capacity returns the resources the Node will report as capacity: the
// nominal memory less the VM overhead, the pods limit, and the extended
// resources.
func Capacity(c NodeCapacity, opts AllocatableOptions) (corev1.ResourceList, error) {
	if c.VCPUs < 1 || c.MemoryMiB < 1 || c.MaxPods < 1 {
		return nil, fmt.Errorf("node capacity: %d vCPUs, %d MiB, %d pods: each must be at least 1", c.VCPUs, c.MemoryMiB, c.MaxPods)
	}
	overhead := opts.VMMemoryOverheadPercent
	if overhead == 0 {
		overhead = DefaultVMMemoryOverheadPercent
	}
	if overhead < 0 || overhead >= 100 || math.IsNaN(overhead) {
		return nil, fmt.Errorf("VM memory overhead %v%%: must be from 0 to below 100", overhead)
	}
	memMiB := int64(math.Ceil(float64(c.MemoryMiB) * (1 - overhead/100)))
	out := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewMilliQuantity(int64(c.VCPUs)*1000, resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(memMiB<<20, resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(int64(c.MaxPods), resource.DecimalSI),
		corev1.ResourceEphemeralStorage: c.EphemeralStorage.DeepCopy(),
	}
	for name, q := range c.Extended {
		out[name] = q.DeepCopy()
	}
	return out, nil
}

// ErrNoRoom is returned when the reservations exceed a node's capacity.
var ErrNoRoom = errors.New("reservations exceed the node's capacity")

// Allocatable returns what pods may request on a node, the way the kubelet
// computes it: capacity (see Capacity) minus kube-reserved (KubeReserved),
// system-reserved and the hard eviction thresholds (EvictionHard:
// memory.available and nodefs.available).
func Allocatable(c NodeCapacity, opts AllocatableOptions) (corev1.ResourceList, error) {
	out, err := Capacity(c, opts)
	if err != nil {
		return nil, err
	}
	kube, err := KubeReserved(c.VCPUs, c.MaxPods)
	if err != nil {
		return nil, err
	}
	sub := func(name corev1.ResourceName, q resource.Quantity) {
		v := out[name]
		v.Sub(q)
		out[name] = v
	}
	sub(corev1.ResourceCPU, *resource.NewMilliQuantity(kube.CPUMilli, resource.DecimalSI))
	sub(corev1.ResourceMemory, *resource.NewQuantity((kube.MemoryMiB+evictionMemoryMiB)<<20, resource.BinarySI))
	if !c.EphemeralStorage.IsZero() {
		sub(corev1.ResourceEphemeralStorage, kube.EphemeralStorage)
		sub(corev1.ResourceEphemeralStorage, *resource.NewQuantity(c.EphemeralStorage.Value()*nodefsEvictionPercent/100, resource.BinarySI))
	}
	for name, q := range opts.SystemReserved {
		if _, ok := out[name]; !ok {
			return nil, fmt.Errorf("system-reserved %s: not a resource of the node", name)
		}
		sub(name, q)
	}
	for name, q := range out {
		if q.Sign() < 0 {
			return nil, fmt.Errorf("%s: %s after reservations: %w", name, q.String(), ErrNoRoom)
		}
	}
	return out, nil
}
