// Package journal is the agent's journal monitor: it follows the kubelet's
// and containerd's entries in the systemd journal (through libsystemd, via
// go-systemd's sdjournal), matches each MESSAGE against a table of rules for
// known problems (a stalled PLEG, failed container creates and mounts, a
// full disk, file descriptor exhaustion) and reports every match as a
// health.Signal with Source "journal".
//
// The monitor resumes where it stopped: it persists the journal cursor of
// the last entry it handled (written atomically), and skips up to it after a
// restart. Delivery is at least once: a signal is reported before the cursor
// that covers it is saved. A node without a journal gets a disabled monitor
// that says so once and otherwise idles; corrupt or truncated journal files,
// which libsystemd skips silently, are found by the monitor and reported.
package journal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/sdjournal"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/autonode/autonode/health"
)

// SignalSource is the Source of every signal this monitor reports.
const SignalSource = "journal"

// Options configures a Monitor. Zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// Reporter receives the signals. Required.
	Reporter health.Reporter
	// Registerer receives the monitor's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Units are the systemd units whose entries are read (matched on
	// _SYSTEMD_UNIT). Default is kubelet.service and containerd.service.
	Units []string
	// Directory, when set, reads the journal files in that folder (and its
	// subfolders one level down) instead of the system journal.
	Directory string
	// SystemDirs are where the system journal keeps its files; they are
	// checked for corrupt files, and when none holds a journal file the
	// monitor is disabled. Default is /run/log/journal and /var/log/journal.
	// Unused when Directory is set.
	SystemDirs []string
	// CursorPath is where the resume cursor is kept. Empty disables
	// resuming: every start reads from the beginning (or the end, with
	// StartAtEnd).
	CursorPath string
	// StartAtEnd skips the entries already in the journal when there is no
	// cursor. Default is false: a first start reports what the journal holds.
	StartAtEnd bool
	// CursorInterval is the longest time the saved cursor lags the entries
	// read when none matched; a match saves it at once. Default is 10s.
	CursorInterval time.Duration
	// WaitTimeout bounds each wait for new entries, and so how long Run
	// takes to notice that ctx ended. Default is 1s.
	WaitTimeout time.Duration
	// Rules replaces DefaultRules when not nil; an empty slice matches nothing.
	Rules []Rule
}

// Monitor is the journal monitor subsystem.
type Monitor struct {
	opts     Options
	log      *slog.Logger
	ready    atomic.Bool
	disabled atomic.Bool

	// Carried from one Run to the next; only Run touches them.
	loaded   bool
	cursor   string          // of the last entry handled
	badFiles map[string]bool // path + size, reported already

	read     prometheus.Counter
	matched  *prometheus.CounterVec
	failures prometheus.Counter
}

// New builds a Monitor and registers its metrics.
func New(opts Options) (*Monitor, error) {
	if opts.Reporter == nil {
		return nil, errors.New("journal monitor: no Reporter")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if len(opts.Units) == 0 {
		opts.Units = []string{"kubelet.service", "containerd.service"}
	}
	if opts.SystemDirs == nil {
		opts.SystemDirs = []string{"/run/log/journal", "/var/log/journal"}
	}
	if opts.CursorInterval <= 0 {
		opts.CursorInterval = 10 * time.Second
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = time.Second
	}
	if opts.Rules == nil {
		opts.Rules = DefaultRules()
	}
	m := &Monitor{opts: opts, log: opts.Logger.With("subsystem", "journal-monitor"), badFiles: map[string]bool{}}
	m.read = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "autonode_journal_entries_read_total",
		Help: "Journal entries of the monitored units read.",
	})
	m.matched = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "autonode_journal_entries_matched_total",
		Help: "Journal entries that matched a rule, by reason.",
	}, []string{"reason"})
	m.failures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "autonode_journal_read_errors_total",
		Help: "Journal files or entries that could not be read.",
	})
	for _, r := range opts.Rules {
		m.matched.WithLabelValues(r.Reason)
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{m.read, m.matched, m.failures} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering journal monitor metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Name implements subsystem.Subsystem.
func (m *Monitor) Name() string { return "journal-monitor" }

// Ready reports nil once the journal is open and positioned, or once the
// monitor found there is no journal and disabled itself.
func (m *Monitor) Ready() error {
	if !m.ready.Load() && !m.disabled.Load() {
		return errors.New("journal not open yet")
	}
	return nil
}

// Disabled reports whether the monitor found no journal to read.
func (m *Monitor) Disabled() bool { return m.disabled.Load() }

func (m *Monitor) dirs() []string {
	if m.opts.Directory != "" {
		return []string{m.opts.Directory}
	}
	return m.opts.SystemDirs
}

// Run follows the journal until ctx ends. With no journal it reports itself
// disabled and waits for ctx. An error return (the journal could not be
// positioned or waited on) makes the supervisor run it again.
func (m *Monitor) Run(ctx context.Context) error {
	j, err := m.open()
	if err != nil {
		m.disable(ctx, err)
		<-ctx.Done()
		return nil
	}
	defer j.Close()
	m.disabled.Store(false)
	if !m.loaded {
		m.loadCursor(ctx)
		m.loaded = true
	}
	if err := m.position(j); err != nil {
		return err
	}
	m.ready.Store(true)
	defer m.ready.Store(false)

	saved := m.cursor
	lastSave := time.Now()
	save := func() {
		if m.cursor != saved && m.opts.CursorPath != "" {
			if err := saveCursor(m.opts.CursorPath, m.cursor); err != nil {
				// Not fatal: a restart would repeat some signals, not lose them.
				m.log.Error("saving the journal cursor", "err", err)
				return
			}
			saved, lastSave = m.cursor, time.Now()
		}
	}
	defer save()
	for ctx.Err() == nil {
		n, err := j.Next()
		if err != nil {
			m.readError(ctx, "", fmt.Errorf("advancing in the journal: %w", err))
			if r := j.Wait(m.opts.WaitTimeout); r < 0 {
				return fmt.Errorf("waiting on the journal: errno %d", -r)
			}
			continue
		}
		if n == 0 {
			save()
			switch r := j.Wait(m.opts.WaitTimeout); {
			case r < 0:
				return fmt.Errorf("waiting on the journal: errno %d", -r)
			case r == sdjournal.SD_JOURNAL_INVALIDATE:
				m.checkFiles(ctx) // files were added or removed
			}
			continue
		}
		e, err := j.GetEntry()
		if err != nil {
			// One bad entry: report it and go on to the next.
			m.readError(ctx, "", fmt.Errorf("reading a journal entry after cursor %q: %w", m.cursor, err))
			continue
		}
		m.read.Inc()
		m.cursor = e.Cursor
		if m.handle(ctx, e) || time.Since(lastSave) >= m.opts.CursorInterval {
			save() // a signal saves at once, so that a restart does not repeat it
		}
	}
	return nil
}

// open opens the journal with a match on the units, and checks its files.
// A journal without files is an error: there is nothing to follow.
func (m *Monitor) open() (*sdjournal.Journal, error) {
	var files int
	for _, d := range m.dirs() {
		fs, err := journalFiles(d)
		if err != nil {
			return nil, err
		}
		files += len(fs)
	}
	if files == 0 {
		return nil, fmt.Errorf("no journal files in %v", m.dirs())
	}
	var j *sdjournal.Journal
	var err error
	if m.opts.Directory != "" {
		j, err = sdjournal.NewJournalFromDir(m.opts.Directory)
	} else {
		j, err = sdjournal.NewJournal()
	}
	if err != nil {
		return nil, fmt.Errorf("opening the journal: %w", err)
	}
	for _, u := range m.opts.Units {
		// Matches on one field are ORed by libsystemd.
		if err := j.AddMatch("_SYSTEMD_UNIT=" + u); err != nil {
			j.Close()
			return nil, fmt.Errorf("matching journal unit %s: %w", u, err)
		}
	}
	m.checkFiles(context.Background())
	return j, nil
}

// disable reports, once per Run, that there is nothing to read.
func (m *Monitor) disable(ctx context.Context, err error) {
	m.disabled.Store(true)
	msg := fmt.Sprintf("journal monitor disabled: %v; kubelet and containerd logs are not watched", err)
	m.log.Warn(msg)
	m.opts.Reporter.Report(ctx, health.Signal{
		Source: SignalSource, Condition: health.ContainerRuntimeReady, Reason: ReasonJournalDisabled,
		Severity: health.Info, Message: msg,
	})
}

// position seeks to just after the saved cursor, or to the head (or tail).
func (m *Monitor) position(j *sdjournal.Journal) error {
	if m.cursor == "" {
		if m.opts.StartAtEnd {
			if err := j.SeekTail(); err != nil {
				return fmt.Errorf("seeking to the journal's end: %w", err)
			}
			// After SeekTail, Previous lands on the last entry, so that the
			// next Next returns only what is appended from now on.
			if _, err := j.Previous(); err != nil {
				return fmt.Errorf("seeking to the journal's end: %w", err)
			}
			return nil
		}
		if err := j.SeekHead(); err != nil {
			return fmt.Errorf("seeking to the journal's start: %w", err)
		}
		return nil
	}
	if err := j.SeekCursor(m.cursor); err != nil {
		return fmt.Errorf("seeking to journal cursor %q: %w", m.cursor, err)
	}
	// SeekCursor places the read pointer near the entry: step onto it, and
	// if it is the one already handled, the loop's Next moves past it. If
	// that entry is gone (vacuumed), the one we land on is new: step back.
	n, err := j.Next()
	if err != nil {
		return fmt.Errorf("seeking to journal cursor %q: %w", m.cursor, err)
	}
	if n > 0 && j.TestCursor(m.cursor) != nil {
		if _, err := j.Previous(); err != nil {
			return fmt.Errorf("seeking to journal cursor %q: %w", m.cursor, err)
		}
	}
	m.log.Info("resuming the journal after the cursor", "cursor", m.cursor)
	return nil
}

// handle matches e against the rules and reports a match.
func (m *Monitor) handle(ctx context.Context, e *sdjournal.JournalEntry) bool {
	unit := e.Fields["_SYSTEMD_UNIT"]
	mt, ok := apply(m.opts.Rules, unit, e.Fields["MESSAGE"])
	if !ok {
		return false
	}
	m.matched.WithLabelValues(mt.rule.Reason).Inc()
	when := time.UnixMicro(int64(e.RealtimeTimestamp)).UTC().Format(time.RFC3339)
	m.opts.Reporter.Report(ctx, health.Signal{
		Source:    SignalSource,
		Condition: mt.rule.Condition,
		Reason:    mt.rule.Reason,
		Severity:  mt.rule.Severity,
		Message:   fmt.Sprintf("%s: %s (logged %s)", unit, truncate(mt.detail, 300), when),
	})
	return true
}

// checkFiles reports journal files that libsystemd will skip, once each.
func (m *Monitor) checkFiles(ctx context.Context) {
	for _, d := range m.dirs() {
		files, err := journalFiles(d)
		if err != nil {
			m.readError(ctx, d, err)
			continue
		}
		for _, f := range files {
			if err := checkFile(f); err != nil {
				m.readError(ctx, f, err)
			}
		}
	}
}

// readError logs and reports a read problem; one keyed by a file is
// reported once per file state.
func (m *Monitor) readError(ctx context.Context, key string, err error) {
	if key != "" {
		key += " " + err.Error()
		if m.badFiles[key] {
			return
		}
		m.badFiles[key] = true
	}
	m.failures.Inc()
	m.log.Error("journal read error; continuing", "err", err)
	m.opts.Reporter.Report(ctx, health.Signal{
		Source: SignalSource, Condition: health.ContainerRuntimeReady, Reason: ReasonJournalReadError,
		Severity: health.Info, Message: fmt.Sprintf("%v; entries in it are skipped, so problems logged there may be missed", err),
	})
}

// loadCursor restores the cursor, once per process. A corrupt file is kept
// aside as .bad and reported, and reading starts afresh.
func (m *Monitor) loadCursor(ctx context.Context) {
	if m.opts.CursorPath == "" {
		return
	}
	c, ok, err := loadCursor(m.opts.CursorPath)
	switch {
	case errors.Is(err, errCursorCorrupt):
		health.ReportCorruptState(ctx, m.log, m.opts.Reporter, health.Signal{
			Source: SignalSource, Condition: health.ContainerRuntimeReady, Reason: ReasonJournalCursorCorrupted, Severity: health.Info,
		}, m.opts.CursorPath, "journal cursor", "reading the journal afresh", err, quarantineCursor)
	case err != nil:
		m.log.Error("reading the journal cursor; reading the journal afresh", "err", err)
	case ok:
		m.cursor = c
	}
}
