package runtime

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/autonode/autonode/health/healthtest"

	"github.com/autonode/autonode/sandbox/testenv"

	"github.com/autonode/autonode/health"
)

// outcome summarises one round for one reason: "" nothing, "fail" or
// "cleared"; any other reason is an error.
func outcome(t *testing.T, got []health.Signal, reason string, sev health.Severity) string {
	t.Helper()
	res := ""
	for _, s := range got {
		if s.Reason != reason {
			continue
		}
		if s.Source != SignalSource || s.Condition != health.ContainerRuntimeReady || s.Severity != sev {
			t.Errorf("signal %+v: want source %s, ContainerRuntimeReady, %v", s, SignalSource, sev)
		}
		if res != "" {
			t.Errorf("two %s signals in one round: %+v", reason, got)
		}
		res = "fail"
		if s.Cleared {
			res = "cleared"
		}
	}
	return res
}

func TestKubeletHealthz(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
		fmt.Fprint(w, http.StatusText(int(status.Load())))
	}))
	defer srv.Close()
	rec := &healthtest.Recorder{}
	m, err := New(Options{
		Reporter: rec, KubeletHealthzURL: srv.URL + "/healthz",
		ContainerdAddress: filepath.Join(t.TempDir(), "absent.sock"),
	})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		status int
		want   string
	}{
		{http.StatusOK, ""},
		{http.StatusInternalServerError, "fail"},
		{http.StatusServiceUnavailable, "fail"},
		{http.StatusOK, "cleared"},
		{http.StatusOK, ""},
	}
	for i, st := range steps {
		status.Store(int32(st.status))
		m.Check(t.Context())
		got := m.kubeletOnly(t, rec.Take())
		if res := outcome(t, got, health.ReasonKubeletUnhealthy, health.Warning); res != st.want {
			t.Errorf("round %d (status %d): got %q, want %q: %+v", i, st.status, res, st.want, got)
		}
	}
	// Nobody listening is a failure too.
	srv.Close()
	m.Check(t.Context())
	got := rec.Take()
	if outcome(t, got, health.ReasonKubeletUnhealthy, health.Warning) != "fail" {
		t.Errorf("with the kubelet gone: %+v", got)
	}
}

// kubeletOnly checks that the other reports are the containerd socket's
// absence, and returns the rest.
func (m *Monitor) kubeletOnly(t *testing.T, got []health.Signal) []health.Signal {
	t.Helper()
	var out []health.Signal
	for _, s := range got {
		if s.Reason == health.ReasonContainerdUnresponsive {
			if !strings.Contains(s.Message, m.opts.ContainerdAddress) {
				t.Errorf("unresponsive message %q does not name the socket", s.Message)
			}
			continue
		}
		out = append(out, s)
	}
	return out
}

func TestAbsentSocketIsAFailure(t *testing.T) {
	rec := &healthtest.Recorder{}
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	m, err := New(Options{Reporter: rec, ContainerdAddress: sock, KubeletHealthzURL: "-"})
	if err != nil {
		t.Fatal(err)
	}
	m.Check(t.Context())
	got := rec.Take()
	if len(got) != 1 || outcome(t, got, health.ReasonContainerdUnresponsive, health.Fatal) != "fail" ||
		!strings.Contains(got[0].Message, sock) {
		t.Fatalf("got %+v, want one ContainerdUnresponsive naming %s", got, sock)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	rec := &healthtest.Recorder{}
	m, err := New(Options{Reporter: rec, ContainerdAddress: filepath.Join(t.TempDir(), "x.sock"), KubeletHealthzURL: "-"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Ready() == nil || m.Name() != "runtime-monitor" {
		t.Fatal("ready before Run, or misnamed")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	for m.Ready() != nil {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPrivilegedContainerdProbe(t *testing.T) {
	ctd := testenv.StartContainerd(t)
	rec := &healthtest.Recorder{}
	mountDir := t.TempDir()
	m, err := New(Options{
		Reporter: rec, ContainerdAddress: ctd.Address, KubeletHealthzURL: "-", MountDir: mountDir,
		Snapshotter: testSnapshotter(t), Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	round := func(name, wantUnresponsive, wantSnapshot string) {
		t.Helper()
		m.Check(t.Context())
		got := rec.Take()
		if res := outcome(t, got, health.ReasonContainerdUnresponsive, health.Fatal); res != wantUnresponsive {
			t.Errorf("%s: ContainerdUnresponsive %q, want %q: %+v", name, res, wantUnresponsive, got)
		}
		if res := outcome(t, got, health.ReasonContainerdSnapshotFailed, health.Fatal); res != wantSnapshot {
			t.Errorf("%s: ContainerdSnapshotFailed %q, want %q: %+v", name, res, wantSnapshot, got)
		}
		if len(got) > 2 {
			t.Errorf("%s: unexpected signals %+v", name, got)
		}
	}
	round("healthy", "", "")
	round("healthy again (the fixed snapshot key is reusable)", "", "")
	if entries, _ := os.ReadDir(mountDir); len(entries) != 0 {
		t.Errorf("the probe left %d folders in %s", len(entries), mountDir)
	}
	ctd.Stop()
	round("stopped", "fail", "")
	round("still stopped", "fail", "")
	ctd.Start()
	round("restarted", "cleared", "")
}

// testSnapshotter is overlayfs, the kubelet's default, which mounts on this
// machine's ext4 /tmp; AUTONODE_TEST_SNAPSHOTTER=native overrides it where
// overlayfs cannot stack (a /tmp that is itself overlayfs).
func testSnapshotter(t *testing.T) string {
	t.Helper()
	if os.Getenv("AUTONODE_TEST_SNAPSHOTTER") != "" {
		return os.Getenv("AUTONODE_TEST_SNAPSHOTTER")
	}
	return "overlayfs"
}

func TestPrivilegedSnapshotFailure(t *testing.T) {
	ctd := testenv.StartContainerd(t)
	tests := []struct {
		name string
		opts Options
		want string // in the message
	}{
		{"unknown snapshotter", Options{Snapshotter: "no-such-snapshotter"}, "no-such-snapshotter"},
		{"mount folder missing", Options{MountDir: filepath.Join(t.TempDir(), "absent")}, "making a mount folder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &healthtest.Recorder{}
			opts := tt.opts
			opts.Reporter, opts.ContainerdAddress, opts.KubeletHealthzURL, opts.Timeout = rec, ctd.Address, "-", 5*time.Second
			if opts.Snapshotter == "" {
				opts.Snapshotter = testSnapshotter(t)
			}
			m, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			m.Check(t.Context())
			got := rec.Take()
			if len(got) != 1 || outcome(t, got, health.ReasonContainerdSnapshotFailed, health.Fatal) != "fail" ||
				!strings.Contains(got[0].Message, tt.want) {
				t.Fatalf("got %+v, want one ContainerdSnapshotFailed containing %q", got, tt.want)
			}
			// The failure is reported each round, and recovery clears it.
			m.Check(t.Context())
			if got := rec.Take(); outcome(t, got, health.ReasonContainerdSnapshotFailed, health.Fatal) != "fail" {
				t.Errorf("second round: %+v", got)
			}
			m.opts.Snapshotter, m.opts.MountDir = testSnapshotter(t), ""
			m.Check(t.Context())
			if got := rec.Take(); outcome(t, got, health.ReasonContainerdSnapshotFailed, health.Fatal) != "cleared" {
				t.Errorf("after the fix: %+v", got)
			}
		})
	}
}
