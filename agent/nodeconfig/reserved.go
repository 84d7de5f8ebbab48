package nodeconfig

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Reserved is what the kubelet holds back from pods on a node.
type Reserved struct {
	CPUMilli         int64
	MemoryMiB        int64
	EphemeralStorage resource.Quantity
}

// Map returns r as the kubelet's kubeReserved map, which is also the shape of
// Bottlerocket's settings.kubernetes.kube-reserved.
func (r Reserved) Map() map[string]string {
	return map[string]string{
		"cpu":               fmt.Sprintf("%dm", r.CPUMilli),
		"memory":            fmt.Sprintf("%dMi", r.MemoryMiB),
		"ephemeral-storage": r.EphemeralStorage.String(),
	}
}

// kubeReservedEphemeral is the kube-reserved ephemeral-storage of EKS's
// Bottlerocket and AL2023 images.
func kubeReservedEphemeral() resource.Quantity { return resource.MustParse("1Gi") }

// KubeReserved returns EKS's kube-reserved for a node with vcpus cores and
// maxPods pods:
//
//	memory: 11 MiB × max-pods + 255 MiB
//	cpu:    6% of the first core, 1% of the second, 0.5% of cores 3–4 and
//	        0.25% of every core above 4
//
// The CPU steps are in millicores: 60, 10, 5 each and 2.5 each (rounded down
// once, at the end, as the EKS bootstrap does with integer arithmetic on a
// 10,000-per-core scale).
func KubeReserved(vcpus, maxPods int) (Reserved, error) {
	if vcpus < 1 {
		return Reserved{}, fmt.Errorf("kube-reserved: %d vCPUs: need at least 1", vcpus)
	}
	if maxPods < 1 {
		return Reserved{}, fmt.Errorf("kube-reserved: max-pods %d: need at least 1", maxPods)
	}
	// Per-core shares in ten-thousandths of a core, so 0.25% stays exact.
	var tenThousandths int64
	for core := 1; core <= vcpus; core++ {
		switch {
		case core == 1:
			tenThousandths += 600
		case core == 2:
			tenThousandths += 100
		case core <= 4:
			tenThousandths += 50
		default:
			tenThousandths += 25
		}
	}
	return Reserved{
		CPUMilli:         tenThousandths / 10,
		MemoryMiB:        11*int64(maxPods) + 255,
		EphemeralStorage: kubeReservedEphemeral(),
	}, nil
}

// EvictionHard is EKS's default kubelet evictionHard.
func EvictionHard() map[string]string {
	return map[string]string{
		"memory.available":  "100Mi",
		"nodefs.available":  "10%",
		"nodefs.inodesFree": "5%",
		"imagefs.available": "15%",
	}
}

// evictionMemoryMiB is EvictionHard's memory.available, which Allocatable
// subtracts.
const evictionMemoryMiB = 100

// nodefsEvictionPercent is EvictionHard's nodefs.available.
const nodefsEvictionPercent = 10
