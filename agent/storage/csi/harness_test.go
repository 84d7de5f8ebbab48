package csi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/autonode/autonode/sandbox/loopdev"
)

// fixtureLocator maps volume ids to devices, standing in for the NVMe
// Identify lookup.
type fixtureLocator struct {
	mu      sync.Mutex
	devices map[string]string
}

func newFixtureLocator() *fixtureLocator { return &fixtureLocator{devices: map[string]string{}} }

func (l *fixtureLocator) add(volumeID, device string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.devices[volumeID] = device
}

func (l *fixtureLocator) remove(volumeID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.devices, volumeID)
}

func (l *fixtureLocator) Locate(_ context.Context, volumeID string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	dev, ok := l.devices[volumeID]
	if !ok {
		return "", fmt.Errorf("no NVMe device with serial of %s: %w", volumeID, fs.ErrNotExist)
	}
	return dev, nil
}

// harness is a running Driver and clients connected to its CSI socket.
type harness struct {
	d       *Driver
	locator *fixtureLocator
	node    csi.NodeClient
	id      csi.IdentityClient
}

// shortTempDir is a temporary folder with a short path: unix socket paths
// are limited to 108 bytes.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "csi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// startDriver runs a Driver with sockets in a folder of the test's own and
// stops it when the test ends.
func startDriver(t *testing.T, opts Options) *harness {
	t.Helper()
	dir := shortTempDir(t)
	if opts.Endpoint == "" {
		opts.Endpoint = filepath.Join(dir, "plugins", "csi.sock")
	}
	if opts.RegistrationDir == "" {
		opts.RegistrationDir = filepath.Join(dir, "registry")
	}
	if opts.NodeID == "" {
		opts.NodeID = "i-0123456789abcdef0"
	}
	if opts.Zone == "" {
		opts.Zone = "us-west-2a"
	}
	h := &harness{locator: newFixtureLocator()}
	if opts.Locator == nil {
		opts.Locator = h.locator
	}
	opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.d = d
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("driver Run: %v", err)
		}
		for _, s := range []string{d.Endpoint(), d.RegistrationSocket()} {
			if _, err := os.Stat(s); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("socket %s left behind after Run (stat: %v)", s, err)
			}
		}
	})
	waitServing(t, d)
	conn := dial(t, d.Endpoint())
	h.node = csi.NewNodeClient(conn)
	h.id = csi.NewIdentityClient(conn)
	return h
}

func waitServing(t *testing.T, d *Driver) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d.mu.Lock()
		serving := d.serving
		d.mu.Unlock()
		if serving {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("driver did not start serving")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dial(t *testing.T, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// wantCode fails the test unless err carries code.
func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("got code %s (%v), want %s", got, err, code)
	}
}

func mountCap(fsType string, mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType, MountFlags: flags}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

const rwo = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER

// attachLoopFile attaches an existing image, standing in for an attached
// EBS volume, until the test ends. Register mount cleanups after it, so
// that they run first.
func attachLoopFile(t *testing.T, file string) *loopdev.Device {
	t.Helper()
	d, err := loopdev.Attach(file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Detach(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// grow enlarges the backing file and tells the loop device, as a volume
// modification grows an attached EBS volume.
func grow(t *testing.T, d *loopdev.Device, size int64) {
	t.Helper()
	if err := os.Truncate(d.File, size); err != nil {
		t.Fatal(err)
	}
	if err := d.SetCapacity(); err != nil {
		t.Fatal(err)
	}
}

// unmountOnCleanup unmounts whatever the test left mounted at paths.
func unmountOnCleanup(t *testing.T, paths ...string) {
	t.Helper()
	t.Cleanup(func() {
		for _, p := range paths {
			for range 16 {
				if err := unix.Unmount(p, 0); err != nil {
					break
				}
				t.Logf("cleanup unmounted %s", p)
			}
		}
	})
}

func mkfs(t *testing.T, fsType, device string) {
	t.Helper()
	args := []string{device}
	if fsType == "xfs" {
		args = []string{"-f", device}
	}
	if out, err := exec.Command("mkfs."+fsType, args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.%s %s: %v: %s", fsType, device, err, out)
	}
}

func blkidType(t *testing.T, device string) string {
	t.Helper()
	out, err := exec.Command("blkid", "-p", "-s", "TYPE", "-s", "PTTYPE", "-o", "value", device).Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 2 {
		return "" // nothing found
	}
	if err != nil {
		t.Fatalf("blkid %s: %v", device, err)
	}
	return strings.TrimSpace(string(out))
}

func limit(n int64) func(context.Context) (int64, error) {
	return func(context.Context) (int64, error) { return n, nil }
}
