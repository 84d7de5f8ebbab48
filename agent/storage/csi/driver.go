// Package csi is the node half of an EBS CSI driver: the CSI Identity and
// Node services over gRPC on a unix socket, and the kubelet's
// plugin-registration socket that announces them.
//
// A volume is found by its EBS volume id through a VolumeLocator (NVMe
// Identify plus the serial check), formatted only when blank, staged with a
// mount of the device, and published with a bind mount of the staging path
// (or, for raw block volumes, of the device node itself). The controller
// half, which creates volumes and attaches them through EC2, is not here:
// see docs/storage.md, "CSI node service".
package csi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/validation"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	"k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"
)

// DefaultDriverName is the name of the upstream aws-ebs-csi-driver, so that
// existing EBS StorageClasses and PersistentVolumes, and the upstream
// controller that attaches their volumes, work unchanged.
const DefaultDriverName = "ebs.csi.aws.com"

// Topology keys reported by NodeGetInfo. The kubelet labels the Node with
// them and kube-scheduler matches PersistentVolumes' node affinity on them.
const (
	// ZoneTopologyKey is the well-known zone label, which the upstream
	// controller puts on new volumes.
	ZoneTopologyKey = "topology.kubernetes.io/zone"
	// legacyEBSZoneTopologyKey is the zone key that volumes created by older
	// upstream controllers carry; reported only under DefaultDriverName.
	legacyEBSZoneTopologyKey = "topology.ebs.csi.aws.com/zone"
)

// stopTimeout bounds a graceful stop of the gRPC servers: a format or mount
// in progress gets this long before its connection is cut.
const stopTimeout = 10 * time.Second

// VolumeLocator finds the block device of an EBS volume attached to this
// node. Locate checks that the device really is that volume (the NVMe
// Identify serial) before returning its path; an error wrapping
// fs.ErrNotExist means the volume is not attached here.
type VolumeLocator interface {
	Locate(ctx context.Context, volumeID string) (devicePath string, err error)
}

// Options configures a Driver. NodeID, Zone and Locator are required.
type Options struct {
	// DriverName is the CSI driver name, as PersistentVolumes and the
	// CSIDriver object spell it. Default is DefaultDriverName.
	DriverName string
	// Version is reported as the plugin's vendor version.
	Version string
	// NodeID is the EC2 instance id, which the controller attaches to.
	NodeID string
	// Zone is the instance's availability zone, the volumes' topology.
	Zone string
	// VolumeLimit returns how many EBS volumes this instance can attach
	// beside its root volume; the kubelet publishes it in CSINode, where
	// kube-scheduler reads it. Run calls it once, before the kubelet can see
	// the driver, and fails (to be retried) when it fails. Nil reports 0,
	// which the CSI spec makes "no limit".
	VolumeLimit func(ctx context.Context) (int64, error)
	// Locator finds a volume's device.
	Locator VolumeLocator
	// Endpoint is the CSI socket. Default is
	// /var/lib/kubelet/plugins/<DriverName>/csi.sock.
	Endpoint string
	// RegistrationDir is the kubelet's plugin-registration folder, where the
	// registration socket <DriverName>-reg.sock goes. Default is
	// /var/lib/kubelet/plugins_registry.
	RegistrationDir string
	// Logger receives the driver's logs. Default discards them.
	Logger *slog.Logger
}

// Driver serves the CSI Identity and Node services and registers them with
// the kubelet. It implements the agent's subsystem.Subsystem.
type Driver struct {
	opts     Options
	log      *slog.Logger
	mounter  *mount.SafeFormatAndMount
	resizer  *mount.ResizeFs
	inflight inflight
	regSock  string

	mu         sync.Mutex
	serving    bool
	maxVolumes int64
	registered error // nil once the kubelet accepted the registration
}

// New checks opts and builds a Driver. Nothing is served until Run.
func New(opts Options) (*Driver, error) {
	if opts.DriverName == "" {
		opts.DriverName = DefaultDriverName
	}
	if opts.Endpoint == "" {
		opts.Endpoint = filepath.Join("/var/lib/kubelet/plugins", opts.DriverName, "csi.sock")
	}
	if opts.RegistrationDir == "" {
		opts.RegistrationDir = "/var/lib/kubelet/plugins_registry"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case !validDriverName(opts.DriverName):
		return nil, fmt.Errorf("csi driver name %q: must be at most 63 characters of letters, digits, '-' and '.', beginning and ending with a letter or digit", opts.DriverName)
	case opts.NodeID == "":
		return nil, errors.New("csi driver: the node id (instance id) is required")
	case opts.Zone == "":
		return nil, errors.New("csi driver: the availability zone is required")
	case opts.Locator == nil:
		return nil, errors.New("csi driver: a volume locator is required")
	case !filepath.IsAbs(opts.Endpoint) || !filepath.IsAbs(opts.RegistrationDir):
		return nil, fmt.Errorf("csi driver: socket paths %q and %q must be absolute", opts.Endpoint, opts.RegistrationDir)
	}
	exec := utilexec.New()
	return &Driver{
		opts:       opts,
		log:        opts.Logger.With("driver", opts.DriverName),
		mounter:    &mount.SafeFormatAndMount{Interface: mount.NewWithoutSystemd(""), Exec: exec},
		resizer:    mount.NewResizeFs(exec),
		inflight:   inflight{busy: map[string]bool{}},
		regSock:    filepath.Join(opts.RegistrationDir, opts.DriverName+"-reg.sock"),
		registered: errors.New("not started"),
	}, nil
}

// validDriverName applies the CSI spec's rule for plugin names (at most 63
// characters; letters, digits, '-' and '.', beginning and ending with a
// letter or digit) as the apiserver checks the driver names of CSINode,
// which the kubelet writes on registration, and of PersistentVolumes: a
// DNS-1123 subdomain once lower-cased.
func validDriverName(name string) bool {
	return len(name) <= 63 && len(validation.IsDNS1123Subdomain(strings.ToLower(name))) == 0
}

// Name names the subsystem.
func (d *Driver) Name() string { return "csi-node" }

// Endpoint is the CSI socket's path.
func (d *Driver) Endpoint() string { return d.opts.Endpoint }

// RegistrationSocket is the path of the socket the kubelet registers from.
func (d *Driver) RegistrationSocket() string { return d.regSock }

// Ready returns nil once both sockets serve, the tools the driver needs are
// installed and the kubelet has accepted the registration.
func (d *Driver) Ready() error {
	d.mu.Lock()
	serving, registered := d.serving, d.registered
	d.mu.Unlock()
	if !serving {
		return fmt.Errorf("csi driver %s: not serving on %s", d.opts.DriverName, d.opts.Endpoint)
	}
	if err := checkTools(coreTools()...); err != nil {
		return fmt.Errorf("csi driver %s: %w", d.opts.DriverName, err)
	}
	if registered != nil {
		return fmt.Errorf("csi driver %s: not registered with the kubelet through %s: %w", d.opts.DriverName, d.regSock, registered)
	}
	return nil
}

func (d *Driver) volumeLimit() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.maxVolumes
}

func (d *Driver) setRegistered(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.registered = err
}

// Run serves the CSI socket and the registration socket until ctx ends,
// then stops both servers and removes the sockets. The kubelet finds the
// registration socket on its own, also after it restarts.
func (d *Driver) Run(ctx context.Context) error {
	d.setRegistered(errors.New("waiting for the kubelet"))
	if d.opts.VolumeLimit != nil {
		n, err := d.opts.VolumeLimit(ctx)
		if err != nil {
			return fmt.Errorf("csi driver %s: volume limit: %w", d.opts.DriverName, err)
		}
		if n < 0 {
			return fmt.Errorf("csi driver %s: volume limit %d is negative", d.opts.DriverName, n)
		}
		d.mu.Lock()
		d.maxVolumes = n
		d.mu.Unlock()
	}
	csiSrv := grpc.NewServer(grpc.UnaryInterceptor(d.logCalls))
	csi.RegisterIdentityServer(csiSrv, &identity{d: d})
	csi.RegisterNodeServer(csiSrv, &node{d: d})
	regSrv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(regSrv, &registration{d: d})

	// The CSI socket first: the kubelet calls NodeGetInfo on it as soon as
	// it sees the registration socket.
	csiL, err := listen(ctx, d.opts.Endpoint)
	if err != nil {
		return fmt.Errorf("csi driver %s: %w", d.opts.DriverName, err)
	}
	regL, err := listen(ctx, d.regSock)
	if err != nil {
		_ = csiL.Close()
		removeSocket(d.opts.Endpoint, d.log)
		return fmt.Errorf("csi driver %s: %w", d.opts.DriverName, err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, s := range []struct {
		srv *grpc.Server
		l   net.Listener
	}{{csiSrv, csiL}, {regSrv, regL}} {
		wg.Go(func() {
			if err := s.srv.Serve(s.l); err != nil {
				errs <- fmt.Errorf("serving %s: %w", s.l.Addr(), err)
			}
		})
	}
	d.mu.Lock()
	d.serving = true
	maxVolumes := d.maxVolumes
	d.mu.Unlock()
	d.log.Info("csi node service serving", "endpoint", d.opts.Endpoint, "registration", d.regSock,
		"node", d.opts.NodeID, "zone", d.opts.Zone, "maxVolumes", maxVolumes)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	d.mu.Lock()
	d.serving = false
	d.mu.Unlock()
	d.setRegistered(errors.New("stopped"))
	// The registration socket goes first, so that the kubelet stops
	// calling before the CSI socket closes.
	for _, s := range []struct {
		srv  *grpc.Server
		path string
	}{{regSrv, d.regSock}, {csiSrv, d.opts.Endpoint}} {
		stopGracefully(s.srv, stopTimeout)
		removeSocket(s.path, d.log)
	}
	wg.Wait()
	if runErr != nil {
		return fmt.Errorf("csi driver %s: %w", d.opts.DriverName, runErr)
	}
	d.log.Info("csi node service stopped")
	return nil
}

// listen creates path's folder, removes a stale socket left by an earlier
// run, and listens there. The socket is removed by removeSocket, never by
// Close.
func listen(ctx context.Context, path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("creating socket folder %s: %w", filepath.Dir(path), err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	return l, nil
}

func removeSocket(path string, log *slog.Logger) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("removing socket", "socket", path, "err", err)
	}
}

// stopGracefully lets calls in progress finish, for up to timeout.
func stopGracefully(srv *grpc.Server, timeout time.Duration) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		srv.Stop()
		<-done
	}
}

// logCalls logs every CSI call that changes something or fails, with its
// duration; the kubelet's frequent capability and stats polls stay quiet.
func (d *Driver) logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	method := filepath.Base(info.FullMethod)
	attrs := []any{"method", method, "duration", time.Since(start).Round(time.Millisecond)}
	if v, ok := req.(interface{ GetVolumeId() string }); ok && v.GetVolumeId() != "" {
		attrs = append(attrs, "volume", v.GetVolumeId())
	}
	switch {
	case err != nil:
		d.log.Warn("csi call failed", append(attrs, "code", status.Code(err).String(), "err", err)...)
	case quiet(method):
		d.log.Debug("csi call", attrs...)
	default:
		d.log.Info("csi call", attrs...)
	}
	return resp, err
}

// quiet lists the read-only calls that the kubelet repeats often.
func quiet(method string) bool {
	switch method {
	case "GetPluginInfo", "GetPluginCapabilities", "Probe", "NodeGetCapabilities", "NodeGetInfo", "NodeGetVolumeStats":
		return true
	}
	return false
}

// inflight refuses a second operation on a volume while one runs, as the
// CSI spec asks (ABORTED): the kubelet retries it later.
type inflight struct {
	mu   sync.Mutex
	busy map[string]bool
}

func (f *inflight) acquire(key string) (release func(), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.busy[key] {
		return nil, status.Errorf(codes.Aborted, "an operation on %s is already in progress", key)
	}
	f.busy[key] = true
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.busy, key)
	}, nil
}
