package system

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/autonode/autonode/health/healthtest"

	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/health"
)

// fakeProc is a /proc tree in a temp dir.
type fakeProc struct {
	t    *testing.T
	root string
}

func newFakeProc(t *testing.T) *fakeProc {
	t.Helper()
	return &fakeProc{t: t, root: t.TempDir()}
}

func (p *fakeProc) write(rel, content string) {
	p.t.Helper()
	path := filepath.Join(p.root, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *fakeProc) remove(rel string) {
	p.t.Helper()
	if err := os.Remove(filepath.Join(p.root, rel)); err != nil {
		p.t.Fatal(err)
	}
}

type fakeTimex struct {
	status   int32
	maxerror int64
	err      error
}

func (f *fakeTimex) Adjtimex(buf *unix.Timex) (int, error) {
	if f.err != nil {
		return -1, f.err
	}
	buf.Status = f.status
	buf.Maxerror = f.maxerror
	return unix.TIME_OK, nil
}

// newMonitor builds a monitor over a fake /proc, with one check in scope:
// the others' inputs are absent or healthy.
func newMonitor(t *testing.T, p *fakeProc, opts Options) (*Monitor, *healthtest.Recorder) {
	t.Helper()
	rec := &healthtest.Recorder{}
	opts.Reporter = rec
	opts.ProcRoot = p.root
	if opts.Timex == nil {
		opts.Timex = &fakeTimex{maxerror: 1000}
	}
	if opts.Paths == nil {
		opts.Paths = []string{}
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m, rec
}

// only returns the signals with reason, and fails on reasons other than
// reason and ReasonCheckDisabled.
func only(t *testing.T, got []health.Signal, reason string) []health.Signal {
	t.Helper()
	var out []health.Signal
	for _, s := range got {
		if s.Source != SignalSource {
			t.Errorf("signal %+v: source %q", s, s.Source)
		}
		switch s.Reason {
		case reason:
			out = append(out, s)
		case ReasonCheckDisabled:
		default:
			t.Errorf("unexpected signal %+v", s)
		}
	}
	return out
}

// step is one round: the inputs to write, then what the round must report
// for the reason under test: "" none, "fail", or "cleared".
type step struct {
	files map[string]string
	want  string
}

func runSteps(t *testing.T, m *Monitor, p *fakeProc, rec *healthtest.Recorder, reason string, sev health.Severity, cond health.Condition, steps []step) {
	t.Helper()
	for i, st := range steps {
		for rel, c := range st.files {
			p.write(rel, c)
		}
		if err := m.Check(t.Context()); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		got := only(t, rec.Take(), reason)
		switch st.want {
		case "":
			if len(got) != 0 {
				t.Errorf("round %d: got %+v, want nothing", i, got)
			}
		case "fail", "cleared":
			if len(got) != 1 {
				t.Fatalf("round %d: got %+v, want one %s signal", i, got, st.want)
			}
			s := got[0]
			if s.Cleared != (st.want == "cleared") || s.Severity != sev || s.Condition != cond {
				t.Errorf("round %d: got %+v, want %s with severity %v condition %s", i, s, st.want, sev, cond)
			}
		}
	}
}

func loadavg(total int) map[string]string {
	return map[string]string{"loadavg": fmt.Sprintf("0.50 0.40 0.30 3/%d 12345\n", total)}
}

func TestPIDCheck(t *testing.T) {
	p := newFakeProc(t)
	p.write("sys/kernel/pid_max", "1000\n")
	p.write("sys/kernel/threads-max", "2000\n")
	m, rec := newMonitor(t, p, Options{})
	runSteps(t, m, p, rec, health.ReasonPIDExhausted, health.Fatal, health.KernelReady, []step{
		{loadavg(100), ""},
		{loadavg(950), ""},        // at the threshold is not above it
		{loadavg(951), "fail"},    // above 95%
		{loadavg(960), "fail"},    // repeats while failing
		{loadavg(920), "fail"},    // between the thresholds: still failing
		{loadavg(899), "cleared"}, // below 90%
		{loadavg(920), ""},        // between the thresholds: still passing
		{map[string]string{"sys/kernel/threads-max": "500\n", "loadavg": "1 1 1 1/480 1\n"}, "fail"}, // threads-max is the lower limit
	})
}

func TestPIDCheckErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
	}{
		{"no pid_max", map[string]string{"loadavg": "1 1 1 1/10 1\n"}},
		{"bad loadavg", map[string]string{"sys/kernel/pid_max": "100\n", "loadavg": "1 1 1\n"}},
		{"loadavg without total", map[string]string{"sys/kernel/pid_max": "100\n", "loadavg": "1 1 1 10 1\n"}},
		{"pid_max not a number", map[string]string{"sys/kernel/pid_max": "lots\n", "loadavg": "1 1 1 1/10 1\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newFakeProc(t)
			for rel, c := range tt.files {
				p.write(rel, c)
			}
			m, rec := newMonitor(t, p, Options{})
			err := m.Check(t.Context())
			if err == nil || !strings.Contains(err.Error(), "system check pid") || !strings.Contains(err.Error(), p.root) {
				t.Fatalf("Check = %v, want an error naming the pid check and the file", err)
			}
			only(t, rec.Take(), "")
		})
	}
}

func conntrack(count, max int) map[string]string {
	return map[string]string{
		"sys/net/netfilter/nf_conntrack_count": fmt.Sprintf("%d\n", count),
		"sys/net/netfilter/nf_conntrack_max":   fmt.Sprintf("%d\n", max),
	}
}

func TestConntrackCheck(t *testing.T) {
	p := newFakeProc(t)
	p.write("sys/kernel/pid_max", "100000\n")
	p.write("loadavg", "1 1 1 1/10 1\n")
	m, rec := newMonitor(t, p, Options{})
	// Absent files: disabled, reported once.
	for range 2 {
		if err := m.Check(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	got := rec.Take()
	if len(got) != 1 || got[0].Reason != ReasonCheckDisabled || got[0].Severity != health.Info ||
		got[0].Condition != health.NetworkingReady || !strings.Contains(got[0].Message, "nf_conntrack") {
		t.Fatalf("without conntrack files got %+v, want one Info %s", got, ReasonCheckDisabled)
	}
	runSteps(t, m, p, rec, health.ReasonConntrackFull, health.Warning, health.NetworkingReady, []step{
		{conntrack(10, 100), ""},
		{conntrack(91, 100), "fail"},
		{conntrack(87, 100), "fail"},
		{conntrack(84, 100), "cleared"},
		{conntrack(84, 100), ""},
		{conntrack(950, 1000), "fail"},
	})
	// Unloaded again: disabled again, and no error.
	p.remove("sys/net/netfilter/nf_conntrack_count")
	if err := m.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := rec.Take(); len(got) != 1 || got[0].Reason != ReasonCheckDisabled {
		t.Fatalf("after unloading got %+v, want one %s", got, ReasonCheckDisabled)
	}
}

func TestClockCheck(t *testing.T) {
	tests := []struct {
		name string
		tx   fakeTimex
		want string
	}{
		{"synchronised", fakeTimex{maxerror: 5000}, ""},
		{"unsync bit", fakeTimex{status: unix.STA_UNSYNC, maxerror: 5000}, "fail"},
		{"error bound too large", fakeTimex{maxerror: 2_000_000}, "fail"},
		{"synchronised again", fakeTimex{status: unix.STA_PLL, maxerror: 1000}, "cleared"},
	}
	p := newFakeProc(t)
	p.write("sys/kernel/pid_max", "100000\n")
	p.write("loadavg", "1 1 1 1/10 1\n")
	tx := &fakeTimex{}
	m, rec := newMonitor(t, p, Options{Timex: tx})
	for _, tt := range tests { // in order: each round builds on the last
		*tx = tt.tx
		if err := m.Check(t.Context()); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got := only(t, rec.Take(), health.ReasonClockUnsynchronized)
		switch {
		case tt.want == "" && len(got) != 0,
			tt.want != "" && (len(got) != 1 || got[0].Cleared != (tt.want == "cleared") || got[0].Condition != health.KernelReady):
			t.Errorf("%s: got %+v, want %q", tt.name, got, tt.want)
		}
	}
	*tx = fakeTimex{err: unix.EPERM}
	if err := m.Check(t.Context()); err == nil || !strings.Contains(err.Error(), "adjtimex") {
		t.Errorf("Check with a failing adjtimex = %v, want an adjtimex error", err)
	}
}

// fakeStatfs returns per-path usage set by the test.
type fakeStatfs struct {
	mu sync.Mutex
	st map[string]unix.Statfs_t
}

func (f *fakeStatfs) set(path string, blocks, bavail, files, ffree uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st[path] = unix.Statfs_t{Bsize: 4096, Blocks: blocks, Bavail: bavail, Bfree: bavail, Files: files, Ffree: ffree}
}

func (f *fakeStatfs) statfs(path string, st *unix.Statfs_t) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.st[path]
	if !ok {
		return fmt.Errorf("fake statfs: %w", unix.ENOENT)
	}
	*st = s
	return nil
}

func mountinfoLine(id int, mp, opts, superOpts string) string {
	return fmt.Sprintf("%d 1 8:1 / %s %s shared:1 - ext4 /dev/vdb %s\n", id, strings.ReplaceAll(mp, " ", `\040`), opts, superOpts)
}

func TestFilesystemChecks(t *testing.T) {
	p := newFakeProc(t)
	p.write("sys/kernel/pid_max", "100000\n")
	p.write("loadavg", "1 1 1 1/10 1\n")
	data := filepath.Join(t.TempDir(), "data dir") // a space, escaped in mountinfo
	sub := filepath.Join(data, "kubelet")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	fs := &fakeStatfs{st: map[string]unix.Statfs_t{}}
	fs.set(sub, 1000, 500, 1000, 500)
	m, rec := newMonitor(t, p, Options{Paths: []string{sub, filepath.Join(data, "absent")}, Statfs: fs.statfs})

	type want struct{ ro, bytes, inodes string }
	steps := []struct {
		name                         string
		mountinfo                    string
		blocks, bavail, files, ffree uint64
		want                         want
	}{
		{"healthy", mountinfoLine(2, data, "rw,relatime", "rw"), 1000, 500, 1000, 500, want{}},
		{"space low", mountinfoLine(2, data, "rw,relatime", "rw"), 1000, 50, 1000, 500, want{bytes: "fail"}},
		{"inodes low too", mountinfoLine(2, data, "rw,relatime", "rw"), 1000, 50, 1000, 10, want{bytes: "fail", inodes: "fail"}},
		{"space between thresholds", mountinfoLine(2, data, "rw,relatime", "rw"), 1000, 120, 1000, 10, want{bytes: "fail", inodes: "fail"}},
		{"space back", mountinfoLine(2, data, "rw,relatime", "rw"), 1000, 200, 1000, 10, want{bytes: "cleared", inodes: "fail"}},
		{"inodes back", mountinfoLine(2, data, "rw,relatime", "rw"), 1000, 200, 1000, 200, want{inodes: "cleared"}},
		{"remounted ro", mountinfoLine(2, data, "ro,relatime", "rw"), 1000, 200, 1000, 200, want{ro: "fail"}},
		{"still ro", mountinfoLine(2, data, "ro,relatime", "rw"), 1000, 200, 1000, 200, want{ro: "fail"}},
		{"rw again", mountinfoLine(2, data, "rw,relatime", "rw"), 1000, 200, 1000, 200, want{ro: "cleared"}},
		{"superblock ro (errors=remount-ro)", mountinfoLine(2, data, "rw,relatime", "ro,errors=remount-ro"), 1000, 200, 1000, 200, want{ro: "fail"}},
		{"rw mount stacked on top", mountinfoLine(2, data, "rw,relatime", "ro") + mountinfoLine(3, data, "rw", "rw"), 1000, 200, 1000, 200, want{ro: "cleared"}},
		{"ro parent does not matter", mountinfoLine(2, "/", "ro", "ro") + mountinfoLine(3, data, "rw", "rw"), 1000, 200, 1000, 200, want{}},
	}
	for _, st := range steps {
		p.write("self/mountinfo", mountinfoLine(1, "/", "rw", "rw")+st.mountinfo)
		fs.set(sub, st.blocks, st.bavail, st.files, st.ffree)
		if err := m.Check(t.Context()); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		var got want
		for _, s := range rec.Take() {
			if s.Reason == ReasonCheckDisabled {
				continue // conntrack: no files in this fake /proc
			}
			if s.Condition != health.StorageReady {
				t.Errorf("%s: %+v: condition %s", st.name, s, s.Condition)
			}
			state := "fail"
			if s.Cleared {
				state = "cleared"
			}
			switch {
			case s.Reason == health.ReasonReadOnlyFilesystem && s.Severity == health.Fatal:
				got.ro = state
				if !strings.Contains(s.Message, data) {
					t.Errorf("%s: message %q does not name the mount point", st.name, s.Message)
				}
			case s.Reason == health.ReasonDiskPressure && strings.Contains(s.Message, "of space used"):
				got.bytes = state
			case s.Reason == health.ReasonDiskPressure && strings.Contains(s.Message, "of inodes used"):
				got.inodes = state
			default:
				t.Errorf("%s: unexpected %+v", st.name, s)
			}
		}
		if got != st.want {
			t.Errorf("%s: got %+v, want %+v", st.name, got, st.want)
		}
	}
}

func TestFilesystemCheckErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, mountinfo, want string
	}{
		{"no mountinfo", "", "self/mountinfo"},
		{"malformed mountinfo", "garbage line\n", "malformed mountinfo"},
		{"statfs fails", mountinfoLine(1, "/", "rw", "rw"), "statfs " + dir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newFakeProc(t)
			p.write("sys/kernel/pid_max", "100000\n")
			p.write("loadavg", "1 1 1 1/10 1\n")
			if tt.mountinfo != "" {
				p.write("self/mountinfo", tt.mountinfo)
			}
			fs := &fakeStatfs{st: map[string]unix.Statfs_t{}}
			m, _ := newMonitor(t, p, Options{Paths: []string{dir}, Statfs: fs.statfs})
			if err := m.Check(t.Context()); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestNewRejectsBadThresholds(t *testing.T) {
	for _, th := range []Threshold{{Fail: 0.5, Clear: 0.6}, {Fail: 1.5, Clear: 0.5}, {Fail: 0.9, Clear: -1}} {
		if _, err := New(Options{Reporter: &healthtest.Recorder{}, Disk: th}); err == nil {
			t.Errorf("New accepted Disk threshold %+v", th)
		}
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New accepted no Reporter")
	}
}

// TestRealProc runs every check once against this machine's /proc, /, and
// adjtimex: the files must parse, whatever the readings.
func TestRealProc(t *testing.T) {
	rec := &healthtest.Recorder{}
	m, err := New(Options{Reporter: rec, Paths: []string{"/", t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(t.Context()); err != nil {
		t.Fatalf("checks against the real /proc: %v", err)
	}
	for _, s := range rec.Take() {
		t.Logf("real /proc: %+v", s)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	p := newFakeProc(t)
	p.write("sys/kernel/pid_max", "1000\n")
	p.write("loadavg", "1 1 1 1/999 1\n")
	m, rec := newMonitor(t, p, Options{})
	if m.Ready() == nil {
		t.Fatal("ready before Run")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	for m.Ready() != nil {
		runtime.Gosched()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := only(t, rec.Take(), health.ReasonPIDExhausted); len(got) == 0 {
		t.Error("Run reported nothing for 999 of 1000 PIDs")
	}
	if m.Name() != "system-monitor" {
		t.Error(m.Name())
	}
}
