package nvidia

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/nvidia-container-toolkit/pkg/nvcdi"
	"tags.cncf.io/container-device-interface/specs-go"
)

// CDI vendor and class of the devices in the spec: names read
// nvidia.com/gpu=<uuid>, as nvidia-ctk cdi generate writes them.
const (
	CDIVendor = "nvidia.com"
	CDIClass  = "gpu"
)

// CDIGenerator writes the CDI spec for gpus and returns the fully qualified
// CDI device name of each GPU it covers, keyed by UUID. A GPU without a name
// (MIG enabled, say) is allocated through device nodes only.
type CDIGenerator func(ctx context.Context, gpus []GPU) (map[string]string, error)

// CDIOptions configures NewCDIGenerator.
type CDIOptions struct {
	// Logger receives nvcdi's logs. Default is slog.Default().
	Logger *slog.Logger
	// Dir is the CDI spec directory that containerd reads. Default is
	// /var/run/cdi.
	Dir string
	// SpecFile is the spec's file name in Dir. Default is nvidia.yaml, the
	// name nvidia-ctk and nvidia-cdi-refresh use, so that one spec per host
	// names these devices (two specs with the same names make both
	// unresolvable).
	SpecFile string
	// DriverRoot is where the driver's libraries and binaries are found.
	// Default is /.
	DriverRoot string
	// DevRoot is where /dev of the driver root is. Default is DriverRoot.
	DevRoot string
	// HookPath is the nvidia-cdi-hook binary that the spec's hooks run.
	// Default is nvcdi's, /usr/bin/nvidia-cdi-hook.
	HookPath string
}

// NewCDIGenerator returns the real generator: nvcdi in NVML mode, device
// names by UUID and by index. It needs the driver's files on the host.
func NewCDIGenerator(lib nvml.Interface, o CDIOptions) CDIGenerator {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Dir == "" {
		o.Dir = "/var/run/cdi"
	}
	if o.SpecFile == "" {
		o.SpecFile = "nvidia.yaml"
	}
	if o.DriverRoot == "" {
		o.DriverRoot = "/"
	}
	return func(_ context.Context, gpus []GPU) (map[string]string, error) {
		path := filepath.Join(o.Dir, o.SpecFile)
		uuidNamer, err := nvcdi.NewDeviceNamer(nvcdi.DeviceNameStrategyUUID)
		if err != nil {
			return nil, fmt.Errorf("CDI spec %s: %w", path, err)
		}
		indexNamer, err := nvcdi.NewDeviceNamer(nvcdi.DeviceNameStrategyIndex)
		if err != nil {
			return nil, fmt.Errorf("CDI spec %s: %w", path, err)
		}
		opts := []nvcdi.Option{
			nvcdi.WithNvmlLib(lib),
			nvcdi.WithMode(nvcdi.ModeNvml),
			nvcdi.WithLogger(nvcdiLogger{o.Logger.With("component", "nvcdi")}),
			nvcdi.WithDriverRoot(o.DriverRoot),
			nvcdi.WithDeviceNamers(uuidNamer, indexNamer),
			nvcdi.WithVendor(CDIVendor),
			nvcdi.WithClass(CDIClass),
		}
		if o.DevRoot != "" {
			opts = append(opts, nvcdi.WithDevRoot(o.DevRoot))
		}
		if o.HookPath != "" {
			opts = append(opts, nvcdi.WithNVIDIACDIHookPath(o.HookPath))
		}
		cdilib, err := nvcdi.New(opts...)
		if err != nil {
			return nil, fmt.Errorf("CDI spec %s: creating nvcdi: %w", path, err)
		}
		spec, err := cdilib.GetSpec()
		if err != nil {
			return nil, fmt.Errorf("CDI spec %s: generating: %w", path, err)
		}
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("CDI spec %s: %w", path, err)
		}
		if err := spec.Save(path); err != nil {
			return nil, fmt.Errorf("CDI spec %s: writing: %w", path, err)
		}
		return namesInSpec(spec.Raw().Devices, gpus), nil
	}
}

// namesInSpec maps each GPU whose UUID names a device of the spec to its
// qualified CDI name.
func namesInSpec(devices []specs.Device, gpus []GPU) map[string]string {
	inSpec := make(map[string]bool, len(devices))
	for _, d := range devices {
		inSpec[d.Name] = true
	}
	names := make(map[string]string, len(gpus))
	for _, g := range gpus {
		if inSpec[g.UUID] {
			names[g.UUID] = CDIName(g.UUID)
		}
	}
	return names
}

// CDIName is the fully qualified CDI name of a device of the NVIDIA spec.
func CDIName(device string) string { return CDIVendor + "/" + CDIClass + "=" + device }

// nvcdiLogger adapts slog to the toolkit's printf-style logger. Each level
// drops one step: nvcdi warns about every optional file it cannot find (X11,
// Vulkan, IMEX), some thirty lines on a headless server, which would drown
// the agent's own warnings.
type nvcdiLogger struct{ l *slog.Logger }

func (n nvcdiLogger) Debugf(f string, a ...any)   { n.l.Debug(fmt.Sprintf(f, a...)) }
func (n nvcdiLogger) Errorf(f string, a ...any)   { n.l.Warn(fmt.Sprintf(f, a...)) }
func (n nvcdiLogger) Infof(f string, a ...any)    { n.l.Debug(fmt.Sprintf(f, a...)) }
func (n nvcdiLogger) Warningf(f string, a ...any) { n.l.Info(fmt.Sprintf(f, a...)) }
func (n nvcdiLogger) Tracef(f string, a ...any)   { n.l.Debug(fmt.Sprintf(f, a...)) }
