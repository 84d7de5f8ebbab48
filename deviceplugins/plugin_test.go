package deviceplugins_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autonode/autonode/health/healthtest"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/autonode/autonode/deviceplugins"
	"github.com/autonode/autonode/deviceplugins/plugintest"
	"github.com/autonode/autonode/health"
)

// fakeBackend reports the devices a test sets and records allocations.
type fakeBackend struct {
	resource string
	runErr   chan error // a value sent here ends Run with it

	mu          sync.Mutex
	devices     []deviceplugins.Device
	update      func([]deviceplugins.Device)
	allocated   [][]string
	allocateErr error
}

func newFakeBackend(devices ...deviceplugins.Device) *fakeBackend {
	return &fakeBackend{resource: "example.com/fake", runErr: make(chan error, 1), devices: devices}
}

func (b *fakeBackend) ResourceName() string { return b.resource }

func (b *fakeBackend) Run(ctx context.Context, update func([]deviceplugins.Device)) error {
	b.mu.Lock()
	b.update = update
	update(b.devices) // under the lock, so that set cannot overtake it
	b.mu.Unlock()
	select {
	case <-ctx.Done():
		return nil
	case err := <-b.runErr:
		return err
	}
}

// set replaces the device list, as a health change would.
func (b *fakeBackend) set(devices ...deviceplugins.Device) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.devices = devices
	if b.update != nil {
		b.update(devices)
	}
}

func (b *fakeBackend) Allocate(_ context.Context, ids []string) (*pluginapi.ContainerAllocateResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.allocateErr != nil {
		return nil, b.allocateErr
	}
	b.allocated = append(b.allocated, ids)
	return &pluginapi.ContainerAllocateResponse{Envs: map[string]string{"FAKE_DEVICES": strings.Join(ids, ",")}}, nil
}

func (b *fakeBackend) allocations() [][]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.allocated)
}

// preferredBackend is a fakeBackend with a topology: it prefers the
// required ids, then available ones from the end of the list.
type preferredBackend struct{ *fakeBackend }

func (preferredBackend) PreferredAllocation(available, mustInclude []string, size int) ([]string, error) {
	out := slices.Clone(mustInclude)
	for _, id := range slices.Backward(available) {
		if len(out) < size && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

func dev(id string, healthy bool, numa int, reason string) deviceplugins.Device {
	return deviceplugins.Device{ID: id, Healthy: healthy, NUMANode: numa, Reason: reason}
}

// running is a Plugin running over a fake kubelet in a short temporary folder.
type running struct {
	plugin  *deviceplugins.Plugin
	kubelet *plugintest.Kubelet
	dir     string
	cancel  context.CancelFunc
	runErr  chan error
}

// start runs a Plugin over backend; kubelet says whether a fake kubelet
// serves before the Plugin starts.
func start(t *testing.T, backend deviceplugins.Backend, reporter health.Reporter, kubelet bool) *running {
	t.Helper()
	r := &running{dir: plugintest.TempDir(t), runErr: make(chan error, 1)}
	if kubelet {
		r.kubelet = plugintest.NewKubelet(t, r.dir)
	}
	r.plugin = deviceplugins.NewPlugin(backend, deviceplugins.Options{
		PluginDir:      r.dir,
		Health:         reporter,
		Logger:         slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		InitialBackoff: 10 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.runErr <- r.plugin.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-r.runErr
	})
	return r
}

// wait returns what Run returned.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.runErr:
		r.runErr <- err // for the cleanup
		return err
	case <-time.After(plugintest.WaitTimeout):
		t.Fatalf("Run did not return within %s", plugintest.WaitTimeout)
		return nil
	}
}

func healthOf(devices []*pluginapi.Device, id string) string {
	for _, d := range devices {
		if d.GetID() == id {
			return d.GetHealth()
		}
	}
	return ""
}

func TestBackendSuite(t *testing.T) {
	devices := []deviceplugins.Device{dev("a", true, 0, ""), dev("b", true, -1, ""), dev("c", false, 1, "ECC")}
	for _, tc := range []struct {
		name    string
		backend deviceplugins.Backend
	}{
		{"no topology", newFakeBackend(devices...)},
		{"preferred allocator", preferredBackend{newFakeBackend(devices...)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plugintest.RunBackendSuite(t, tc.backend, plugintest.SuiteOptions{
				MinHealthy: 2,
				CheckAllocate: func(t *testing.T, id string, resp *pluginapi.ContainerAllocateResponse) {
					if got := resp.GetEnvs()["FAKE_DEVICES"]; got != id {
						t.Errorf("FAKE_DEVICES = %q, want %q", got, id)
					}
				},
			})
		})
	}
}

func TestSocketName(t *testing.T) {
	for resource, want := range map[string]string{
		"nvidia.com/gpu":            "autonode-nvidia.com_gpu.sock",
		"aws.amazon.com/neuron":     "autonode-aws.amazon.com_neuron.sock",
		"aws.amazon.com/neuroncore": "autonode-aws.amazon.com_neuroncore.sock",
		"vpc.amazonaws.com/efa":     "autonode-vpc.amazonaws.com_efa.sock",
	} {
		t.Run(resource, func(t *testing.T) {
			if got := deviceplugins.SocketName(resource); got != want {
				t.Errorf("SocketName(%q) = %q, want %q", resource, got, want)
			}
		})
	}
}

func TestRegistration(t *testing.T) {
	for _, tc := range []struct {
		name          string
		backend       deviceplugins.Backend
		wantPreferred bool
	}{
		{"no topology", newFakeBackend(dev("a", true, 0, "")), false},
		{"preferred allocator", preferredBackend{newFakeBackend(dev("a", true, 0, ""))}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := start(t, tc.backend, nil, true)
			req := r.kubelet.WaitForRegistration(t, "example.com/fake")
			if req.GetVersion() != pluginapi.Version || req.GetResourceName() != "example.com/fake" ||
				req.GetEndpoint() != "autonode-example.com_fake.sock" {
				t.Errorf("RegisterRequest = %v", req)
			}
			if got := req.GetOptions().GetGetPreferredAllocationAvailable(); got != tc.wantPreferred {
				t.Errorf("GetPreferredAllocationAvailable = %v, want %v", got, tc.wantPreferred)
			}
			opts, err := r.kubelet.Client(t, "example.com/fake").GetDevicePluginOptions(t.Context(), &pluginapi.Empty{})
			if err != nil {
				t.Fatalf("GetDevicePluginOptions: %v", err)
			}
			if opts.GetGetPreferredAllocationAvailable() != tc.wantPreferred || opts.GetPreStartRequired() {
				t.Errorf("GetDevicePluginOptions = %v", opts)
			}
			if got, want := r.plugin.Name(), "deviceplugin:example.com/fake"; got != want {
				t.Errorf("Name() = %q, want %q", got, want)
			}
			plugintest.WaitReady(t, r.plugin)
		})
	}
}

// TestRegistersWhenKubeletAppears starts the Plugin before the kubelet: it is
// not ready, and registers once kubelet.sock is created.
func TestRegistersWhenKubeletAppears(t *testing.T) {
	r := start(t, newFakeBackend(dev("a", true, 0, "")), nil, false)
	if err := r.plugin.Ready(); err == nil {
		t.Errorf("Ready() = nil with no kubelet")
	}
	kubelet := plugintest.NewKubelet(t, r.dir)
	kubelet.WaitForRegistration(t, "example.com/fake")
	plugintest.WaitReady(t, r.plugin)
}

func TestReregisters(t *testing.T) {
	for _, tc := range []struct {
		name  string
		event func(t *testing.T, r *running)
	}{
		// A kubelet restart removes kubelet.sock and the Plugin's socket.
		{"kubelet restart", func(t *testing.T, r *running) { r.kubelet.Restart(t) }},
		// Only the Plugin's socket goes; the kubelet keeps running.
		{"socket removed", func(t *testing.T, r *running) {
			if err := os.Remove(r.plugin.SocketPath()); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backend := newFakeBackend(dev("a", true, 0, ""), dev("b", true, 0, ""))
			r := start(t, backend, nil, true)
			r.kubelet.WaitForRegistration(t, backend.resource)
			r.kubelet.WaitForDevices(t, backend.resource, func(ds []*pluginapi.Device) bool { return len(ds) == 2 })

			tc.event(t, r)

			deadline := time.Now().Add(plugintest.WaitTimeout)
			for r.kubelet.Registrations(backend.resource) < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("no second registration within %s", plugintest.WaitTimeout)
				}
				time.Sleep(10 * time.Millisecond)
			}
			r.kubelet.WaitForRegistration(t, backend.resource)
			if fi, err := os.Stat(r.plugin.SocketPath()); err != nil || fi.Mode()&fs.ModeSocket == 0 {
				t.Fatalf("socket %s not re-created: %v", r.plugin.SocketPath(), err)
			}
			// The new connection streams and allocates.
			r.kubelet.WaitForDevices(t, backend.resource, func(ds []*pluginapi.Device) bool { return len(ds) == 2 })
			if _, err := r.kubelet.Allocate(t, backend.resource, []string{"b"}); err != nil {
				t.Errorf("Allocate after re-registration: %v", err)
			}
			plugintest.WaitReady(t, r.plugin)
		})
	}
}

func TestListAndWatchAndHealthSignals(t *testing.T) {
	backend := newFakeBackend(dev("gpu-0", true, 1, ""), dev("gpu-1", true, -1, ""))
	rec := &healthtest.Recorder{}
	r := start(t, backend, rec, true)
	const res = "example.com/fake"

	devices := r.kubelet.WaitForDevices(t, res, func(ds []*pluginapi.Device) bool { return len(ds) == 2 })
	for _, d := range devices {
		var numa []int64
		for _, n := range d.GetTopology().GetNodes() {
			numa = append(numa, n.GetID())
		}
		want := map[string][]int64{"gpu-0": {1}, "gpu-1": nil}[d.GetID()]
		if !slices.Equal(numa, want) || d.GetHealth() != pluginapi.Healthy {
			t.Errorf("device %s: health %s, NUMA nodes %v; want Healthy, %v", d.GetID(), d.GetHealth(), numa, want)
		}
	}

	// A second, concurrent stream sees the same changes.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := r.kubelet.Client(t, res).ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		t.Fatalf("second ListAndWatch: %v", err)
	}
	if first, err := stream.Recv(); err != nil || len(first.GetDevices()) != 2 {
		t.Fatalf("second ListAndWatch first list = %v, %v", first, err)
	}

	backend.set(dev("gpu-0", false, 1, "XID 79"), dev("gpu-1", true, -1, ""))
	r.kubelet.WaitForDevices(t, res, func(ds []*pluginapi.Device) bool {
		return healthOf(ds, "gpu-0") == pluginapi.Unhealthy && healthOf(ds, "gpu-1") == pluginapi.Healthy
	})
	if next, err := stream.Recv(); err != nil || healthOf(next.GetDevices(), "gpu-0") != pluginapi.Unhealthy {
		t.Errorf("second ListAndWatch after the change = %v, %v", next, err)
	}
	s := waitForNth(t, rec, "DeviceUnhealthy", 1)
	if s.Source != res || s.Condition != health.AcceleratedHardwareReady || s.Severity != health.Warning ||
		!strings.Contains(s.Message, "gpu-0") || !strings.Contains(s.Message, "XID 79") {
		t.Errorf("unhealthy signal = %+v", s)
	}

	backend.set(dev("gpu-0", true, 1, ""), dev("gpu-1", true, -1, ""))
	r.kubelet.WaitForDevices(t, res, func(ds []*pluginapi.Device) bool {
		return healthOf(ds, "gpu-0") == pluginapi.Healthy
	})
	s = waitForNth(t, rec, "DeviceRecovered", 1)
	if s.Source != res || s.Condition != health.AcceleratedHardwareReady || s.Severity != health.Info ||
		!strings.Contains(s.Message, "gpu-0") {
		t.Errorf("recovered signal = %+v", s)
	}
	// Each transition is reported once, not on every list.
	if got := len(rec.Signals()); got != 2 {
		t.Errorf("got %d signals, want 2: %+v", got, rec.Signals())
	}
}

func TestAllocate(t *testing.T) {
	backend := newFakeBackend(dev("a", true, 0, ""), dev("b", true, 0, ""), dev("sick", false, 0, "link down"))
	r := start(t, backend, nil, true)
	const res = "example.com/fake"
	r.kubelet.WaitForDevices(t, res, func(ds []*pluginapi.Device) bool { return len(ds) == 3 })

	for _, tc := range []struct {
		name       string
		containers [][]string
		wantCode   codes.Code
		wantInMsg  string
	}{
		{name: "one healthy", containers: [][]string{{"a"}}},
		{name: "two containers", containers: [][]string{{"a"}, {"b"}}},
		{name: "unknown", containers: [][]string{{"zz"}}, wantCode: codes.InvalidArgument, wantInMsg: `"zz"`},
		{name: "unhealthy", containers: [][]string{{"sick"}}, wantCode: codes.InvalidArgument, wantInMsg: `"sick"`},
		{name: "one bad of two", containers: [][]string{{"a", "zz"}}, wantCode: codes.InvalidArgument, wantInMsg: `"zz"`},
		{name: "bad second container", containers: [][]string{{"a"}, {"sick"}}, wantCode: codes.InvalidArgument, wantInMsg: "link down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(backend.allocations())
			resp, err := r.kubelet.Allocate(t, res, tc.containers...)
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("Allocate(%v) = %v, want code %s", tc.containers, err, tc.wantCode)
			}
			if tc.wantCode != codes.OK {
				if !strings.Contains(status.Convert(err).Message(), tc.wantInMsg) {
					t.Errorf("Allocate(%v) error %q does not contain %s", tc.containers, err, tc.wantInMsg)
				}
				// A bad id in any container allocates nothing.
				if got := backend.allocations()[before:]; len(got) != 0 {
					t.Errorf("backend allocated %v for a refused request", got)
				}
				return
			}
			if got := backend.allocations()[before:]; !slices.EqualFunc(got, tc.containers, slices.Equal) {
				t.Errorf("backend allocated %v, want %v", got, tc.containers)
			}
			if len(resp.GetContainerResponses()) != len(tc.containers) {
				t.Errorf("%d container responses for %d containers", len(resp.GetContainerResponses()), len(tc.containers))
			}
		})
	}

	t.Run("backend error", func(t *testing.T) {
		backend.mu.Lock()
		backend.allocateErr = errors.New("driver gone")
		backend.mu.Unlock()
		_, err := r.kubelet.Allocate(t, res, []string{"a"})
		if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "driver gone") {
			t.Errorf("Allocate with a failing backend = %v, want Internal naming the cause", err)
		}
	})
}

func TestGetPreferredAllocation(t *testing.T) {
	devices := []deviceplugins.Device{dev("a", true, 0, ""), dev("b", true, 0, ""), dev("c", true, 0, ""), dev("d", true, 0, "")}
	for _, tc := range []struct {
		name        string
		backend     deviceplugins.Backend
		available   []string
		mustInclude []string
		size        int
		want        []string
	}{
		{"first n", newFakeBackend(devices...), []string{"a", "b", "c", "d"}, nil, 2, []string{"a", "b"}},
		{"must include first", newFakeBackend(devices...), []string{"a", "b", "c", "d"}, []string{"c"}, 2, []string{"c", "a"}},
		{"must include listed twice", newFakeBackend(devices...), []string{"c", "a", "b"}, []string{"c"}, 3, []string{"c", "a", "b"}},
		{"size above available", newFakeBackend(devices...), []string{"a"}, nil, 3, []string{"a"}},
		{"delegated", preferredBackend{newFakeBackend(devices...)}, []string{"a", "b", "c", "d"}, []string{"b"}, 2, []string{"b", "d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := start(t, tc.backend, nil, true)
			r.kubelet.WaitForRegistration(t, "example.com/fake")
			got, err := r.kubelet.GetPreferredAllocation(t, "example.com/fake", tc.available, tc.mustInclude, tc.size)
			if err != nil {
				t.Fatalf("GetPreferredAllocation: %v", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("GetPreferredAllocation(%v, must %v, size %d) = %v, want %v",
					tc.available, tc.mustInclude, tc.size, got, tc.want)
			}
		})
	}
}

func TestCleanStopRemovesSocket(t *testing.T) {
	backend := newFakeBackend(dev("a", true, 0, ""))
	dir := plugintest.TempDir(t)
	// A stale socket file from an earlier agent must not stop the Plugin.
	stale := filepath.Join(dir, deviceplugins.SocketName(backend.resource))
	if err := os.WriteFile(stale, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	kubelet := plugintest.NewKubelet(t, dir)
	plugin := deviceplugins.NewPlugin(backend, deviceplugins.Options{PluginDir: dir, InitialBackoff: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- plugin.Run(ctx) }()
	kubelet.WaitForDevices(t, backend.resource, func(ds []*pluginapi.Device) bool { return len(ds) == 1 })

	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run after a clean stop = %v, want nil", err)
		}
	case <-time.After(plugintest.WaitTimeout):
		t.Fatalf("Run did not return within %s", plugintest.WaitTimeout)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket %s still there after a clean stop: %v", stale, err)
	}
}

func TestBackendErrorEndsRun(t *testing.T) {
	backend := newFakeBackend(dev("a", true, 0, ""))
	r := start(t, backend, nil, true)
	r.kubelet.WaitForRegistration(t, backend.resource)

	cause := errors.New("nvml init failed")
	backend.runErr <- cause
	err := r.wait(t)
	if !errors.Is(err, cause) || !strings.Contains(err.Error(), backend.resource) {
		t.Errorf("Run = %v, want an error wrapping %q and naming %s", err, cause, backend.resource)
	}
	if _, err := os.Stat(r.plugin.SocketPath()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket %s still there after Run failed: %v", r.plugin.SocketPath(), err)
	}
	if r.plugin.Ready() == nil {
		t.Errorf("Ready() = nil after Run failed")
	}
}

// waitForNth waits for the nth signal with reason and returns it.
func waitForNth(t *testing.T, r *healthtest.Recorder, reason string, n int) health.Signal {
	t.Helper()
	var found []health.Signal
	r.WaitFor(t, fmt.Sprintf("signal %s #%d", reason, n), func(ss []health.Signal) bool {
		found = found[:0]
		for _, s := range ss {
			if s.Reason == reason {
				found = append(found, s)
			}
		}
		return len(found) >= n
	})
	return found[n-1]
}
