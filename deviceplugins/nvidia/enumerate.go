package nvidia

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// GPU is one full NVIDIA GPU as NVML reports it.
type GPU struct {
	// BusID is the normalised PCI bus id (0000:10:1c.0) and the device id
	// the kubelet sees.
	BusID string
	// UUID is NVML's GPU-… identifier; CDI device names use it.
	UUID string
	// Index is NVML's enumeration index.
	Index int
	// Minor is the minor number of /dev/nvidiaN.
	Minor int
	// Name is the product name, e.g. "NVIDIA A100-SXM4-40GB".
	Name string
	// MemoryBytes is the total framebuffer memory.
	MemoryBytes uint64
	// NUMANode is the GPU's NUMA node, or -1 when unknown.
	NUMANode int
	// MIGEnabled is true when MIG mode is on; such a GPU is not handed out
	// whole (see docs/deviceplugins.md).
	MIGEnabled bool

	handle nvml.Device
}

// NormalizeBusID turns a PCI bus id in NVML's form (00000000:10:1C.0) or
// sysfs form (0000:10:1c.0) into the lower-case sysfs form, so that ids are
// the same whether they came from NVML or from sysfs.
func NormalizeBusID(id string) (string, error) {
	s := strings.ToLower(strings.TrimSpace(id))
	domain, rest, ok := strings.Cut(s, ":")
	if !ok || strings.Count(rest, ":") != 1 {
		// NVML's legacy form has no domain: bb:dd.f.
		if ok && strings.Count(rest, ":") == 0 {
			domain, rest = "0", s
		} else {
			return "", fmt.Errorf("PCI bus id %q: want [domain:]bus:device.function", id)
		}
	}
	bus, devfn, _ := strings.Cut(rest, ":")
	dev, fn, ok := strings.Cut(devfn, ".")
	if !ok {
		return "", fmt.Errorf("PCI bus id %q: want [domain:]bus:device.function", id)
	}
	parts := [4]uint64{}
	for i, p := range []struct {
		s    string
		bits int
	}{{domain, 32}, {bus, 8}, {dev, 5}, {fn, 3}} {
		v, err := strconv.ParseUint(p.s, 16, p.bits)
		if err != nil {
			return "", fmt.Errorf("PCI bus id %q: %w", id, err)
		}
		parts[i] = v
	}
	return fmt.Sprintf("%04x:%02x:%02x.%x", parts[0], parts[1], parts[2], parts[3]), nil
}

// cString converts one of NVML's fixed-size C char arrays.
func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

// enumerate lists every full GPU NVML sees, sorted by bus id. sysfsRoot is
// the fallback source of the NUMA node for drivers that do not report it.
func enumerate(lib nvml.Interface, sysfsRoot string) ([]GPU, error) {
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("counting GPUs: %w", ret)
	}
	gpus := make([]GPU, 0, count)
	for i := range count {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("GPU index %d: getting handle: %w", i, ret)
		}
		g, err := describe(d, i, sysfsRoot)
		if err != nil {
			return nil, err
		}
		gpus = append(gpus, g)
	}
	sort.Slice(gpus, func(i, j int) bool { return gpus[i].BusID < gpus[j].BusID })
	return gpus, nil
}

func describe(d nvml.Device, index int, sysfsRoot string) (GPU, error) {
	pci, ret := d.GetPciInfo()
	if ret != nvml.SUCCESS {
		return GPU{}, fmt.Errorf("GPU index %d: reading PCI info: %w", index, ret)
	}
	busID, err := NormalizeBusID(cString(pci.BusId[:]))
	if err != nil {
		return GPU{}, fmt.Errorf("GPU index %d: %w", index, err)
	}
	g := GPU{BusID: busID, Index: index, NUMANode: -1, handle: d}
	if g.UUID, ret = d.GetUUID(); ret != nvml.SUCCESS {
		return GPU{}, fmt.Errorf("GPU %s: reading UUID: %w", busID, ret)
	}
	if g.Minor, ret = d.GetMinorNumber(); ret != nvml.SUCCESS {
		return GPU{}, fmt.Errorf("GPU %s: reading minor number: %w", busID, ret)
	}
	// Name and memory are informational: a failure does not hide the GPU.
	g.Name, _ = d.GetName()
	if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
		g.MemoryBytes = mem.Total
	}
	if n, ret := d.GetNumaNodeId(); ret == nvml.SUCCESS {
		g.NUMANode = n
	} else {
		g.NUMANode = sysfsNUMANode(sysfsRoot, busID)
	}
	// ERROR_NOT_SUPPORTED means a GPU without MIG: the common case.
	if cur, _, ret := d.GetMigMode(); ret == nvml.SUCCESS {
		g.MIGEnabled = cur == nvml.DEVICE_MIG_ENABLE
	}
	return g, nil
}

// sysfsNUMANode reads the kernel's view of a PCI device's NUMA node.
func sysfsNUMANode(sysfsRoot, busID string) int {
	b, err := os.ReadFile(filepath.Join(sysfsRoot, "bus/pci/devices", busID, "numa_node"))
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 {
		return -1
	}
	return n
}

const (
	pciVendorNVIDIA = 0x10de
	// PCI classes of a GPU: VGA controller and 3D controller. NVSwitches
	// (0x0680) are bridges and are left out on purpose.
	pciClassVGA = 0x0300
	pciClass3D  = 0x0302
)

// SysfsGPUs lists the bus ids of NVIDIA GPUs that the kernel sees under
// sysfsRoot/bus/pci/devices, sorted. It works without a driver, so that the
// GPUs the instance should have are known even when NVML cannot start.
func SysfsGPUs(sysfsRoot string) ([]string, error) {
	dir := filepath.Join(sysfsRoot, "bus/pci/devices")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing PCI devices in %s: %w", dir, err)
	}
	var ids []string
	for _, e := range entries {
		vendor, err := readHex(filepath.Join(dir, e.Name(), "vendor"))
		if err != nil || vendor != pciVendorNVIDIA {
			continue
		}
		class, err := readHex(filepath.Join(dir, e.Name(), "class"))
		if err != nil {
			continue
		}
		// class holds class, subclass and prog-if: 0x030200.
		if c := class >> 8; c != pciClassVGA && c != pciClass3D {
			continue
		}
		id, err := NormalizeBusID(e.Name())
		if err != nil {
			continue
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, nil
}

func readHex(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"), 16, 32)
}
