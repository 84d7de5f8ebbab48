package instancestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/autonode/autonode/health"
)

// Verifier is the daemon's side of the instance store: a subsystem that
// re-checks what setup left, reports StorageReady signals, and is ready
// only while the check passes, so a node whose images and pod data would
// land on the root disk keeps its startup taint. It never mounts.
type Verifier struct {
	opts     Options
	interval time.Duration
	reporter health.Reporter
	log      *slog.Logger

	mu      sync.Mutex
	checked bool
	lastErr error
	failing bool // a failure was reported and not yet cleared
}

// NewVerifier returns a Verifier that checks every interval (default 1m)
// and reports to reporter (nil reports nothing).
func NewVerifier(opts Options, interval time.Duration, reporter health.Reporter) *Verifier {
	if interval <= 0 {
		interval = time.Minute
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Verifier{opts: opts, interval: interval, reporter: reporter, log: log.With("subsystem", "instance-store")}
}

// Name implements subsystem.Subsystem.
func (v *Verifier) Name() string { return "instance-store" }

// Run checks at once, then every interval, until ctx ends.
func (v *Verifier) Run(ctx context.Context) error {
	t := time.NewTicker(v.interval)
	defer t.Stop()
	for {
		v.Check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Check verifies once, records the result for Ready and reports a signal
// when it fails, and a cleared one when it passes again.
func (v *Verifier) Check(ctx context.Context) error {
	res, err := Verify(ctx, v.opts)
	v.mu.Lock()
	wasFailing := v.failing
	v.checked, v.lastErr, v.failing = true, err, err != nil
	v.mu.Unlock()
	switch {
	case err != nil:
		v.log.Error("instance store check failed", "err", err)
		v.report(ctx, health.Signal{Severity: health.Fatal, Message: err.Error()})
	case wasFailing:
		v.log.Info("instance store check passes again", "layout", res.Layout, "device", res.Target)
		v.report(ctx, health.Signal{Severity: health.Info, Cleared: true,
			Message: fmt.Sprintf("instance store in place (%s on %s)", res.Layout, res.Target)})
	}
	return err
}

func (v *Verifier) report(ctx context.Context, s health.Signal) {
	if v.reporter == nil {
		return
	}
	s.Source, s.Condition, s.Reason = v.Name(), health.StorageReady, health.ReasonInstanceStoreNotMounted
	v.reporter.Report(ctx, s)
}

// Ready implements subsystem.Subsystem: nil once a check has passed and
// while the last one did.
func (v *Verifier) Ready() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.checked {
		return errors.New("instance store not checked yet")
	}
	return v.lastErr
}
