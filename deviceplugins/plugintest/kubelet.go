// Package plugintest tests device plugins against a fake kubelet that speaks
// the real v1beta1 device-plugin API over unix sockets: it serves the
// Registration service on kubelet.sock, dials every plugin that registers,
// follows its ListAndWatch stream and calls Allocate and
// GetPreferredAllocation on behalf of a test. RunBackendSuite checks any
// deviceplugins.Backend through it.
package plugintest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// WaitTimeout bounds every Wait helper. It is generous on purpose: the
// helpers wait for an event, and a slow machine must not fail a test.
const WaitTimeout = 30 * time.Second

// TempDir makes a short temporary folder and removes it when the test ends.
// Unix socket paths must stay under 108 bytes, which tb.TempDir's long
// paths can exceed.
func TempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "dp")
	if err != nil {
		tb.Fatalf("making a temporary device-plugin folder: %v", err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Kubelet is a fake kubelet device manager. It is safe for concurrent use.
type Kubelet struct {
	dir    string
	socket string

	mu      sync.Mutex
	server  *grpc.Server
	serving chan struct{} // closed when the current server's Serve returned
	// plugins holds the latest registration of each resource since the
	// last (re)start, as a real kubelet forgets plugins when it restarts.
	plugins map[string]*plugin
	// registrations counts every registration of each resource, restarts
	// included.
	registrations map[string]int
	// changed is closed and replaced on every registration or device list.
	changed chan struct{}
}

// plugin is one registered plugin and the client the fake kubelet holds.
type plugin struct {
	req    *pluginapi.RegisterRequest
	conn   *grpc.ClientConn
	client pluginapi.DevicePluginClient
	cancel context.CancelFunc
	done   chan struct{} // closed when the ListAndWatch goroutine returns

	listed  bool
	devices []*pluginapi.Device
}

// NewKubelet serves the Registration service on dir/kubelet.sock until the
// test ends.
func NewKubelet(tb testing.TB, dir string) *Kubelet {
	tb.Helper()
	k := &Kubelet{
		dir:           dir,
		socket:        filepath.Join(dir, "kubelet.sock"),
		plugins:       map[string]*plugin{},
		registrations: map[string]int{},
		changed:       make(chan struct{}),
	}
	if err := k.start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(k.stop)
	return k
}

// Socket is the path of the fake kubelet.sock.
func (k *Kubelet) Socket() string { return k.socket }

func (k *Kubelet) start() error {
	l, err := net.Listen("unix", k.socket)
	if err != nil {
		return fmt.Errorf("fake kubelet listening on %s: %w", k.socket, err)
	}
	srv := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(srv, registration{k: k})
	serving := make(chan struct{})
	go func() {
		defer close(serving)
		_ = srv.Serve(l)
	}()
	k.mu.Lock()
	k.server, k.serving = srv, serving
	k.mu.Unlock()
	return nil
}

// stop stops serving and drops every plugin client.
func (k *Kubelet) stop() {
	k.mu.Lock()
	srv, serving := k.server, k.serving
	k.server, k.serving = nil, nil // Register refuses from now on
	k.mu.Unlock()
	if srv != nil {
		srv.Stop()
		<-serving
	}
	k.mu.Lock()
	plugins := k.plugins
	k.plugins = map[string]*plugin{}
	k.notifyLocked()
	k.mu.Unlock()
	for _, p := range plugins {
		p.close()
	}
}

// Restart stops the fake kubelet, removes kubelet.sock and, like a real
// kubelet starting, every other socket in the folder, then serves again.
// Plugins must notice and register again.
func (k *Kubelet) Restart(tb testing.TB) {
	tb.Helper()
	k.stop()
	entries, err := os.ReadDir(k.dir)
	if err != nil {
		tb.Fatalf("fake kubelet reading %s: %v", k.dir, err)
	}
	for _, e := range entries {
		if e.Type()&fs.ModeSocket == 0 {
			continue
		}
		path := filepath.Join(k.dir, e.Name())
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			tb.Fatalf("fake kubelet removing %s: %v", path, err)
		}
	}
	if err := k.start(); err != nil {
		tb.Fatal(err)
	}
}

// Registrations counts the registrations of resource, restarts included.
func (k *Kubelet) Registrations(resource string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.registrations[resource]
}

// WaitForRegistration waits until resource has registered since the fake
// kubelet last (re)started, and returns the request.
func (k *Kubelet) WaitForRegistration(tb testing.TB, resource string) *pluginapi.RegisterRequest {
	tb.Helper()
	var req *pluginapi.RegisterRequest
	k.waitFor(tb, "registration of "+resource, func() bool {
		if p := k.plugins[resource]; p != nil {
			req = p.req
		}
		return req != nil
	})
	return req
}

// Devices returns the latest list that resource's ListAndWatch stream sent,
// or nil when it sent none yet.
func (k *Kubelet) Devices(tb testing.TB, resource string) []*pluginapi.Device {
	tb.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if p := k.plugins[resource]; p != nil {
		return p.devices
	}
	return nil
}

// WaitForDevices waits until resource's ListAndWatch stream has sent a list
// for which cond is true, and returns it.
func (k *Kubelet) WaitForDevices(tb testing.TB, resource string, cond func([]*pluginapi.Device) bool) []*pluginapi.Device {
	tb.Helper()
	var devices []*pluginapi.Device
	k.waitFor(tb, "devices of "+resource, func() bool {
		p := k.plugins[resource]
		if p == nil || !p.listed {
			return false
		}
		devices = p.devices
		return cond(devices)
	})
	return devices
}

// Client returns the DevicePlugin client of resource's registered plugin.
func (k *Kubelet) Client(tb testing.TB, resource string) pluginapi.DevicePluginClient {
	tb.Helper()
	k.WaitForRegistration(tb, resource)
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.plugins[resource].client
}

// Allocate asks resource's plugin to allocate one set of ids per container.
func (k *Kubelet) Allocate(tb testing.TB, resource string, containers ...[]string) (*pluginapi.AllocateResponse, error) {
	tb.Helper()
	req := &pluginapi.AllocateRequest{}
	for _, ids := range containers {
		req.ContainerRequests = append(req.ContainerRequests, &pluginapi.ContainerAllocateRequest{DevicesIds: ids})
	}
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	return k.Client(tb, resource).Allocate(ctx, req)
}

// GetPreferredAllocation asks resource's plugin for size ids out of
// available, including mustInclude, for one container.
func (k *Kubelet) GetPreferredAllocation(tb testing.TB, resource string, available, mustInclude []string, size int) ([]string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	resp, err := k.Client(tb, resource).GetPreferredAllocation(ctx, &pluginapi.PreferredAllocationRequest{
		ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{
			AvailableDeviceIDs: available, MustIncludeDeviceIDs: mustInclude, AllocationSize: int32(size),
		}},
	})
	if err != nil {
		return nil, err
	}
	if n := len(resp.GetContainerResponses()); n != 1 {
		return nil, fmt.Errorf("preferred allocation of %s: %d container responses for 1 request", resource, n)
	}
	return resp.GetContainerResponses()[0].GetDeviceIDs(), nil
}

// waitFor polls cond, under k.mu, until it holds or WaitTimeout passes.
func (k *Kubelet) waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(WaitTimeout)
	defer deadline.Stop()
	for {
		k.mu.Lock()
		ok, changed := cond(), k.changed
		k.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("fake kubelet: no %s within %s", what, WaitTimeout)
		}
	}
}

func (k *Kubelet) notifyLocked() {
	close(k.changed)
	k.changed = make(chan struct{})
}

// registration is the fake kubelet's Registration service.
type registration struct {
	pluginapi.UnimplementedRegistrationServer
	k *Kubelet
}

func (r registration) Register(_ context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k := r.k
	if req.GetVersion() != pluginapi.Version {
		return nil, status.Errorf(codes.InvalidArgument, "fake kubelet: %s registered with API version %q, want %q",
			req.GetResourceName(), req.GetVersion(), pluginapi.Version)
	}
	endpoint := filepath.Join(k.dir, req.GetEndpoint())
	conn, err := grpc.NewClient("unix://"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("fake kubelet dialing %s for %s: %w", endpoint, req.GetResourceName(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &plugin{
		req: req, conn: conn, client: pluginapi.NewDevicePluginClient(conn),
		cancel: cancel, done: make(chan struct{}),
	}
	k.mu.Lock()
	if k.server == nil {
		k.mu.Unlock()
		cancel()
		_ = conn.Close()
		return nil, status.Error(codes.Unavailable, "fake kubelet is stopping")
	}
	old := k.plugins[req.GetResourceName()]
	k.plugins[req.GetResourceName()] = p
	k.registrations[req.GetResourceName()]++
	k.notifyLocked()
	k.mu.Unlock()
	if old != nil {
		old.close()
	}
	// Like the kubelet, follow the plugin asynchronously: the plugin may
	// serve its socket only once Register returned.
	go k.listAndWatch(ctx, p)
	return &pluginapi.Empty{}, nil
}

func (k *Kubelet) listAndWatch(ctx context.Context, p *plugin) {
	defer close(p.done)
	stream, err := p.client.ListAndWatch(ctx, &pluginapi.Empty{}, grpc.WaitForReady(true))
	if err != nil {
		return // cancelled: the plugin registered again or the kubelet stopped
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return // the plugin went away; it must register again
		}
		k.mu.Lock()
		p.listed, p.devices = true, resp.GetDevices()
		k.notifyLocked()
		k.mu.Unlock()
	}
}

func (p *plugin) close() {
	p.cancel()
	<-p.done
	_ = p.conn.Close()
}
