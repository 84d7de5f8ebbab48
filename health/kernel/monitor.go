// Package kernel is the agent's kernel monitor: it reads the kernel's log
// records from /dev/kmsg, matches each message against a table of rules
// (soft lockups, hung tasks, OOM kills, I/O and filesystem errors, GPU Xids,
// Neuron and EFA hardware errors, ...) and reports every match as a
// health.Signal with Source "kernel".
//
// The monitor resumes where it stopped: it persists a cursor {boot id, last
// sequence} and, after a restart in the same boot, skips the records it has
// already handled; after a reboot it reads the new ring from its start.
// Records the kernel overwrote before they were read are counted and
// reported as KmsgRecordsLost. Delivery is at least once: a signal is
// reported before the cursor that covers it is saved.
package kernel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/autonode/autonode/health"
)

// SignalSource is the Source of every signal this monitor reports.
const SignalSource = "kernel"

// Options configures a Monitor. Zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// Reporter receives the signals. Required.
	Reporter health.Reporter
	// Registerer receives the monitor's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Path is the kernel log to read. Default is /dev/kmsg. A regular file,
	// FIFO or pipe in the same format is read as a stream (for tests).
	Path string
	// BootIDPath holds this boot's id. Default is
	// /proc/sys/kernel/random/boot_id.
	BootIDPath string
	// CursorPath is where the resume cursor is kept. Empty disables resuming:
	// every start reads the ring from its beginning.
	CursorPath string
	// CursorInterval is the longest time the cursor lags the records read
	// when none matched; a matched record saves it at once. Default is 10s.
	CursorInterval time.Duration
	// StartAtEnd skips the records already in the ring when there is no
	// cursor for this boot. Default is false: a first start reports what the
	// ring holds since boot, which is what a node that just came up needs.
	StartAtEnd bool
	// Rules replaces DefaultRules when not nil; an empty slice matches nothing.
	Rules []Rule
	// Open opens Path. Default is Open; tests pass their own Source.
	Open func(path string) (Source, error)
}

// Monitor is the kernel monitor subsystem.
type Monitor struct {
	opts  Options
	log   *slog.Logger
	ready atomic.Bool

	// Carried from one Run to the next, so that a restart by the supervisor
	// neither repeats nor skips records. Only Run touches them.
	loaded   bool   // the cursor file has been consulted
	bootID   string // empty when unknown: then nothing is persisted
	last     uint64 // the sequence of the last record handled
	haveLast bool
	lostNext bool // a read reported lost records; the next record says how many

	read      prometheus.Counter
	matched   *prometheus.CounterVec
	lost      prometheus.Counter
	malformed prometheus.Counter
}

// New builds a Monitor and registers its metrics.
func New(opts Options) (*Monitor, error) {
	if opts.Reporter == nil {
		return nil, errors.New("kernel monitor: no Reporter")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Path == "" {
		opts.Path = "/dev/kmsg"
	}
	if opts.BootIDPath == "" {
		opts.BootIDPath = "/proc/sys/kernel/random/boot_id"
	}
	if opts.CursorInterval <= 0 {
		opts.CursorInterval = 10 * time.Second
	}
	if opts.Rules == nil {
		opts.Rules = DefaultRules()
	}
	if opts.Open == nil {
		opts.Open = Open
	}
	m := &Monitor{opts: opts, log: opts.Logger.With("subsystem", "kernel-monitor", "path", opts.Path)}
	m.read = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "autonode_kernel_kmsg_records_read_total",
		Help: "Kernel log records read from the kmsg source.",
	})
	m.matched = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "autonode_kernel_kmsg_records_matched_total",
		Help: "Kernel log records that matched a rule, by reason.",
	}, []string{"reason"})
	m.lost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "autonode_kernel_kmsg_records_lost_total",
		Help: "Kernel log records overwritten in the ring buffer before the monitor read them.",
	})
	m.malformed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "autonode_kernel_kmsg_records_malformed_total",
		Help: "Kernel log records that could not be parsed.",
	})
	for _, r := range opts.Rules {
		m.matched.WithLabelValues(r.Reason) // export zeros, so rates work from the start
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{m.read, m.matched, m.lost, m.malformed} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering kernel monitor metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Name implements subsystem.Subsystem.
func (m *Monitor) Name() string { return "kernel-monitor" }

// Ready reports nil once the source is open and positioned.
func (m *Monitor) Ready() error {
	if !m.ready.Load() {
		return fmt.Errorf("kernel log %s not open yet", m.opts.Path)
	}
	return nil
}

// Run reads records until ctx ends (nil), the source ends (nil: a finite
// file) or the source fails (an error; the supervisor runs it again).
func (m *Monitor) Run(ctx context.Context) error {
	if !m.loaded {
		m.loadCursor(ctx)
		m.loaded = true
	}
	src, err := m.opts.Open(m.opts.Path)
	if err != nil {
		return err
	}
	defer src.Close()
	// Close is what wakes a Next blocked in read(2).
	stop := context.AfterFunc(ctx, func() { src.Close() })
	defer stop()
	if !m.haveLast && m.opts.StartAtEnd {
		if s, ok := src.(interface{ SeekEnd() error }); ok {
			if err := s.SeekEnd(); err != nil {
				return err
			}
		}
	}
	m.ready.Store(true)
	defer m.ready.Store(false)

	lastSave := time.Now()
	dirty := false
	for {
		raw, err := src.Next()
		if ctx.Err() != nil {
			m.saveCursor(dirty)
			return nil
		}
		switch {
		case err == nil:
		case errors.Is(err, ErrRecordsLost):
			m.lostNext = true
			continue
		case errors.Is(err, io.EOF):
			m.saveCursor(dirty)
			m.log.Info("kernel log ended")
			return nil
		default:
			m.saveCursor(dirty)
			return err
		}
		m.read.Inc()
		rec, err := ParseRecord(raw)
		if err != nil {
			m.malformed.Inc()
			m.log.Warn("skipping malformed kernel log record", "err", err)
			continue
		}
		if m.haveLast && rec.Sequence <= m.last {
			continue // handled before a restart
		}
		m.checkLoss(ctx, rec.Sequence)
		m.last, m.haveLast, dirty = rec.Sequence, true, true

		if m.handle(ctx, rec) || time.Since(lastSave) >= m.opts.CursorInterval {
			// A signal saves at once, so that a restart does not repeat it.
			m.saveCursor(dirty)
			lastSave, dirty = time.Now(), false
		}
	}
}

// handle matches rec against the rules and reports a match.
func (m *Monitor) handle(ctx context.Context, rec Record) bool {
	mt, ok := apply(m.opts.Rules, rec.Message)
	if !ok {
		return false
	}
	m.matched.WithLabelValues(mt.rule.Reason).Inc()
	msg := fmt.Sprintf("%s (kernel time %s, seq %d", mt.detail, formatTimestamp(rec.Timestamp), rec.Sequence)
	if dev := rec.Dict["DEVICE"]; dev != "" {
		msg += ", device " + dev
	}
	msg += ")"
	m.opts.Reporter.Report(ctx, health.Signal{
		Source:    SignalSource,
		Condition: mt.rule.Condition,
		Reason:    mt.rule.Reason,
		Severity:  mt.severity,
		Message:   msg,
	})
	return true
}

// checkLoss counts records missing before seq: a gap in the sequence (the
// ring wrapped while the monitor was down) or a read that failed with EPIPE
// (it wrapped while the monitor was reading).
func (m *Monitor) checkLoss(ctx context.Context, seq uint64) {
	var n uint64
	if m.haveLast && seq > m.last+1 {
		n = seq - m.last - 1
	}
	if m.lostNext && n == 0 {
		n = 1 // a source that cannot say how many: at least one
	}
	m.lostNext = false
	if n == 0 {
		return
	}
	m.lost.Add(float64(n))
	m.log.Warn("kernel log records lost", "count", n, "sequence", seq)
	m.opts.Reporter.Report(ctx, health.Signal{
		Source:    SignalSource,
		Condition: health.KernelReady,
		Reason:    health.ReasonKmsgRecordsLost,
		Severity:  health.Info, // the catalogue's: nothing is wrong with the node
		Message: fmt.Sprintf("%d kernel log records were overwritten before the monitor read them (before seq %d); "+
			"problems they reported were missed", n, seq),
	})
}

// loadCursor positions the monitor from the cursor file, once per process.
func (m *Monitor) loadCursor(ctx context.Context) {
	id, err := readBootID(m.opts.BootIDPath)
	if err != nil {
		// Without a boot id a cursor could skip a new boot's records.
		m.log.Warn("not resuming or saving the kernel log cursor", "err", err)
		return
	}
	m.bootID = id
	if m.opts.CursorPath == "" {
		return
	}
	c, ok, err := loadCursor(m.opts.CursorPath)
	switch {
	case errors.Is(err, errCursorCorrupt):
		health.ReportCorruptState(ctx, m.log, m.opts.Reporter, health.Signal{
			Source: SignalSource, Condition: health.KernelReady, Reason: ReasonCursorCorrupted, Severity: health.Info,
		}, m.opts.CursorPath, "kernel log cursor", "reading the kernel log from its start", err, quarantineCursor)
	case err != nil:
		m.log.Error("reading the kernel log cursor; reading the kernel log from its start", "err", err)
	case !ok:
	case c.BootID != id:
		m.log.Info("kernel log cursor is from another boot; reading the kernel log from its start",
			"cursor_boot_id", c.BootID, "boot_id", id)
	default:
		m.last, m.haveLast = c.Sequence, true
		m.log.Info("resuming the kernel log after the cursor", "sequence", c.Sequence)
	}
}

func (m *Monitor) saveCursor(dirty bool) {
	if !dirty || !m.haveLast || m.bootID == "" || m.opts.CursorPath == "" {
		return
	}
	if err := saveCursor(m.opts.CursorPath, cursor{BootID: m.bootID, Sequence: m.last}); err != nil {
		// Not fatal: a restart would repeat some signals, not lose them.
		m.log.Error("saving the kernel log cursor", "sequence", m.last, "err", err)
	}
}

// formatTimestamp writes a time since boot as dmesg does: seconds.micros.
func formatTimestamp(d time.Duration) string {
	us := d.Microseconds()
	return fmt.Sprintf("%d.%06ds", us/1e6, us%1e6)
}
