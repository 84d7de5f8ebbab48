// Package console writes a compact node-health summary to the serial
// console when the node has lost contact with the apiserver, so that an
// operator can still read why the node is unhealthy with EC2
// GetConsoleOutput. Writes are rate-limited (once per Interval), every line
// starts with "autonode-health:" so that it can be grepped out of the boot
// log, and one summary is bounded to MaxBytes.
package console

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/utils/clock"
)

// Summary is what the node knows about its health while it cannot tell the
// apiserver.
type Summary struct {
	Node string
	// LostSince is when writes to the apiserver started failing.
	LostSince    time.Time
	FailedWrites int
	Conditions   []Condition
	Problems     []Problem
	// Errors are the last write errors, oldest first.
	Errors []Error
}

// Condition is one node condition as the node sees it.
type Condition struct {
	Type    string
	Status  string // True or False
	Reason  string
	Message string
	Since   time.Time
}

// Problem is an active reason.
type Problem struct {
	Reason    string
	Condition string
	Severity  string
	Count     int
	Last      time.Time
	Message   string
}

// Error is one failed write.
type Error struct {
	Time time.Time
	Err  string
}

// Options configures a Writer. Zero values take the defaults.
type Options struct {
	// Path is the serial console. Default /dev/ttyS0.
	Path string
	// Interval is the least time between two summaries. Default 1m.
	Interval time.Duration
	// MaxBytes bounds one summary. Default 4096.
	MaxBytes int
	Clock    clock.PassiveClock
	Logger   *slog.Logger
}

// Writer writes summaries to the console, at most once per Interval. It is
// safe for concurrent use.
type Writer struct {
	opts Options

	mu   sync.Mutex
	last time.Time
}

// New returns a Writer; the console is opened on each write, so a missing
// device only fails that write.
func New(opts Options) *Writer {
	if opts.Path == "" {
		opts.Path = "/dev/ttyS0"
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Minute
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 4096
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Writer{opts: opts}
}

// Write writes s unless a summary was written less than Interval ago. It
// reports whether it wrote.
func (w *Writer) Write(s Summary) (bool, error) {
	now := w.opts.Clock.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.last.IsZero() && now.Sub(w.last) < w.opts.Interval {
		return false, nil
	}
	// Counted even if the write fails, so a broken console is not retried
	// on every failed API write.
	w.last = now
	text := Format(s, now, w.opts.MaxBytes)
	// O_NOCTTY: opening a tty must never make it the agent's controlling
	// terminal. O_CREATE lets tests and non-serial paths use a plain file.
	f, err := os.OpenFile(w.opts.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOCTTY, 0o600)
	if err != nil {
		return false, fmt.Errorf("opening console %s: %w", w.opts.Path, err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		return false, fmt.Errorf("writing health summary to console %s: %w", w.opts.Path, err)
	}
	w.opts.Logger.Info("wrote health summary to the console", "path", w.opts.Path, "bytes", len(text))
	return true, nil
}

// Format renders s as lines prefixed "autonode-health:", cut to limit bytes.
func Format(s Summary, now time.Time, limit int) string {
	var b strings.Builder
	line := func(format string, args ...any) {
		fmt.Fprintf(&b, "autonode-health: "+format+"\r\n", args...)
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	line("%s node=%s apiserver unreachable since %s (%d failed writes)", ts(now), orDash(s.Node), ts(s.LostSince), s.FailedWrites)
	for _, c := range s.Conditions {
		if c.Status == "True" {
			line("  %s=True", c.Type)
			continue
		}
		line("  %s=%s %s since %s: %s", c.Type, c.Status, c.Reason, ts(c.Since), oneLine(c.Message, 160))
	}
	for _, p := range s.Problems {
		line("  problem %s (%s, %s) x%d last %s: %s", p.Reason, orDash(p.Condition), p.Severity, p.Count, ts(p.Last), oneLine(p.Message, 160))
	}
	for _, e := range s.Errors {
		line("  error %s: %s", ts(e.Time), oneLine(e.Err, 200))
	}
	out := b.String()
	if len(out) > limit {
		const cut = "autonode-health: (cut)\r\n"
		out = out[:limit-len(cut)]
		if i := strings.LastIndex(out, "\n"); i >= 0 {
			out = out[:i+1]
		}
		out += cut
	}
	return out
}

func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
