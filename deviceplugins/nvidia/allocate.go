package nvidia

import (
	"context"
	"fmt"
	"strings"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// EnvVisibleDevices is read by the NVIDIA container runtime hook (the
// pre-CDI path) and by CUDA images; it lists the allocated GPUs by UUID.
const EnvVisibleDevices = "NVIDIA_VISIBLE_DEVICES"

// controlDevices are the device nodes every GPU container needs besides its
// /dev/nvidiaN.
var controlDevices = [...]string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"}

// Allocate answers with the CDI device name of each GPU and, for runtimes
// without CDI, its device nodes and NVIDIA_VISIBLE_DEVICES. A runtime that
// applies both gets each device node once: CDI replaces a device of the same
// path. CDI names are left out unless every GPU has one, so that a
// container never gets half its GPUs through CDI.
func (b *Backend) Allocate(_ context.Context, ids []string) (*pluginapi.ContainerAllocateResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	resp := &pluginapi.ContainerAllocateResponse{
		Devices: make([]*pluginapi.DeviceSpec, 0, len(ids)+len(controlDevices)),
	}
	uuids := make([]string, 0, len(ids))
	cdi := make([]*pluginapi.CDIDevice, 0, len(ids))
	for _, id := range ids {
		g := b.gpus[id]
		if g == nil {
			return nil, fmt.Errorf("allocating GPU %s: not a GPU this plugin found", id)
		}
		uuids = append(uuids, g.UUID)
		path := fmt.Sprintf("/dev/nvidia%d", g.Minor)
		resp.Devices = append(resp.Devices, &pluginapi.DeviceSpec{ContainerPath: path, HostPath: path, Permissions: "rw"})
		if name, ok := b.cdiNames[g.UUID]; ok && cdi != nil {
			cdi = append(cdi, &pluginapi.CDIDevice{Name: name})
		} else {
			cdi = nil
		}
	}
	if len(ids) > 0 {
		for _, path := range controlDevices {
			resp.Devices = append(resp.Devices, &pluginapi.DeviceSpec{ContainerPath: path, HostPath: path, Permissions: "rw"})
		}
	}
	if len(cdi) > 0 {
		resp.CdiDevices = cdi
	}
	resp.Envs = map[string]string{EnvVisibleDevices: strings.Join(uuids, ",")}
	if len(ids) == 0 {
		// "void" tells the NVIDIA runtime to inject no GPU; an empty value
		// could be read as "all" by older hooks.
		resp.Envs[EnvVisibleDevices] = "void"
	}
	return resp, nil
}
