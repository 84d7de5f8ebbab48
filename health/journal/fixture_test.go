package journal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autonode/autonode/health"
	"github.com/autonode/autonode/sandbox/privileged"
)

// entry is one journal entry for a fixture.
type entry struct {
	unit, msg string
}

const fixtureBootID = "0123456789abcdef0123456789abcdef"

// journalRemote finds systemd-journal-remote, which lives outside $PATH on
// Debian.
func journalRemote(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("systemd-journal-remote"); err == nil {
		return p
	}
	var errs []error
	for _, p := range []string{"/usr/lib/systemd/systemd-journal-remote", "/lib/systemd/systemd-journal-remote"} {
		_, err := os.Stat(p)
		if err == nil {
			return p
		}
		errs = append(errs, err)
	}
	privileged.Missing(t, "systemd-journal-remote (package systemd-journal-remote)", errors.Join(errs...))
	return ""
}

// writeJournal writes entries as a journal file at path, through
// systemd-journal-remote reading the export format on stdin. start numbers
// the entries' timestamps, so that later fixtures sort after earlier ones.
// The file is written beside path and renamed into place, so that a
// monitor following the folder never sees it half written.
func writeJournal(t *testing.T, path string, start int, entries []entry) {
	t.Helper()
	bin := journalRemote(t)
	var in bytes.Buffer
	for i, e := range entries {
		n := start + i
		fmt.Fprintf(&in, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=%s\n_HOSTNAME=fixture\n",
			1_700_000_000_000_000+int64(n)*1_000_000, 1_000_000+int64(n)*1_000_000, fixtureBootID)
		if e.unit != "" {
			fmt.Fprintf(&in, "_SYSTEMD_UNIT=%s\n", e.unit)
		}
		fmt.Fprintf(&in, "MESSAGE=%s\n\n", e.msg)
	}
	tmp := filepath.Join(t.TempDir(), filepath.Base(path))
	cmd := exec.Command(bin, "--output="+tmp, "-")
	cmd.Stdin = &in
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s --output=%s: %v\n%s", bin, tmp, err, out)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(tmp)
	if err != nil {
		t.Fatal(err)
	}
	// Copy to the target folder's filesystem, then rename there.
	staged := path + ".staging"
	if err := os.WriteFile(staged, b, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(staged, path); err != nil {
		t.Fatal(err)
	}
}

func count(reason string, n int) func([]health.Signal) bool {
	return func(ss []health.Signal) bool { return len(byReason(ss, reason)) >= n }
}

func byReason(ss []health.Signal, reason string) []health.Signal {
	var out []health.Signal
	for _, s := range ss {
		if s.Reason == reason {
			out = append(out, s)
		}
	}
	return out
}

// problems drops the monitor's reports about itself.
func problems(ss []health.Signal) []health.Signal {
	var out []health.Signal
	for _, s := range ss {
		switch s.Reason {
		case ReasonJournalReadError, ReasonJournalCursorCorrupted, ReasonJournalDisabled:
		default:
			out = append(out, s)
		}
	}
	return out
}

// running is a monitor running in the background.
type running struct {
	m    *Monitor
	stop func() error
}

func start(t *testing.T, opts Options) running {
	t.Helper()
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { _ = stop() })
	return running{m: m, stop: stop}
}

// waitReady waits for m.Ready; a hang guard, not a timing assertion.
func waitReady(t *testing.T, m *Monitor) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for m.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("monitor never ready: %v", m.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func messages(ss []health.Signal) string {
	var b strings.Builder
	for _, s := range ss {
		fmt.Fprintf(&b, "\n  %s %s %v: %s", s.Reason, s.Condition, s.Severity, s.Message)
	}
	return b.String()
}
