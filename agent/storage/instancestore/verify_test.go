package instancestore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autonode/autonode/health"
	"github.com/autonode/autonode/health/healthtest"
)

// verifyFixture is a node with two disks in an md array, described by a
// state file and a mountinfo file.
type verifyFixture struct {
	opts  Options
	disks []string
	md    string // the array's real device node
}

func newVerifyFixture(t *testing.T) *verifyFixture {
	t.Helper()
	sysfs, dev, disks := fakeDisks(t, 2)
	md := filepath.Join(dev, "md127")
	writeFile(t, md, "")
	if err := os.MkdirAll(filepath.Join(dev, "md"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../md127", filepath.Join(dev, "md", ArrayName)); err != nil {
		t.Fatal(err)
	}
	f := &verifyFixture{
		disks: disks, md: md,
		opts: Options{
			SysfsRoot: sysfs, DevRoot: dev, ProcRoot: t.TempDir(),
			StatePath:  filepath.Join(t.TempDir(), "state.json"),
			MountPoint: "/mnt/.ephemeral",
			Binds:      []Bind{{Path: "/var/lib/containerd"}, {Path: "/var/lib/kubelet", Shared: true}, {Path: "/var/log/pods"}},
		},
	}
	f.writeState(t, &State{Phase: PhaseDone, Layout: LayoutMdadm, Devices: disks, Target: filepath.Join(dev, "md", ArrayName),
		Filesystem: "xfs", MountPoint: "/mnt/.ephemeral"})
	return f
}

func (f *verifyFixture) writeState(t *testing.T, st *State) {
	t.Helper()
	if err := writeState(f.opts.StatePath, st, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func (f *verifyFixture) mountinfo(t *testing.T, lines ...string) {
	t.Helper()
	text := "30 1 259:1 / / rw,relatime shared:1 - xfs /dev/nvme0n1p1 rw\n" + strings.Join(lines, "\n") + "\n"
	writeFile(t, filepath.Join(f.opts.ProcRoot, "self", "mountinfo"), strings.ReplaceAll(text, "MD", f.md))
}

var goodMounts = []string{
	"100 30 9:127 / /mnt/.ephemeral rw,noatime shared:50 - xfs MD rw,attr2",
	"101 30 9:127 /._var_lib_containerd /var/lib/containerd rw,noatime - xfs MD rw",
	"102 30 9:127 /._var_lib_kubelet /var/lib/kubelet rw,noatime shared:51 - xfs MD rw",
	"103 30 9:127 /._var_log_pods /var/log/pods rw,noatime - xfs MD rw",
}

func replaced(i int, line string) []string {
	out := append([]string(nil), goodMounts...)
	if line == "" {
		return append(out[:i], out[i+1:]...)
	}
	out[i] = line
	return out
}

func TestVerify(t *testing.T) {
	tests := []struct {
		name   string
		mounts []string
		state  func(f *verifyFixture) *State // nil keeps the good one
		noFile bool                          // remove the state file
		want   string                        // "" means it passes
	}{
		{name: "all in place", mounts: goodMounts},
		{name: "a bind stacked over ours is what counts", mounts: append(goodMounts, "104 103 0:40 / /var/log/pods rw - tmpfs tmpfs rw"),
			want: "/var/log/pods is a mount of tmpfs"},
		{name: "no state file", mounts: goodMounts, noFile: true, want: "setup has not run"},
		{name: "interrupted", mounts: goodMounts, state: func(f *verifyFixture) *State {
			return &State{Phase: PhaseFormatting, Devices: f.disks}
		}, want: "stopped while formatting"},
		{name: "disks changed", mounts: goodMounts, state: func(f *verifyFixture) *State {
			return &State{Phase: PhaseDone, Layout: LayoutMdadm, Devices: f.disks[:1], MountPoint: "/mnt/.ephemeral"}
		}, want: "setup used"},
		{name: "set up as none, disks now", mounts: goodMounts, state: func(f *verifyFixture) *State {
			return &State{Phase: PhaseDone, Layout: LayoutNone}
		}, want: "setup found no disks"},
		{name: "not mounted", mounts: goodMounts[1:], want: "/mnt/.ephemeral is not mounted"},
		{name: "mounted from another device", mounts: replaced(0, "100 30 259:9 / /mnt/.ephemeral rw - xfs /dev/nvme9n1 rw"),
			want: "is a mount of /dev/nvme9n1"},
		{name: "read-only", mounts: replaced(0, "100 30 9:127 / /mnt/.ephemeral ro,noatime shared:50 - xfs MD ro"), want: "read-only"},
		{name: "a bind missing", mounts: replaced(3, ""), want: "/var/log/pods is not bind-mounted"},
		{name: "kubelet not shared", mounts: replaced(2, "102 30 9:127 /._var_lib_kubelet /var/lib/kubelet rw - xfs MD rw"),
			want: "not shared"},
		{name: "a bind of the wrong folder", mounts: replaced(1, "101 30 9:127 /elsewhere /var/lib/containerd rw - xfs MD rw"),
			want: "/var/lib/containerd is a mount of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newVerifyFixture(t)
			f.mountinfo(t, tt.mounts...)
			if tt.state != nil {
				f.writeState(t, tt.state(f))
			}
			if tt.noFile {
				if err := os.Remove(f.opts.StatePath); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Verify(context.Background(), f.opts)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got.Layout != LayoutMdadm || got.Filesystem != "xfs" {
					t.Errorf("Verify() = %+v", got)
				}
				return
			}
			if !errors.Is(err, ErrNotSetUp) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Verify() = %v, want ErrNotSetUp mentioning %q", err, tt.want)
			}
		})
	}
}

func TestVerifyWithoutDisks(t *testing.T) {
	sysfs, dev, _ := fakeDisks(t, 0)
	got, err := Verify(context.Background(), Options{SysfsRoot: sysfs, DevRoot: dev, StatePath: filepath.Join(t.TempDir(), "none.json")})
	if err != nil || got.Layout != LayoutNone {
		t.Fatalf("Verify() = %+v, %v; want layout none", got, err)
	}
}

// TestVerifier: the subsystem is not ready and reports a fatal StorageReady
// signal while a bind is missing, then clears it once the bind is back.
func TestVerifier(t *testing.T) {
	f := newVerifyFixture(t)
	f.mountinfo(t, replaced(2, "")...)
	rec := &healthtest.Recorder{}
	v := NewVerifier(f.opts, time.Hour, rec)
	if err := v.Ready(); err == nil {
		t.Fatal("ready before any check")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	sigs := rec.WaitFor(t, "a failure signal", func(s []health.Signal) bool { return len(s) > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	want := health.Signal{Source: "instance-store", Condition: health.StorageReady, Reason: health.ReasonInstanceStoreNotMounted, Severity: health.Fatal}
	got := sigs[0]
	if got.Source != want.Source || got.Condition != want.Condition || got.Reason != want.Reason || got.Severity != want.Severity || got.Cleared ||
		!strings.Contains(got.Message, "/var/lib/kubelet is not bind-mounted") {
		t.Errorf("signal %+v, want %+v about /var/lib/kubelet", got, want)
	}
	if err := v.Ready(); !errors.Is(err, ErrNotSetUp) {
		t.Errorf("Ready() = %v, want ErrNotSetUp", err)
	}
	rec.Take()

	f.mountinfo(t, goodMounts...)
	if err := v.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := v.Ready(); err != nil {
		t.Errorf("Ready() = %v after the bind came back", err)
	}
	sigs = rec.Take()
	if len(sigs) != 1 || !sigs[0].Cleared || sigs[0].Reason != health.ReasonInstanceStoreNotMounted {
		t.Errorf("signals %+v, want one cleared %s", sigs, health.ReasonInstanceStoreNotMounted)
	}
	// Passing again reports nothing more.
	if err := v.Check(context.Background()); err != nil || len(rec.Take()) != 0 {
		t.Errorf("a repeated pass reported again (err %v)", err)
	}
}
