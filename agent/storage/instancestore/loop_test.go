package instancestore

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/sandbox/loopdev"
	"github.com/autonode/autonode/sandbox/privileged"
)

// newLoop attaches a loop device over a sparse file of size bytes and
// detaches it when the test ends, after the mounts under it are gone.
func newLoop(t *testing.T, size int64) string {
	t.Helper()
	dev := loopdev.New(t, size).Path
	t.Cleanup(func() {
		// btrfs remembers the devices it scanned; forget this one so
		// that the next user of the loop number starts clean.
		_ = exec.Command("btrfs", "device", "scan", "--forget", dev).Run()
	})
	return dev
}

// unmountUnder detaches every mount at or below root, deepest first: a
// simulated reboot, and each privileged test's cleanup.
func unmountUnder(t *testing.T, root string) {
	t.Helper()
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(mounts, func(a, b *mountinfo.Info) int {
		if d := strings.Count(b.Mountpoint, "/") - strings.Count(a.Mountpoint, "/"); d != 0 {
			return d
		}
		return b.ID - a.ID
	})
	for _, m := range mounts {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmounting %s: %v", m.Mountpoint, err)
		}
	}
}

// privRoot gates a privileged test and returns a fresh folder for its
// mounts, unmounted when the test ends.
func privRoot(t *testing.T, tools ...string) string {
	t.Helper()
	privileged.Require(t, privileged.Root, privileged.Loop)
	for _, tool := range append([]string{"blkid", "wipefs"}, tools...) {
		if _, err := (ExecRunner{}).lookPath(tool); err != nil {
			privileged.Missing(t, tool, err)
		}
	}
	root := t.TempDir()
	t.Cleanup(func() { unmountUnder(t, root) })
	return root
}

// recorder runs the real tools and records their calls.
type recorder struct {
	Runner
	mu    sync.Mutex
	calls [][]string
	// intercept, when set, answers a call instead of the real tool
	// (handled true).
	intercept func(name string, args []string) (out []byte, handled bool, err error)
}

func (r *recorder) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	r.mu.Lock()
	r.calls = append(r.calls, append([]string{name}, args...))
	r.mu.Unlock()
	if r.intercept != nil {
		if out, handled, err := r.intercept(name, args); handled {
			return out, err
		}
	}
	return r.Runner.Run(ctx, name, args...)
}

// take returns the calls so far, without blkid's, and forgets them.
func (r *recorder) take() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]string
	for _, c := range r.calls {
		if c[0] != "blkid" {
			out = append(out, c)
		}
	}
	r.calls = nil
	return out
}

// testOptions configures setup for a test: mount point, binds, state file
// and kubelet marker all under root; no kubelet process check, since other
// tests on this machine may run a kubelet.
func testOptions(t *testing.T, root, fs string, devices ...string) (Options, *recorder) {
	rec := &recorder{Runner: ExecRunner{}}
	return Options{
		Devices:    devices,
		Filesystem: fs,
		MountPoint: filepath.Join(root, "mnt", ".ephemeral"),
		Binds: []Bind{
			{Path: filepath.Join(root, "var/lib/containerd")},
			{Path: filepath.Join(root, "var/lib/kubelet"), Shared: true},
			{Path: filepath.Join(root, "var/log/pods")},
		},
		StatePath:      filepath.Join(root, "var/lib/autonode/instance-store.json"),
		KubeletMarkers: []string{filepath.Join(root, "run/kubelet-started")},
		Runner:         rec,
		Logger:         slog.New(slog.NewTextHandler(t.Output(), nil)),
	}, rec
}

func blkidOf(t *testing.T, dev string) Signature {
	t.Helper()
	sig, err := probe(context.Background(), ExecRunner{}, dev)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func mkfsCalls(calls [][]string) [][]string {
	var out [][]string
	for _, c := range calls {
		if strings.HasPrefix(c[0], "mkfs.") || c[0] == "wipefs" || c[0] == "mdadm" {
			out = append(out, c)
		}
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mountedAt(t *testing.T, p string) bool {
	t.Helper()
	ok, err := mountinfo.Mounted(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return ok
}
