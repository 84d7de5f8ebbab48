// Command gpu-check checks the nvidia.com/gpu device plugin on a real GPU
// machine, end to end and read-only: it enumerates the GPUs through the real
// NVML, generates the CDI spec into a temporary folder, runs the plugin
// against a fake kubelet registration server in another temporary folder,
// and checks registration, that ListAndWatch lists every GPU healthy, and
// that Allocate for one GPU returns its CDI name, device nodes and
// NVIDIA_VISIBLE_DEVICES. It changes no GPU state (no resets, no MIG or
// clock changes) and writes nothing outside its temporary folders.
//
// It exits 0 when every check passes, 1 when one fails and 2 when there is
// no usable NVIDIA driver. Build and run (as root or a user that can open
// /dev/nvidia*):
//
//	CGO_CFLAGS=-Wno-deprecated-declarations go run ./deviceplugins/cmd/gpu-check -v
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/autonode/autonode/deviceplugins"
	"github.com/autonode/autonode/deviceplugins/nvidia"
	"github.com/autonode/autonode/health"
)

// errNoDriver makes main exit 2: the machine cannot be checked at all.
var errNoDriver = errors.New("no usable NVIDIA driver")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	switch {
	case errors.Is(err, errNoDriver):
		fmt.Fprintln(os.Stderr, "gpu-check:", err)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "gpu-check:", err)
		os.Exit(1)
	}
}

type config struct {
	timeout    time.Duration
	expected   int
	sysfs      string
	driverRoot string
	hookPath   string
	verbose    bool
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var cfg config
	fs := flag.NewFlagSet("gpu-check", flag.ContinueOnError)
	fs.DurationVar(&cfg.timeout, "timeout", 2*time.Minute, "how long to wait for registration and healthy GPUs in all")
	fs.IntVar(&cfg.expected, "expected-gpus", 0, "GPUs the instance type has; 0 takes the count from sysfs")
	fs.StringVar(&cfg.sysfs, "sysfs", "/sys", "where sysfs is mounted")
	fs.StringVar(&cfg.driverRoot, "driver-root", "/", "root of the NVIDIA driver's files, for the CDI spec")
	fs.StringVar(&cfg.hookPath, "cdi-hook", "", "nvidia-cdi-hook path written into the CDI spec; empty takes nvcdi's default")
	fs.BoolVar(&cfg.verbose, "v", false, "show the plugin's logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	r := &report{out: out}
	level := slog.LevelWarn
	if cfg.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	sysfsIDs, err := nvidia.SysfsGPUs(cfg.sysfs)
	if err != nil {
		r.warn("sysfs", "%v", err)
	}
	r.info("sysfs", "%d NVIDIA GPUs on the PCI bus: %s", len(sysfsIDs), strings.Join(sysfsIDs, " "))

	lib := nvml.New()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return fmt.Errorf("%w: NVML init: %v (is the driver installed and loaded, libnvidia-ml.so.1 on the library path?); %d GPUs on the PCI bus",
			errNoDriver, ret, len(sysfsIDs))
	}
	defer lib.Shutdown()
	describeDriver(r, lib)

	dir, err := os.MkdirTemp("", "gpuchk")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cdiDir, pluginDir := filepath.Join(dir, "cdi"), filepath.Join(dir, "dp")
	if err := os.Mkdir(pluginDir, 0o700); err != nil {
		return err
	}

	b, err := nvidia.New(nvidia.Options{
		Logger:       log,
		NVML:         lib,
		Reporter:     reporter{r},
		ExpectedGPUs: cfg.expected,
		SysfsRoot:    cfg.sysfs,
		CDI:          nvidia.CDIOptions{Logger: log, Dir: cdiDir, DriverRoot: cfg.driverRoot, HookPath: cfg.hookPath},
	})
	if err != nil {
		return err
	}
	kubelet, err := startKubelet(filepath.Join(pluginDir, "kubelet.sock"))
	if err != nil {
		return err
	}
	defer kubelet.stop()
	plugin := deviceplugins.NewPlugin(b, deviceplugins.Options{
		PluginDir:      pluginDir,
		Logger:         log,
		InitialBackoff: 100 * time.Millisecond,
		MaxBackoff:     time.Second,
	})
	pctx, pcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- plugin.Run(pctx) }()

	check(ctx, r, b, kubelet, pluginDir, cdiDir)
	pcancel()
	if err := <-done; err != nil {
		r.fail("plugin stop", "Run returned %v", err)
	} else {
		r.pass("plugin stop", "clean")
	}
	if failed := r.summary(); failed > 0 {
		return fmt.Errorf("%d checks failed", failed)
	}
	return nil
}

// describeDriver reports driver versions; failures here are informational.
func describeDriver(r *report, lib nvml.Interface) {
	driver, _ := lib.SystemGetDriverVersion()
	nvmlVersion, _ := lib.SystemGetNVMLVersion()
	cuda, _ := lib.SystemGetCudaDriverVersion()
	r.info("driver", "NVIDIA driver %s, NVML %s, CUDA %d.%d", driver, nvmlVersion, cuda/1000, cuda%1000/10)
}

func check(ctx context.Context, r *report, b *nvidia.Backend, k *kubelet, pluginDir, cdiDir string) {
	var req *pluginapi.RegisterRequest
	select {
	case req = <-k.registered:
	case <-ctx.Done():
		r.fail("registration", "no registration before the timeout")
		return
	}
	switch {
	case req.GetVersion() != pluginapi.Version:
		r.fail("registration", "version %q, want %q", req.GetVersion(), pluginapi.Version)
	case req.GetResourceName() != nvidia.ResourceName:
		r.fail("registration", "resource %q, want %q", req.GetResourceName(), nvidia.ResourceName)
	default:
		r.pass("registration", "%s at %s, preferred allocation %v", req.GetResourceName(), req.GetEndpoint(),
			req.GetOptions().GetGetPreferredAllocationAvailable())
	}

	conn, err := grpc.NewClient("unix://"+filepath.Join(pluginDir, req.GetEndpoint()),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		r.fail("connect", "%v", err)
		return
	}
	defer conn.Close()
	client := pluginapi.NewDevicePluginClient(conn)

	devices, gpus, err := waitHealthy(ctx, client, b)
	for _, g := range gpus {
		mig := ""
		if g.MIGEnabled {
			mig = ", MIG enabled"
		}
		r.info("gpu", "%s index %d minor %d %s %s, %d MiB, NUMA %d%s", g.BusID, g.Index, g.Minor, g.UUID, g.Name,
			g.MemoryBytes>>20, g.NUMANode, mig)
	}
	if err != nil {
		r.fail("ListAndWatch", "%v", err)
	}
	var healthy []string
	for _, d := range devices {
		g := gpuByID(gpus, d.GetID())
		switch {
		case d.GetHealth() == pluginapi.Healthy:
			healthy = append(healthy, d.GetID())
		case g != nil && g.MIGEnabled:
			// MIG devices are not served yet; the parent is listed
			// unhealthy on purpose (docs/deviceplugins.md).
			r.warn("ListAndWatch", "%s is in MIG mode: listed unhealthy until MIG devices are supported", d.GetID())
		default:
			r.fail("ListAndWatch", "%s unhealthy", d.GetID())
		}
	}
	if err == nil {
		r.pass("ListAndWatch", "%d devices, %d healthy", len(devices), len(healthy))
	}
	if len(healthy) == 0 {
		r.fail("Allocate", "no healthy GPU to allocate")
		return
	}
	checkAllocate(ctx, r, client, gpuByID(gpus, healthy[0]), cdiDir)
	if len(healthy) >= 2 {
		resp, err := client.GetPreferredAllocation(ctx, &pluginapi.PreferredAllocationRequest{
			ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{
				AvailableDeviceIDs: healthy, MustIncludeDeviceIDs: healthy[:1], AllocationSize: 2,
			}},
		})
		if err != nil {
			r.fail("GetPreferredAllocation", "%v", err)
		} else {
			r.pass("GetPreferredAllocation", "2 GPUs with %s: %v", healthy[0], resp.GetContainerResponses()[0].GetDeviceIDs())
		}
	}
}

// waitHealthy follows ListAndWatch until every GPU without MIG is healthy,
// or ctx ends; it returns the last list and the GPUs NVML found either way.
func waitHealthy(ctx context.Context, client pluginapi.DevicePluginClient, b *nvidia.Backend) ([]*pluginapi.Device, []nvidia.GPU, error) {
	stream, err := client.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		return nil, b.GPUs(), err
	}
	var last []*pluginapi.Device
	for {
		resp, err := stream.Recv()
		gpus := b.GPUs()
		if err != nil {
			return last, gpus, fmt.Errorf("not every GPU healthy before the timeout: %w", err)
		}
		last = resp.GetDevices()
		if allHealthy(last, gpus) {
			return last, gpus, nil
		}
	}
}

func allHealthy(devs []*pluginapi.Device, gpus []nvidia.GPU) bool {
	want := 0
	for _, g := range gpus {
		if !g.MIGEnabled {
			want++
		}
	}
	n := 0
	for _, d := range devs {
		if d.GetHealth() == pluginapi.Healthy {
			n++
		}
	}
	return len(gpus) > 0 && n == want
}

func checkAllocate(ctx context.Context, r *report, client pluginapi.DevicePluginClient, g *nvidia.GPU, cdiDir string) {
	resp, err := client.Allocate(ctx, &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{g.BusID}}},
	})
	if err != nil {
		r.fail("Allocate", "%s: %v", g.BusID, err)
		return
	}
	c := resp.GetContainerResponses()[0]
	wantCDI := nvidia.CDIName(g.UUID)
	var cdi []string
	for _, d := range c.GetCdiDevices() {
		cdi = append(cdi, d.GetName())
	}
	if slices.Equal(cdi, []string{wantCDI}) {
		r.pass("Allocate CDI", "%s", wantCDI)
	} else {
		r.fail("Allocate CDI", "CDI devices %v, want [%s] (CDI spec generation failed? run with -v)", cdi, wantCDI)
	}
	spec := filepath.Join(cdiDir, "nvidia.yaml")
	if b, err := os.ReadFile(spec); err != nil {
		r.fail("CDI spec", "%v", err)
	} else if !strings.Contains(string(b), g.UUID) {
		r.fail("CDI spec", "%s does not name %s", spec, g.UUID)
	} else {
		r.pass("CDI spec", "%s names %s (%d bytes)", spec, g.UUID, len(b))
	}
	var paths []string
	for _, d := range c.GetDevices() {
		paths = append(paths, d.GetHostPath())
		if _, err := os.Stat(d.GetHostPath()); err != nil {
			r.fail("Allocate devices", "%s: %v", d.GetHostPath(), err)
		}
	}
	want := fmt.Sprintf("/dev/nvidia%d", g.Minor)
	if slices.Contains(paths, want) && slices.Contains(paths, "/dev/nvidiactl") {
		r.pass("Allocate devices", "%s", strings.Join(paths, " "))
	} else {
		r.fail("Allocate devices", "%v, want %s and /dev/nvidiactl", paths, want)
	}
	if env := c.GetEnvs()[nvidia.EnvVisibleDevices]; env == g.UUID {
		r.pass("Allocate env", "%s=%s", nvidia.EnvVisibleDevices, env)
	} else {
		r.fail("Allocate env", "%s=%q, want %s", nvidia.EnvVisibleDevices, env, g.UUID)
	}
}

func gpuByID(gpus []nvidia.GPU, id string) *nvidia.GPU {
	for i := range gpus {
		if gpus[i].BusID == id {
			return &gpus[i]
		}
	}
	return nil
}

// kubelet is the least of a kubelet that a plugin needs: the Registration
// service on kubelet.sock.
type kubelet struct {
	pluginapi.UnimplementedRegistrationServer
	srv        *grpc.Server
	registered chan *pluginapi.RegisterRequest
}

func startKubelet(socket string) (*kubelet, error) {
	l, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("fake kubelet on %s: %w", socket, err)
	}
	k := &kubelet{srv: grpc.NewServer(), registered: make(chan *pluginapi.RegisterRequest, 8)}
	pluginapi.RegisterRegistrationServer(k.srv, k)
	go func() { _ = k.srv.Serve(l) }()
	return k, nil
}

func (k *kubelet) Register(_ context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	select {
	case k.registered <- req:
	default: // later registrations are not checked
	}
	return &pluginapi.Empty{}, nil
}

func (k *kubelet) stop() { k.srv.Stop() }

// report prints one line per check and counts failures. The backend's
// health signals arrive from its own goroutine, hence the lock.
type report struct {
	mu             sync.Mutex
	out            io.Writer
	passed, failed int
}

func (r *report) line(status, check, format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch status {
	case "PASS":
		r.passed++
	case "FAIL":
		r.failed++
	}
	fmt.Fprintf(r.out, "%-5s %-22s %s\n", status, check, fmt.Sprintf(format, a...))
}

func (r *report) info(check, format string, a ...any) { r.line("INFO", check, format, a...) }
func (r *report) warn(check, format string, a ...any) { r.line("WARN", check, format, a...) }
func (r *report) pass(check, format string, a ...any) { r.line("PASS", check, format, a...) }
func (r *report) fail(check, format string, a ...any) { r.line("FAIL", check, format, a...) }

func (r *report) summary() (failed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.out, "\n%d passed, %d failed\n", r.passed, r.failed)
	return r.failed
}

// reporter turns the backend's health signals (GPUCountMismatch) into
// failed checks.
type reporter struct{ r *report }

func (h reporter) Report(_ context.Context, s health.Signal) {
	h.r.fail("health "+s.Reason, "%s", s.Message)
}
