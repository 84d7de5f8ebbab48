// Package deviceplugins is autonode's kubelet device-plugin framework
// (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1). A Plugin serves one
// extended resource on a unix socket in the kubelet's device-plugin folder,
// registers with kubelet.sock and registers again whenever the kubelet
// restarts, streams device health through ListAndWatch, and publishes health
// changes as health signals. The hardware side of each resource is a Backend:
// nvidia/, neuron/ and efa/ implement it.
package deviceplugins

import (
	"context"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Device is one allocatable unit of a resource, as the kubelet sees it.
type Device struct {
	// ID is stable across agent restarts and driver failures (a PCI bus id,
	// a device or core index), since the kubelet checkpoints allocations by it.
	ID string
	// Healthy is false while the device must not be handed out.
	Healthy bool
	// NUMANode is the device's NUMA node, or -1 when unknown.
	NUMANode int
	// Reason says why the device is unhealthy; empty when healthy.
	Reason string
}

// Backend is the hardware behind one extended resource.
//
// Lifecycle: the Plugin calls Run once per run of its own; Run discovers the
// devices, calls update with the full list, and then calls it again with the
// full list after every change (health, hot-unplug) until ctx ends. update
// copies the list and may be called from any goroutine. Allocate and the
// optional PreferredAllocator are called concurrently with Run, only for
// device ids that Run has reported (Allocate only for healthy ones).
type Backend interface {
	// ResourceName is the extended resource, e.g. nvidia.com/gpu.
	ResourceName() string
	// Run watches the devices until ctx ends; see the lifecycle above. An
	// error return ends the Plugin's Run with that error, and the agent's
	// supervisor runs the Plugin, and so Backend.Run, again after a backoff.
	// A nil return before ctx ends means the last list reported is final.
	Run(ctx context.Context, update func([]Device)) error
	// Allocate returns what a container that gets ids needs: device nodes,
	// environment, mounts or CDI device names.
	Allocate(ctx context.Context, ids []string) (*pluginapi.ContainerAllocateResponse, error)
}

// PreferredAllocator is implemented by backends with a topology to respect
// (NVLink, NUMA, the Neuron ring). The Plugin then advertises
// GetPreferredAllocationAvailable.
type PreferredAllocator interface {
	// PreferredAllocation picks size ids from available, including every id
	// in mustInclude.
	PreferredAllocation(available, mustInclude []string, size int) ([]string, error)
}
