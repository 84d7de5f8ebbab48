package kernel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/autonode/autonode/health/healthtest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/autonode/autonode/agent/subsystem"
	"github.com/autonode/autonode/health"
)

// wantFixture is what testdata/kmsg.txt must produce, in order.
var wantFixture = []struct {
	seq       uint64
	reason    string
	condition health.Condition
	severity  health.Severity
	contains  string
}{
	{1001, health.ReasonKernelSoftLockup, health.KernelReady, health.Warning, "soft lockup: CPU 3 stuck for 23s [kworker/3:1:1234] (kernel time 12.000000s, seq 1001)"},
	{1002, health.ReasonKernelHungTask, health.KernelReady, health.Warning, "task containerd (pid 4321) blocked for more than 120s (kernel time 13.000000s"},
	{1004, health.ReasonOOMKill, health.KernelReady, health.Warning, "Out of memory: killed process 5123 (python3)"},
	{1005, health.ReasonOOMKill, health.KernelReady, health.Warning, "Memory cgroup out of memory: killed process 6234 (java)"},
	{1006, health.ReasonSegfault, health.KernelReady, health.Info, "app (pid 7345) segfault at 0"},
	{1007, health.ReasonConntrackFull, health.NetworkingReady, health.Warning, "conntrack table full"},
	{1008, health.ReasonPIDExhausted, health.KernelReady, health.Fatal, "pids controller in cgroup /kubepods.slice/"},
	{1009, health.ReasonBlockIOError, health.StorageReady, health.Warning, "I/O error on /dev/xvda at sector 2048 0x1:(WRITE)"},
	{1010, health.ReasonBlockIOError, health.StorageReady, health.Warning, "sector 123456 0x0:(READ) (kernel time 18.500000s, seq 1010, device b259:0)"},
	{1011, health.ReasonXFSError, health.StorageReady, health.Fatal, "XFS on /dev/nvme1n1: Corruption detected"},
	{1012, health.ReasonXFSError, health.StorageReady, health.Warning, "metadata I/O error"},
	{1013, health.ReasonXFSError, health.StorageReady, health.Fatal, "Shutting down filesystem"},
	{1015, health.ReasonNvidiaXid, health.AcceleratedHardwareReady, health.Fatal, "Xid 79 on GPU PCI:0000:10:1c: pid=2871, name=python, GPU has fallen off the bus."},
	{1016, health.ReasonNvidiaXid, health.AcceleratedHardwareReady, health.Warning, "Xid 13 on GPU PCI:0000:10:1c"},
	{1017, health.ReasonNeuronHardware, health.AcceleratedHardwareReady, health.Fatal, "SRAM_UNCORRECTABLE_ERROR: instance-id=i-0592464924bd45322"},
	{1018, health.ReasonEFAError, health.AcceleratedHardwareReady, health.Warning, "EFA device 0000:10:1c.0: Failed to process command DESTROY_QP (opcode 6) comp_status 7 err -22 (kernel time 22.000000s, seq 1018, device +pci:0000:10:1c.0)"},
	{1022, health.ReasonBlockIOError, health.StorageReady, health.Warning, "buffer I/O error on /dev/nvme1n1 at logical block 0"},
}

// env is one monitor's files: a boot id and a cursor in a temp folder.
type env struct {
	dir, bootID, cursor string
}

func newEnv(t *testing.T, bootID string) env {
	t.Helper()
	dir := t.TempDir()
	e := env{dir: dir, bootID: filepath.Join(dir, "boot_id"), cursor: filepath.Join(dir, "state", "kmsg.cursor")}
	e.setBoot(t, bootID)
	return e
}

func (e env) setBoot(t *testing.T, id string) {
	t.Helper()
	if err := os.WriteFile(e.bootID, []byte(id+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (e env) monitor(t *testing.T, rep health.Reporter, path string) *Monitor {
	t.Helper()
	m, err := New(Options{Reporter: rep, Path: path, BootIDPath: e.bootID, CursorPath: e.cursor})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (e env) readCursor(t *testing.T) cursor {
	t.Helper()
	c, ok, err := loadCursor(e.cursor)
	if err != nil || !ok {
		t.Fatalf("loading cursor %s: ok=%v err=%v", e.cursor, ok, err)
	}
	return c
}

// runToEnd runs m over a finite source and fails the test if it errs.
func runToEnd(t *testing.T, m *Monitor) {
	t.Helper()
	if err := m.Run(t.Context()); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// fixture returns the fixture's lines up to and including record seq.
func fixture(t *testing.T, upTo uint64) string {
	t.Helper()
	b, err := os.ReadFile("testdata/kmsg.txt")
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for line := range strings.Lines(string(b)) {
		var prio, seq uint64
		if n, _ := fmt.Sscanf(line, "%d,%d,", &prio, &seq); n == 2 && seq > upTo {
			break
		}
		out.WriteString(line)
	}
	return out.String()
}

func TestMonitorFixture(t *testing.T) {
	e := newEnv(t, "boot-1")
	rep := &healthtest.Recorder{}
	m := e.monitor(t, rep, "testdata/kmsg.txt")
	runToEnd(t, m)

	got := rep.Signals()
	if len(got) != len(wantFixture) {
		t.Errorf("got %d signals, want %d: %v", len(got), len(wantFixture), reasons(t, rep))
	}
	for i, w := range wantFixture {
		if i >= len(got) {
			break
		}
		g := got[i]
		if g.Source != SignalSource || g.Reason != w.reason || g.Condition != w.condition || g.Severity != w.severity || g.Cleared {
			t.Errorf("signal %d (seq %d) = %+v, want %s/%s/%s", i, w.seq, g, w.reason, w.condition, w.severity)
		}
		if !strings.Contains(g.Message, w.contains) {
			t.Errorf("signal %d (seq %d) message %q does not contain %q", i, w.seq, g.Message, w.contains)
		}
		if want := fmt.Sprintf("seq %d", w.seq); !strings.Contains(g.Message, want) {
			t.Errorf("signal %d message %q does not name %q", i, g.Message, want)
		}
	}
	if c := e.readCursor(t); c != (cursor{BootID: "boot-1", Sequence: 1022}) {
		t.Errorf("cursor = %+v, want boot-1/1022", c)
	}
	if n := testutil.ToFloat64(m.read); n != 24 {
		t.Errorf("records read = %v, want 24 (23 records and one malformed line)", n)
	}
	if n := testutil.ToFloat64(m.malformed); n != 1 {
		t.Errorf("malformed = %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.matched.WithLabelValues(health.ReasonXFSError)); n != 3 {
		t.Errorf("matched{XFSError} = %v, want 3", n)
	}
	if n := testutil.ToFloat64(m.lost); n != 0 {
		t.Errorf("lost = %v, want 0", n)
	}
}

func TestMonitorResumeSameBoot(t *testing.T) {
	e := newEnv(t, "boot-1")
	log := filepath.Join(e.dir, "kmsg")
	if err := os.WriteFile(log, []byte(fixture(t, 1009)), 0o644); err != nil {
		t.Fatal(err)
	}
	first := &healthtest.Recorder{}
	runToEnd(t, e.monitor(t, first, log))
	if n := len(first.Signals()); n != 8 {
		t.Fatalf("first run: %d signals, want 8: %v", n, reasons(t, first))
	}
	if c := e.readCursor(t); c.Sequence != 1009 {
		t.Fatalf("cursor after first run = %+v, want 1009", c)
	}

	// The ring still holds everything: a restart must skip what it handled.
	if err := os.WriteFile(log, []byte(fixture(t, 2000)), 0o644); err != nil {
		t.Fatal(err)
	}
	second := &healthtest.Recorder{}
	runToEnd(t, e.monitor(t, second, log))
	got := second.Signals()
	if len(got) != len(wantFixture)-8 {
		t.Fatalf("second run: %d signals, want %d: %v", len(got), len(wantFixture)-8, reasons(t, second))
	}
	for i, s := range got {
		if w := wantFixture[8+i]; s.Reason != w.reason || !strings.Contains(s.Message, fmt.Sprintf("seq %d", w.seq)) {
			t.Errorf("second run signal %d = %s %q, want %s seq %d", i, s.Reason, s.Message, w.reason, w.seq)
		}
	}

	// A third start with nothing new reports nothing.
	third := &healthtest.Recorder{}
	runToEnd(t, e.monitor(t, third, log))
	if n := len(third.Signals()); n != 0 {
		t.Errorf("third run: %d signals, want none: %v", n, reasons(t, third))
	}
}

func TestMonitorNewBootStartsOver(t *testing.T) {
	e := newEnv(t, "boot-1")
	runToEnd(t, e.monitor(t, &healthtest.Recorder{}, "testdata/kmsg.txt"))

	e.setBoot(t, "boot-2")
	rep := &healthtest.Recorder{}
	runToEnd(t, e.monitor(t, rep, "testdata/kmsg.txt"))
	if n := len(rep.Signals()); n != len(wantFixture) {
		t.Errorf("after a reboot: %d signals, want all %d", n, len(wantFixture))
	}
	if c := e.readCursor(t); c != (cursor{BootID: "boot-2", Sequence: 1022}) {
		t.Errorf("cursor = %+v, want boot-2/1022", c)
	}
}

func TestMonitorCorruptCursor(t *testing.T) {
	for name, content := range map[string]string{
		"garbage":    "{\"boot_id\": \"boot-1\", \"seq",
		"no boot id": `{"sequence": 1010}`,
		"wrong type": `{"boot_id": "boot-1", "sequence": -1}`,
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, "boot-1")
			if err := os.MkdirAll(filepath.Dir(e.cursor), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(e.cursor, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			rep := &healthtest.Recorder{}
			runToEnd(t, e.monitor(t, rep, "testdata/kmsg.txt"))

			got := rep.Signals()
			if len(got) != len(wantFixture)+1 {
				t.Fatalf("%d signals, want the corrupt-cursor signal and all %d: %v", len(got), len(wantFixture), reasons(t, rep))
			}
			if s := got[0]; s.Reason != ReasonCursorCorrupted || s.Severity != health.Info ||
				!strings.Contains(s.Message, e.cursor+".bad") {
				t.Errorf("first signal = %+v, want %s naming %s.bad", s, ReasonCursorCorrupted, e.cursor)
			}
			bad, err := os.ReadFile(e.cursor + ".bad")
			if err != nil || string(bad) != content {
				t.Errorf("%s.bad = %q, %v; want the corrupt content kept", e.cursor, bad, err)
			}
			if c := e.readCursor(t); c.Sequence != 1022 {
				t.Errorf("new cursor = %+v, want 1022", c)
			}
		})
	}
}

// fakeSource replays scripted reads: a record, or an error.
type fakeSource struct {
	mu     sync.Mutex
	reads  []any // string or error
	closed chan struct{}
	once   sync.Once
	block  bool // after the script: block until closed instead of io.EOF
}

func newFakeSource(block bool, reads ...any) *fakeSource {
	return &fakeSource{reads: reads, closed: make(chan struct{}), block: block}
}

func (f *fakeSource) Next() ([]byte, error) {
	f.mu.Lock()
	if len(f.reads) == 0 {
		f.mu.Unlock()
		if !f.block {
			return nil, io.EOF
		}
		<-f.closed
		return nil, os.ErrClosed
	}
	r := f.reads[0]
	f.reads = f.reads[1:]
	f.mu.Unlock()
	if err, ok := r.(error); ok {
		return nil, err
	}
	return []byte(r.(string)), nil
}

func (f *fakeSource) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

func rec(seq int, msg string) string { return fmt.Sprintf("3,%d,%d,-;%s\n", seq, seq*1000, msg) }

func TestMonitorRecordsLost(t *testing.T) {
	epipe := fmt.Errorf("reading /dev/kmsg: %w", ErrRecordsLost)
	src := newFakeSource(false,
		rec(10, "hello"),
		rec(11, "Out of memory: Killed process 1 (a)"),
		epipe,
		rec(15, "Out of memory: Killed process 2 (b)"), // 12, 13 and 14 were overwritten
		epipe,
		rec(16, "Out of memory: Killed process 3 (c)"), // a source that cannot say how many: one
		rec(17, "bye"),
	)
	rep := &healthtest.Recorder{}
	reg := prometheus.NewPedanticRegistry()
	m, err := New(Options{Reporter: rep, Registerer: reg, Open: func(string) (Source, error) { return src, nil }})
	if err != nil {
		t.Fatal(err)
	}
	runToEnd(t, m)

	want := []string{health.ReasonOOMKill, health.ReasonKmsgRecordsLost, health.ReasonOOMKill, health.ReasonKmsgRecordsLost, health.ReasonOOMKill}
	if got := reasons(t, rep); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("reasons = %v, want %v", got, want)
	}
	lost := rep.Signals()[1]
	if lost.Severity != health.Info || lost.Condition != health.KernelReady || !strings.Contains(lost.Message, "3 kernel log records") {
		t.Errorf("lost signal = %+v, want a KernelReady info counting 3", lost)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP autonode_kernel_kmsg_records_lost_total Kernel log records overwritten in the ring buffer before the monitor read them.
# TYPE autonode_kernel_kmsg_records_lost_total counter
autonode_kernel_kmsg_records_lost_total 4
# HELP autonode_kernel_kmsg_records_read_total Kernel log records read from the kmsg source.
# TYPE autonode_kernel_kmsg_records_read_total counter
autonode_kernel_kmsg_records_read_total 5
`), "autonode_kernel_kmsg_records_lost_total", "autonode_kernel_kmsg_records_read_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.ToFloat64(m.matched.WithLabelValues(health.ReasonOOMKill)); n != 3 {
		t.Errorf("matched{OOMKill} = %v, want 3", n)
	}
}

func TestMonitorGapAfterRestartIsLoss(t *testing.T) {
	e := newEnv(t, "boot-1")
	if err := saveCursor(e.cursor, cursor{BootID: "boot-1", Sequence: 100}); err != nil {
		t.Fatal(err)
	}
	// While the monitor was down the ring wrapped: it now starts at 150.
	src := newFakeSource(false, rec(150, "first"), rec(151, "second"))
	rep := &healthtest.Recorder{}
	m, err := New(Options{Reporter: rep, BootIDPath: e.bootID, CursorPath: e.cursor,
		Open: func(string) (Source, error) { return src, nil }})
	if err != nil {
		t.Fatal(err)
	}
	runToEnd(t, m)
	got := rep.Signals()
	if len(got) != 1 || got[0].Reason != health.ReasonKmsgRecordsLost || !strings.Contains(got[0].Message, "49 kernel log records") {
		t.Errorf("signals = %+v, want one KmsgRecordsLost counting 49", got)
	}
}

func TestMonitorReadyAndCancel(t *testing.T) {
	src := newFakeSource(true, rec(1, "INFO: task a:1 blocked for more than 120 seconds."))
	rep := &healthtest.Recorder{}
	m, err := New(Options{Reporter: rep, Open: func(string) (Source, error) { return src, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if m.Name() != "kernel-monitor" {
		t.Errorf("Name() = %q", m.Name())
	}
	if m.Ready() == nil {
		t.Error("Ready() = nil before Run")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	// The record was handled, so the source is open.
	rep.WaitFor(t, "the record's signal", func(ss []health.Signal) bool { return len(ss) > 0 })
	if err := m.Ready(); err != nil {
		t.Errorf("Ready() while running = %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
	if m.Ready() == nil {
		t.Error("Ready() = nil after Run returned")
	}
}

func TestMonitorSourceErrors(t *testing.T) {
	rep := &healthtest.Recorder{}
	m, err := New(Options{Reporter: rep, Path: filepath.Join(t.TempDir(), "missing")})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Run on a missing path = %v, want an error naming it", err)
	}

	boom := errors.New("device gone")
	m, err = New(Options{Reporter: rep, Open: func(string) (Source, error) { return newFakeSource(false, boom), nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Run(t.Context()); !errors.Is(err, boom) {
		t.Errorf("Run = %v, want the source's error", err)
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without a Reporter succeeded")
	}
}

// TestMonitorFIFO feeds the monitor through a named pipe, as a test harness
// or a log shipper would: records arrive while it runs, and cancelling the
// context wakes the blocked read.
func TestMonitorFIFO(t *testing.T) {
	e := newEnv(t, "boot-1")
	fifo := filepath.Join(e.dir, "kmsg.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	rep := &healthtest.Recorder{}
	m := e.monitor(t, rep, fifo)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()

	w, err := os.OpenFile(fifo, os.O_WRONLY, 0) // blocks until the monitor opens it
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The stream source returns a record once the next one starts, so the
	// trailing record only flushes the one before it.
	if _, err := io.WriteString(w, rec(1, "nf_conntrack: table full, dropping packet")+rec(2, "next")); err != nil {
		t.Fatal(err)
	}
	rep.WaitFor(t, "a signal from the FIFO", func(ss []health.Signal) bool { return len(ss) > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
	if got := reasons(t, rep); len(got) != 1 || got[0] != health.ReasonConntrackFull {
		t.Errorf("reasons = %v, want [ConntrackFull]", got)
	}
	// Cancelling saves the cursor: record 2 was read but not handled.
	if c := e.readCursor(t); c.Sequence != 1 {
		t.Errorf("cursor = %+v, want 1", c)
	}
}

func TestStreamSourceLongLine(t *testing.T) {
	long := strings.Repeat("x", 3*readBufSize)
	in := rec(1, long) + " K=v\n\n" + rec(2, "short")
	s := NewStreamSource(strings.NewReader(in))
	b, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRecord(b)
	if err != nil || r.Message != long || r.Dict["K"] != "v" {
		t.Fatalf("first record: len %d, dict %v, err %v", len(r.Message), r.Dict, err)
	}
	b, err = s.Next()
	if err != nil || !strings.HasPrefix(string(b), "3,2,") {
		t.Fatalf("second record = %q, %v", b, err)
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last record: %v, want io.EOF", err)
	}
}

// The monitor is supervised as an agent subsystem.
var _ subsystem.Subsystem = (*Monitor)(nil)

// reasons returns the reasons r got, checking each signal's source.
func reasons(t *testing.T, r *healthtest.Recorder) []string {
	t.Helper()
	var out []string
	for _, s := range r.Signals() {
		if s.Source != SignalSource {
			t.Errorf("signal %+v has Source %q, want %q", s, s.Source, SignalSource)
		}
		out = append(out, s.Reason)
	}
	return out
}
