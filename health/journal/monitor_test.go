package journal

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/autonode/autonode/health"
	"github.com/autonode/autonode/health/healthtest"
)

// fixtureA is a kubelet and containerd log with one of each known problem,
// noise, and problems from a unit that is not monitored.
var fixtureA = []entry{
	{"kubelet.service", "Started kubelet"},
	{"kubelet.service", `"Skipping pod synchronization" err="PLEG is not healthy: pleg was last seen active 3m5.1s ago; threshold is 3m0s"`},
	{"containerd.service", `RunPodSandbox for &PodSandboxMetadata{Name:web-0,} failed, error" error="failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"/pause\": permission denied: unknown"`},
	{"sshd.service", "write failed: no space left on device"},
	{"containerd.service", `failed to pull image: write /var/lib/containerd/io.containerd.content.v1.content/ingest/abc/data: no space left on device`},
	{"kubelet.service", `"Failed to start fsnotify" err="too many open files"`},
	{"containerd.service", `failed to mount rootfs component: invalid argument`},
	{"", "an entry without a unit"},
}

// wantA is what fixtureA must produce, in order.
var wantA = []struct {
	reason    string
	condition health.Condition
	contains  string
}{
	{ReasonKubeletPLEGUnhealthy, health.ContainerRuntimeReady, "kubelet.service: kubelet PLEG is not healthy: pleg was last seen active 3m5.1s ago"},
	{ReasonContainerCreateFailed, health.ContainerRuntimeReady, "containerd.service: OCI runtime create failed: runc create failed: unable to start container process"},
	{health.ReasonDiskPressure, health.StorageReady, "containerd.service: no space left on device /var/lib/containerd/io.containerd.content.v1.content/ingest/abc/data"},
	{ReasonTooManyOpenFiles, health.KernelReady, "kubelet.service: too many open files"},
	{ReasonContainerMountFailed, health.ContainerRuntimeReady, "containerd.service: failed to mount rootfs component: invalid argument"},
}

// fixtureB follows fixtureA in time.
var fixtureB = []entry{
	{"kubelet.service", "PLEG is not healthy: pleg has yet to be successful"},
	{"containerd.service", "all good"},
}

func checkWantA(t *testing.T, got []health.Signal) {
	t.Helper()
	got = problems(got)
	if len(got) < len(wantA) {
		t.Fatalf("got %d signals, want %d:%s", len(got), len(wantA), messages(got))
	}
	for i, w := range wantA {
		s := got[i]
		if s.Source != SignalSource || s.Reason != w.reason || s.Condition != w.condition ||
			s.Severity != health.Warning || !strings.Contains(s.Message, w.contains) || s.Cleared {
			t.Errorf("signal %d = %+v, want %s on %s containing %q", i, s, w.reason, w.condition, w.contains)
		}
		if !strings.Contains(s.Message, "logged 2023-11-14T22:13:") {
			t.Errorf("signal %d message %q lacks the entry's time", i, s.Message)
		}
	}
}

func TestFixtureSignals(t *testing.T) {
	dir := t.TempDir()
	writeJournal(t, filepath.Join(dir, "a.journal"), 0, fixtureA)
	rec := &healthtest.Recorder{}
	r := start(t, Options{Reporter: rec, Directory: dir})
	got := rec.WaitFor(t, "fixture A's signals", func(ss []health.Signal) bool { return len(problems(ss)) >= len(wantA) })
	checkWantA(t, got)

	// Follow: a file added while running is read without a restart.
	writeJournal(t, filepath.Join(dir, "b.journal"), 100, fixtureB)
	got = rec.WaitFor(t, "fixture B's signal", count(ReasonKubeletPLEGUnhealthy, 2))
	if err := r.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if p := problems(rec.Signals()); len(p) != len(wantA)+1 {
		t.Errorf("got %d signals, want %d:%s", len(p), len(wantA)+1, messages(p))
	}
	if last := byReason(got, ReasonKubeletPLEGUnhealthy)[1]; !strings.Contains(last.Message, "PLEG is not healthy") {
		t.Errorf("fixture B signal %+v", last)
	}
	if rs := byReason(rec.Signals(), ReasonJournalReadError); len(rs) != 0 {
		t.Errorf("read errors on good files:%s", messages(rs))
	}
}

func TestUnitsOption(t *testing.T) {
	dir := t.TempDir()
	writeJournal(t, filepath.Join(dir, "a.journal"), 0, fixtureA)
	rec := &healthtest.Recorder{}
	r := start(t, Options{Reporter: rec, Directory: dir, Units: []string{"sshd.service"}})
	rec.WaitFor(t, "sshd's disk signal", count(health.ReasonDiskPressure, 1))
	r.stop()
	if p := problems(rec.Signals()); len(p) != 1 || !strings.Contains(p[0].Message, "sshd.service: no space left on device") {
		t.Errorf("with Units=[sshd.service] got:%s", messages(p))
	}
}

func TestResumeByCursor(t *testing.T) {
	dir := t.TempDir()
	cursorPath := filepath.Join(t.TempDir(), "state", "journal.cursor")
	writeJournal(t, filepath.Join(dir, "a.journal"), 0, fixtureA)

	rec := &healthtest.Recorder{}
	r := start(t, Options{Reporter: rec, Directory: dir, CursorPath: cursorPath})
	rec.WaitFor(t, "fixture A's signals", func(ss []health.Signal) bool { return len(problems(ss)) >= len(wantA) })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	checkWantA(t, rec.Signals())
	if _, err := os.Stat(cursorPath); err != nil {
		t.Fatalf("no cursor saved: %v", err)
	}

	// A restart with nothing new reports nothing; then new entries, once.
	writeJournal(t, filepath.Join(dir, "b.journal"), 100, fixtureB)
	rec2 := &healthtest.Recorder{}
	r2 := start(t, Options{Reporter: rec2, Directory: dir, CursorPath: cursorPath})
	got := rec2.WaitFor(t, "fixture B's signal", count(ReasonKubeletPLEGUnhealthy, 1))
	if err := r2.stop(); err != nil {
		t.Fatal(err)
	}
	if p := problems(got); len(p) != 1 || !strings.Contains(p[0].Message, "has yet to be successful") {
		t.Fatalf("after resuming got (want only fixture B's PLEG):%s", messages(p))
	}

	// And again: everything was handled, so a third run reports nothing.
	// The run ends after it read to the end and waited once (Ready, then
	// the final cursor save), which the recorder cannot observe directly:
	// a marker entry in a new file tells us it has read that far.
	writeJournal(t, filepath.Join(dir, "c.journal"), 200, []entry{{"kubelet.service", "too many open files (marker)"}})
	rec3 := &healthtest.Recorder{}
	r3 := start(t, Options{Reporter: rec3, Directory: dir, CursorPath: cursorPath})
	got = rec3.WaitFor(t, "the marker", count(ReasonTooManyOpenFiles, 1))
	r3.stop()
	if p := problems(got); len(p) != 1 || !strings.Contains(p[0].Message, "logged 2023-11-14T22:16:40Z") { // entry 200
		t.Fatalf("third run got (want only the marker):%s", messages(p))
	}
}

func TestStartAtEnd(t *testing.T) {
	dir := t.TempDir()
	writeJournal(t, filepath.Join(dir, "a.journal"), 0, fixtureA)
	rec := &healthtest.Recorder{}
	r := start(t, Options{Reporter: rec, Directory: dir, StartAtEnd: true})
	waitReady(t, r.m)
	writeJournal(t, filepath.Join(dir, "b.journal"), 100, fixtureB)
	got := rec.WaitFor(t, "fixture B's signal", count(ReasonKubeletPLEGUnhealthy, 1))
	r.stop()
	if p := problems(got); len(p) != 1 || !strings.Contains(p[0].Message, "has yet to be successful") {
		t.Fatalf("StartAtEnd got (want only fixture B's PLEG):%s", messages(p))
	}
}

func TestCorruptCursor(t *testing.T) {
	for name, content := range map[string]string{
		"not json":          "s=garbage\x00\x01",
		"not a cursor":      `{"cursor":"hello"}`,
		"empty":             "",
		"cursor with a NUL": `{"cursor":"s=1;i=2\u0000"}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeJournal(t, filepath.Join(dir, "a.journal"), 0, fixtureA)
			cursorPath := filepath.Join(t.TempDir(), "journal.cursor")
			if err := os.WriteFile(cursorPath, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			rec := &healthtest.Recorder{}
			r := start(t, Options{Reporter: rec, Directory: dir, CursorPath: cursorPath})
			got := rec.WaitFor(t, "fixture A's signals", func(ss []health.Signal) bool { return len(problems(ss)) >= len(wantA) })
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			checkWantA(t, got) // read afresh
			cs := byReason(got, ReasonJournalCursorCorrupted)
			if len(cs) != 1 || cs[0].Severity != health.Info || !strings.Contains(cs[0].Message, cursorPath+".bad") {
				t.Errorf("corrupt cursor signals:%s", messages(cs))
			}
			if b, err := os.ReadFile(cursorPath + ".bad"); err != nil || string(b) != content {
				t.Errorf("quarantined cursor = %q, %v; want %q", b, err, content)
			}
			if _, _, err := loadCursor(cursorPath); err != nil {
				t.Errorf("the new cursor does not load: %v", err)
			}
		})
	}
}

func TestTruncatedJournalFile(t *testing.T) {
	dir := t.TempDir()
	writeJournal(t, filepath.Join(dir, "a.journal"), 0, fixtureA)
	cut := filepath.Join(dir, "cut.journal")
	writeJournal(t, cut, 100, fixtureB)
	if err := os.Truncate(cut, 5000); err != nil {
		t.Fatal(err)
	}
	rec := &healthtest.Recorder{}
	r := start(t, Options{Reporter: rec, Directory: dir})
	got := rec.WaitFor(t, "fixture A's signals and the read error", func(ss []health.Signal) bool {
		return len(problems(ss)) >= len(wantA) && len(byReason(ss, ReasonJournalReadError)) > 0
	})
	if r.m.Ready() != nil {
		t.Errorf("not ready with one good file: %v", r.m.Ready())
	}
	// It keeps running: a later file is still read.
	writeJournal(t, filepath.Join(dir, "c.journal"), 200, []entry{{"kubelet.service", "too many open files (after)"}})
	rec.WaitFor(t, "the later file's signal", count(ReasonTooManyOpenFiles, 2))
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	checkWantA(t, got)
	es := byReason(rec.Signals(), ReasonJournalReadError)
	if len(es) != 1 || es[0].Severity != health.Info || !strings.Contains(es[0].Message, cut) ||
		!strings.Contains(es[0].Message, "truncated") {
		t.Errorf("read errors (want one naming %s as truncated):%s", cut, messages(es))
	}
}

func TestDisabledWithoutJournal(t *testing.T) {
	tests := map[string]Options{
		"empty directory":   {Directory: t.TempDir()},
		"missing directory": {Directory: filepath.Join(t.TempDir(), "absent")},
		"no system journal": {SystemDirs: []string{t.TempDir(), filepath.Join(t.TempDir(), "absent")}},
		"only other files":  {Directory: dirWith(t, "notes.txt")},
	}
	for name, opts := range tests {
		t.Run(name, func(t *testing.T) {
			rec := &healthtest.Recorder{}
			opts.Reporter = rec
			r := start(t, opts)
			got := rec.WaitFor(t, "the disabled signal", count(ReasonJournalDisabled, 1))
			if err := r.m.Ready(); err != nil || !r.m.Disabled() {
				t.Errorf("Ready = %v, Disabled = %v; want nil, true", err, r.m.Disabled())
			}
			if s := got[0]; s.Severity != health.Info || !strings.Contains(s.Message, "no journal files") {
				t.Errorf("disabled signal %+v", s)
			}
			if err := r.stop(); err != nil {
				t.Errorf("Run = %v", err)
			}
		})
	}
}

func dirWith(t *testing.T, name string) string {
	t.Helper()
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, name), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestNewDefaults(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New accepted no Reporter")
	}
	m, err := New(Options{Reporter: &healthtest.Recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Name() != "journal-monitor" || m.Ready() == nil {
		t.Errorf("Name %q Ready %v", m.Name(), m.Ready())
	}
	if want := []string{"kubelet.service", "containerd.service"}; strings.Join(m.opts.Units, ",") != strings.Join(want, ",") {
		t.Errorf("default units %v", m.opts.Units)
	}
}
