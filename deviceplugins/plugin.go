package deviceplugins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/autonode/autonode/agent/backoff"
	"github.com/autonode/autonode/health"
)

// registerTimeout bounds one Register call; the kubelet answers at once or
// not at all.
const registerTimeout = 10 * time.Second

// Options tunes a Plugin. Zero values take the defaults.
type Options struct {
	// PluginDir is the kubelet's device-plugin folder, where the Plugin puts
	// its socket. Default is /var/lib/kubelet/device-plugins/.
	PluginDir string
	// KubeletSocket is the kubelet's Registration socket. Default is
	// PluginDir + "kubelet.sock".
	KubeletSocket string
	// Health receives a signal each time a device turns unhealthy or
	// recovers; nil reports none.
	Health health.Reporter
	// Logger receives the Plugin's logs. Default discards them.
	Logger *slog.Logger
	// InitialBackoff is the wait before the first registration retry.
	// Default is 1s.
	InitialBackoff time.Duration
	// MaxBackoff caps the wait between registration retries. Default is 30s.
	MaxBackoff time.Duration
}

// Plugin serves one Backend's resource to the kubelet. It implements the
// agent's subsystem.Subsystem: build it with NewPlugin and hand it to the
// supervisor, which calls Run and polls Ready.
type Plugin struct {
	backend   Backend
	preferred PreferredAllocator // nil when the backend has no topology
	resource  string
	socket    string // absolute path of the Plugin's own socket
	opts      Options
	log       *slog.Logger

	mu         sync.Mutex
	registered bool
	reported   bool              // the backend reported a list in this run
	devices    []Device          // latest list, in the backend's order
	byID       map[string]Device // index of devices
	// unhealthy remembers which devices were last seen unhealthy, across
	// runs, so that a restart does not report the same failure again.
	unhealthy map[string]bool
	// changed is closed and replaced on every new device list, to wake every
	// ListAndWatch stream at once.
	changed chan struct{}
}

// NewPlugin builds a Plugin for backend. Nothing happens until Run.
func NewPlugin(backend Backend, opts Options) *Plugin {
	if opts.PluginDir == "" {
		opts.PluginDir = pluginapi.DevicePluginPath
	}
	if opts.KubeletSocket == "" {
		opts.KubeletSocket = filepath.Join(opts.PluginDir, "kubelet.sock")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	resource := backend.ResourceName()
	p := &Plugin{
		backend:   backend,
		resource:  resource,
		socket:    filepath.Join(opts.PluginDir, SocketName(resource)),
		opts:      opts,
		log:       opts.Logger.With("resource", resource),
		unhealthy: map[string]bool{},
		changed:   make(chan struct{}),
	}
	p.preferred, _ = backend.(PreferredAllocator)
	return p
}

// SocketName is the file name of the socket that serves resource, e.g.
// autonode-nvidia.com_gpu.sock for nvidia.com/gpu. It is also the Endpoint
// the Plugin registers.
func SocketName(resource string) string {
	return "autonode-" + strings.ReplaceAll(resource, "/", "_") + ".sock"
}

// Name names the subsystem after its resource.
func (p *Plugin) Name() string { return "deviceplugin:" + p.resource }

// SocketPath is the absolute path of the Plugin's own socket.
func (p *Plugin) SocketPath() string { return p.socket }

// Ready returns nil once the kubelet has accepted the registration and the
// backend has reported its devices.
func (p *Plugin) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case !p.registered:
		return fmt.Errorf("%s: not registered with the kubelet at %s", p.resource, p.opts.KubeletSocket)
	case !p.reported:
		return fmt.Errorf("%s: backend has not reported its devices yet", p.resource)
	}
	return nil
}

// Run serves the resource until ctx ends, then stops the server, removes
// the socket and returns nil. It registers with the kubelet and registers
// again, without limit, whenever the kubelet restarts (kubelet.sock is
// created again) or removes the Plugin's socket. An error from the backend
// ends Run with that error.
func (p *Plugin) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.resetRun()
	// Runs last, after every goroutine ended: a stopped Plugin is not ready.
	defer p.setRegistered(false)

	if err := os.MkdirAll(p.opts.PluginDir, 0o750); err != nil {
		return fmt.Errorf("creating device-plugin folder %s: %w", p.opts.PluginDir, err)
	}
	// Remove a stale socket before watching, so that its removal is not
	// taken for the kubelet's.
	if err := os.Remove(p.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", p.socket, err)
	}
	// Watch before serving, so that no kubelet restart goes unseen.
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s for %s: %w", p.opts.PluginDir, p.resource, err)
	}
	defer func() { _ = watcher.Close() }()
	for _, dir := range watchedDirs(p.opts.PluginDir, p.opts.KubeletSocket) {
		if err := watcher.Add(dir); err != nil {
			return fmt.Errorf("watching %s for %s: %w", dir, p.resource, err)
		}
	}

	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel: no goroutine outlives Run
	defer cancel()

	backendErr := make(chan error, 1)
	wg.Go(func() { backendErr <- p.backend.Run(ctx, p.updater(ctx)) })

	srv, err := p.serve(ctx)
	if err != nil {
		return err
	}
	defer func() { p.stopServer(srv) }()

	register := make(chan struct{}, 1)
	wg.Go(func() { p.registerLoop(ctx, register) })
	trigger(register)

	kubeletSocket := filepath.Clean(p.opts.KubeletSocket)
	for {
		select {
		case <-ctx.Done():
			p.log.Info("device plugin stopping")
			return nil
		case err := <-backendErr:
			if err != nil {
				return fmt.Errorf("device backend for %s: %w", p.resource, err)
			}
			// The list is final; keep serving it.
			backendErr = nil
		case err, ok := <-watcher.Errors:
			if !ok {
				return fmt.Errorf("watching %s for %s: watcher closed", p.opts.PluginDir, p.resource)
			}
			p.log.Warn("device-plugin folder watch error", "err", err)
		case ev, ok := <-watcher.Events:
			if !ok {
				return fmt.Errorf("watching %s for %s: watcher closed", p.opts.PluginDir, p.resource)
			}
			name := filepath.Clean(ev.Name)
			switch {
			case name == kubeletSocket && ev.Has(fsnotify.Create):
				p.log.Info("kubelet socket created; registering again", "socket", kubeletSocket)
				p.setRegistered(false)
				trigger(register)
			case name == kubeletSocket && ev.Has(fsnotify.Remove|fsnotify.Rename):
				p.log.Info("kubelet socket removed; waiting for the kubelet", "socket", kubeletSocket)
				p.setRegistered(false)
			case name == p.socket && ev.Has(fsnotify.Remove|fsnotify.Rename):
				// The kubelet wipes the folder when it starts: serve on a new
				// socket and tell the new kubelet about it.
				p.log.Info("plugin socket removed; serving again", "socket", p.socket)
				p.setRegistered(false)
				p.stopServer(srv)
				if srv, err = p.serve(ctx); err != nil {
					return err
				}
				trigger(register)
			}
		}
	}
}

// watchedDirs lists the folders to watch: the plugin folder and, when the
// kubelet socket lives elsewhere, its folder too.
func watchedDirs(pluginDir, kubeletSocket string) []string {
	dirs := []string{filepath.Clean(pluginDir)}
	if d := filepath.Dir(filepath.Clean(kubeletSocket)); d != dirs[0] {
		dirs = append(dirs, d)
	}
	return dirs
}

// trigger asks the registration loop for a registration without blocking;
// requests that arrive while one is pending fold into it.
func trigger(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (p *Plugin) resetRun() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.registered = false
	p.reported = false
	p.devices = nil
	p.byID = nil
}

func (p *Plugin) setRegistered(v bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.registered = v
}

// serve listens on the Plugin's socket and serves the DevicePlugin service
// on it until stopServer.
func (p *Plugin) serve(ctx context.Context) (*grpc.Server, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "unix", p.socket)
	if err != nil {
		return nil, fmt.Errorf("listening on %s for %s: %w", p.socket, p.resource, err)
	}
	// The socket file is removed by stopServer, never by Close: a server
	// stopped after the kubelet wiped the folder must not unlink a successor.
	if ul, ok := l.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, &service{p: p, done: ctx.Done()})
	go func() {
		if err := srv.Serve(l); err != nil {
			p.log.Error("device-plugin server failed", "socket", p.socket, "err", err)
		}
	}()
	p.log.Info("device plugin serving", "socket", p.socket)
	return srv, nil
}

// stopServer stops srv, ending every stream, and removes the socket.
func (p *Plugin) stopServer(srv *grpc.Server) {
	if srv == nil {
		return
	}
	srv.Stop()
	if err := os.Remove(p.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		p.log.Warn("removing plugin socket", "socket", p.socket, "err", err)
	}
}

// registerLoop registers with the kubelet each time it is triggered,
// retrying with backoff until it succeeds, a new trigger arrives (which
// retries at once) or ctx ends.
func (p *Plugin) registerLoop(ctx context.Context, register <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-register:
		}
		delays := backoff.New(p.opts.InitialBackoff, p.opts.MaxBackoff)
		for {
			// This attempt serves every request made before it starts;
			// only later ones need another.
			select {
			case <-register:
			default:
			}
			err := p.register(ctx)
			if err == nil {
				p.setRegistered(true)
				p.log.Info("registered with the kubelet", "socket", p.opts.KubeletSocket)
				break
			}
			if ctx.Err() != nil {
				return
			}
			delay := delays.Step()
			p.log.Warn("registering with the kubelet failed; retrying", "err", err, "backoff", delay)
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-register:
				// The kubelet or our socket changed: retry now.
				delays = backoff.New(p.opts.InitialBackoff, p.opts.MaxBackoff)
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// register makes one Register call to the kubelet.
func (p *Plugin) register(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+p.opts.KubeletSocket,
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connecting to kubelet at %s: %w", p.opts.KubeletSocket, err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     filepath.Base(p.socket),
		ResourceName: p.resource,
		Options:      p.pluginOptions(),
	})
	if err != nil {
		return fmt.Errorf("registering %s with kubelet at %s: %w", p.resource, p.opts.KubeletSocket, err)
	}
	return nil
}

func (p *Plugin) pluginOptions() *pluginapi.DevicePluginOptions {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: p.preferred != nil}
}

// updater returns the update callback for one run of the backend. Calls
// after the run ended are dropped, so a stray goroutine of an old run cannot
// overwrite the devices of a new one.
func (p *Plugin) updater(ctx context.Context) func([]Device) {
	return func(devices []Device) {
		if ctx.Err() != nil {
			return
		}
		for _, s := range p.update(devices) {
			if p.opts.Health != nil {
				p.opts.Health.Report(ctx, s)
			}
		}
	}
}

// update stores a new device list, wakes the ListAndWatch streams when it
// differs from the last, and returns the health signals it implies.
func (p *Plugin) update(devices []Device) []health.Signal {
	devices = slices.Clone(devices)
	p.mu.Lock()
	defer p.mu.Unlock()

	var signals []health.Signal
	byID := make(map[string]Device, len(devices))
	for _, d := range devices {
		byID[d.ID] = d
		switch {
		case !d.Healthy && !p.unhealthy[d.ID]:
			p.log.Warn("device unhealthy", "device", d.ID, "reason", d.Reason)
			signals = append(signals, health.Signal{
				Source: p.resource, Condition: health.AcceleratedHardwareReady,
				Reason: "DeviceUnhealthy", Severity: health.Warning,
				Message: fmt.Sprintf("%s device %s is unhealthy: %s", p.resource, d.ID, orUnknown(d.Reason)),
			})
		case d.Healthy && p.unhealthy[d.ID]:
			p.log.Info("device recovered", "device", d.ID)
			signals = append(signals, health.Signal{
				Source: p.resource, Condition: health.AcceleratedHardwareReady,
				Reason: "DeviceRecovered", Severity: health.Info,
				Message: fmt.Sprintf("%s device %s is healthy again", p.resource, d.ID),
			})
		}
	}
	// Forget devices that are gone, so the map cannot grow without bound.
	unhealthy := map[string]bool{}
	for _, d := range devices {
		if !d.Healthy {
			unhealthy[d.ID] = true
		}
	}
	p.unhealthy = unhealthy

	if p.reported && slices.Equal(p.devices, devices) {
		return signals
	}
	p.devices, p.byID, p.reported = devices, byID, true
	close(p.changed)
	p.changed = make(chan struct{})
	return signals
}

func orUnknown(reason string) string {
	if reason == "" {
		return "no reason given"
	}
	return reason
}

// snapshot returns the latest list as the kubelet sees it (nil before the
// backend reported), and a channel that is closed on the next change.
func (p *Plugin) snapshot() (list []*pluginapi.Device, reported bool, changed <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	list = make([]*pluginapi.Device, 0, len(p.devices))
	for _, d := range p.devices {
		list = append(list, toAPI(d))
	}
	return list, p.reported, p.changed
}

func toAPI(d Device) *pluginapi.Device {
	out := &pluginapi.Device{ID: d.ID, Health: pluginapi.Healthy}
	if !d.Healthy {
		out.Health = pluginapi.Unhealthy
	}
	if d.NUMANode >= 0 {
		out.Topology = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(d.NUMANode)}}}
	}
	return out
}

// checkAllocatable returns an InvalidArgument error unless every id is a
// healthy device the backend reported.
func (p *Plugin) checkAllocatable(ids []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		d, ok := p.byID[id]
		if !ok {
			return status.Errorf(codes.InvalidArgument, "%s device %q: unknown to the device plugin", p.resource, id)
		}
		if !d.Healthy {
			return status.Errorf(codes.InvalidArgument, "%s device %q: unhealthy: %s", p.resource, id, orUnknown(d.Reason))
		}
	}
	return nil
}

// service is the DevicePlugin gRPC service; it is a type of its own so that
// the Plugin's exported methods stay those of a subsystem.
type service struct {
	pluginapi.UnimplementedDevicePluginServer
	p    *Plugin
	done <-chan struct{} // closed when the Plugin's Run ends
}

func (s *service) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return s.p.pluginOptions(), nil
}

// ListAndWatch sends the full list now and after every change, until the
// kubelet hangs up or the Plugin stops.
func (s *service) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	for {
		list, reported, changed := s.p.snapshot()
		if reported {
			if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: list}); err != nil {
				return fmt.Errorf("sending %s devices: %w", s.p.resource, err)
			}
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-s.done:
			return nil
		case <-changed:
		}
	}
}

func (s *service) Allocate(ctx context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	// Check every container first, so a bad id allocates nothing.
	for _, creq := range req.GetContainerRequests() {
		if err := s.p.checkAllocatable(creq.GetDevicesIds()); err != nil {
			return nil, err
		}
	}
	resp := &pluginapi.AllocateResponse{}
	for _, creq := range req.GetContainerRequests() {
		ids := creq.GetDevicesIds()
		cresp, err := s.p.backend.Allocate(ctx, ids)
		if err != nil {
			s.p.log.Error("allocate failed", "devices", ids, "err", err)
			return nil, status.Errorf(codes.Internal, "allocating %s devices %v: %v", s.p.resource, ids, err)
		}
		if cresp == nil {
			cresp = &pluginapi.ContainerAllocateResponse{}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, cresp)
	}
	return resp, nil
}

func (s *service) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, creq := range req.GetContainerRequests() {
		available, must, size := creq.GetAvailableDeviceIDs(), creq.GetMustIncludeDeviceIDs(), int(creq.GetAllocationSize())
		var ids []string
		if s.p.preferred != nil {
			var err error
			if ids, err = s.p.preferred.PreferredAllocation(available, must, size); err != nil {
				return nil, status.Errorf(codes.Internal, "preferred allocation of %d %s devices: %v", size, s.p.resource, err)
			}
		} else {
			ids = firstN(available, must, size)
		}
		resp.ContainerResponses = append(resp.ContainerResponses,
			&pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

// firstN picks size ids, mustInclude first, then available in order, with
// no id twice: the choice when the backend has no topology to respect.
func firstN(available, mustInclude []string, size int) []string {
	out := make([]string, 0, max(size, 0))
	for _, id := range slices.Concat(mustInclude, available) {
		if len(out) >= size {
			break
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func (s *service) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
