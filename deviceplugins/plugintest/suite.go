package plugintest

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/autonode/autonode/deviceplugins"
)

// SuiteOptions tunes RunBackendSuite. Zero values take the defaults.
type SuiteOptions struct {
	// Logger receives the Plugin's logs. Default discards them.
	Logger *slog.Logger
	// MinHealthy is how many healthy devices the backend must report before
	// the checks start. Default is 1; the suite needs at least one.
	MinHealthy int
	// CheckAllocate, if set, also checks the backend's answer for one
	// healthy id (device nodes, environment, CDI names).
	CheckAllocate func(t *testing.T, id string, resp *pluginapi.ContainerAllocateResponse)
}

// RunBackendSuite runs the checks that every Backend must pass, each as a
// subtest: a Plugin over backend registers with a fake kubelet, lists the
// backend's devices through ListAndWatch, allocates a healthy id and refuses
// an unknown one, answers GetPreferredAllocation with distinct ids that
// include the required ones, and removes its socket on a clean stop.
//
// The backend must report its devices without outside help; a backend whose
// hardware is absent is tested over a fake (a mock NVML, a sysfs tree in a
// temporary folder).
func RunBackendSuite(t *testing.T, backend deviceplugins.Backend, opts SuiteOptions) {
	t.Helper()
	if opts.MinHealthy <= 0 {
		opts.MinHealthy = 1
	}
	resource := backend.ResourceName()
	dir := TempDir(t)
	kubelet := NewKubelet(t, dir)
	plugin := deviceplugins.NewPlugin(backend, deviceplugins.Options{
		PluginDir:      dir,
		Logger:         opts.Logger,
		InitialBackoff: 10 * time.Millisecond,
		MaxBackoff:     time.Second,
	})

	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- plugin.Run(ctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-runErr:
			return err
		case <-time.After(WaitTimeout):
			return errors.New("Run did not return within " + WaitTimeout.String() + " of ctx ending")
		}
	}
	t.Cleanup(func() { _ = stop() })

	ok := t.Run("Registration", func(t *testing.T) {
		req := kubelet.WaitForRegistration(t, resource)
		if req.GetVersion() != pluginapi.Version {
			t.Errorf("Version = %q, want %q", req.GetVersion(), pluginapi.Version)
		}
		if req.GetResourceName() != resource {
			t.Errorf("ResourceName = %q, want %q", req.GetResourceName(), resource)
		}
		if want := filepath.Base(plugin.SocketPath()); req.GetEndpoint() != want {
			t.Errorf("Endpoint = %q, want %q", req.GetEndpoint(), want)
		}
		if fi, err := os.Stat(filepath.Join(dir, req.GetEndpoint())); err != nil || fi.Mode()&fs.ModeSocket == 0 {
			t.Errorf("endpoint %s is not a socket in %s (err %v)", req.GetEndpoint(), dir, err)
		}
		_, hasPreferred := backend.(deviceplugins.PreferredAllocator)
		if got := req.GetOptions().GetGetPreferredAllocationAvailable(); got != hasPreferred {
			t.Errorf("GetPreferredAllocationAvailable = %v, want %v (backend implements PreferredAllocator: %v)",
				got, hasPreferred, hasPreferred)
		}
	})
	if !ok {
		return
	}

	var devices []*pluginapi.Device
	ok = t.Run("ListAndWatch", func(t *testing.T) {
		devices = kubelet.WaitForDevices(t, resource, func(ds []*pluginapi.Device) bool {
			return len(healthyIDs(ds)) >= opts.MinHealthy
		})
		seen := map[string]bool{}
		for _, d := range devices {
			switch {
			case d.GetID() == "":
				t.Errorf("device with an empty ID: %v", d)
			case seen[d.GetID()]:
				t.Errorf("device %q listed twice", d.GetID())
			}
			seen[d.GetID()] = true
			if h := d.GetHealth(); h != pluginapi.Healthy && h != pluginapi.Unhealthy {
				t.Errorf("device %q: Health = %q, want %q or %q", d.GetID(), h, pluginapi.Healthy, pluginapi.Unhealthy)
			}
			for _, n := range d.GetTopology().GetNodes() {
				if n.GetID() < 0 {
					t.Errorf("device %q: NUMA node %d", d.GetID(), n.GetID())
				}
			}
		}
		WaitReady(t, plugin)
	})
	if !ok {
		return
	}
	healthy := healthyIDs(devices)

	t.Run("AllocateHealthy", func(t *testing.T) {
		id := healthy[0]
		resp, err := kubelet.Allocate(t, resource, []string{id})
		if err != nil {
			t.Fatalf("Allocate(%q): %v", id, err)
		}
		if n := len(resp.GetContainerResponses()); n != 1 {
			t.Fatalf("Allocate(%q): %d container responses, want 1", id, n)
		}
		if opts.CheckAllocate != nil {
			opts.CheckAllocate(t, id, resp.GetContainerResponses()[0])
		}
	})

	t.Run("AllocateUnknown", func(t *testing.T) {
		const id = "autonode-no-such-device"
		_, err := kubelet.Allocate(t, resource, []string{id})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("Allocate(%q) = %v, want code InvalidArgument", id, err)
		}
		if !strings.Contains(status.Convert(err).Message(), id) {
			t.Errorf("Allocate(%q) error %q does not name the device", id, status.Convert(err).Message())
		}
	})

	t.Run("GetPreferredAllocation", func(t *testing.T) {
		size := min(2, len(healthy))
		must := healthy[len(healthy)-1:]
		ids, err := kubelet.GetPreferredAllocation(t, resource, healthy, must, size)
		if err != nil {
			t.Fatalf("GetPreferredAllocation(%v, must %v, size %d): %v", healthy, must, size, err)
		}
		if len(ids) != size {
			t.Errorf("GetPreferredAllocation returned %v, want %d ids", ids, size)
		}
		seen := map[string]bool{}
		for _, id := range ids {
			if seen[id] {
				t.Errorf("GetPreferredAllocation returned %q twice: %v", id, ids)
			}
			seen[id] = true
			if !slices.Contains(healthy, id) {
				t.Errorf("GetPreferredAllocation returned %q, which is not available: %v", id, healthy)
			}
		}
		for _, id := range must {
			if !seen[id] {
				t.Errorf("GetPreferredAllocation returned %v without required %q", ids, id)
			}
		}
	})

	t.Run("CleanStop", func(t *testing.T) {
		if err := stop(); err != nil {
			t.Fatalf("Run returned %v after a clean stop, want nil", err)
		}
		if _, err := os.Stat(plugin.SocketPath()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket %s still there after a clean stop (stat: %v)", plugin.SocketPath(), err)
		}
	})
}

// WaitReady waits until sub's Ready returns nil.
func WaitReady(tb testing.TB, sub interface{ Ready() error }) {
	tb.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for {
		err := sub.Ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("not ready within %s: %v", WaitTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func healthyIDs(devices []*pluginapi.Device) []string {
	var ids []string
	for _, d := range devices {
		if d.GetHealth() == pluginapi.Healthy {
			ids = append(ids, d.GetID())
		}
	}
	return ids
}
