package console

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func summary() Summary {
	return Summary{
		Node: "i-0abc", LostSince: t0.Add(-time.Minute), FailedWrites: 4,
		Conditions: []Condition{
			{Type: "KernelReady", Status: "True", Reason: "KernelHasNoProblems"},
			{Type: "ContainerRuntimeReady", Status: "False", Reason: "ContainerdUnresponsive", Message: "no answer\non the socket", Since: t0.Add(-2 * time.Minute)},
		},
		Problems: []Problem{{Reason: "ContainerdUnresponsive", Condition: "ContainerRuntimeReady", Severity: "fatal", Count: 3, Last: t0, Message: "no answer"}},
		Errors:   []Error{{Time: t0, Err: "dial tcp 127.0.0.1:6443: connect: connection refused"}},
	}
}

func TestFormat(t *testing.T) {
	got := Format(summary(), t0, 4096)
	want := strings.Join([]string{
		"autonode-health: 2026-11-26T10:00:00Z node=i-0abc apiserver unreachable since 2026-11-26T09:59:00Z (4 failed writes)",
		"autonode-health:   KernelReady=True",
		"autonode-health:   ContainerRuntimeReady=False ContainerdUnresponsive since 2026-11-26T09:58:00Z: no answer on the socket",
		"autonode-health:   problem ContainerdUnresponsive (ContainerRuntimeReady, fatal) x3 last 2026-11-26T10:00:00Z: no answer",
		"autonode-health:   error 2026-11-26T10:00:00Z: dial tcp 127.0.0.1:6443: connect: connection refused",
		"",
	}, "\r\n")
	if got != want {
		t.Errorf("Format:\n%s\nwant:\n%s", got, want)
	}
}

func TestFormatIsBounded(t *testing.T) {
	s := summary()
	for range 100 {
		s.Errors = append(s.Errors, Error{Time: t0, Err: strings.Repeat("x", 300)})
	}
	for _, limit := range []int{300, 1000, 4096} {
		got := Format(s, t0, limit)
		if len(got) > limit || !strings.HasSuffix(got, "autonode-health: (cut)\r\n") {
			t.Errorf("limit %d: %d bytes, ends %q", limit, len(got), got[max(0, len(got)-30):])
		}
	}
}

func TestWriterRateLimits(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	path := filepath.Join(t.TempDir(), "ttyS0")
	w := New(Options{Path: path, Interval: time.Minute, Clock: clk})
	steps := []struct {
		after time.Duration
		wrote bool
	}{{0, true}, {10 * time.Second, false}, {49 * time.Second, false}, {time.Second, true}, {time.Hour, true}}
	for i, s := range steps {
		clk.Step(s.after)
		wrote, err := w.Write(summary())
		if err != nil {
			t.Fatal(err)
		}
		if wrote != s.wrote {
			t.Errorf("step %d: wrote = %v, want %v", i, wrote, s.wrote)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "apiserver unreachable"); n != 3 {
		t.Errorf("%d summaries in the console file, want 3", n)
	}
}

func TestWriterReportsAMissingConsole(t *testing.T) {
	w := New(Options{Path: filepath.Join(t.TempDir(), "no", "such", "ttyS0")})
	if _, err := w.Write(summary()); err == nil || !strings.Contains(err.Error(), "ttyS0") {
		t.Errorf("err = %v, want one naming the console", err)
	}
}
