// Package healthtest gives tests a health.Reporter that keeps what it is
// told, so that each package's tests can check the signals it sends.
package healthtest

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/autonode/autonode/health"
)

// Recorder is a health.Reporter that records every signal. The zero value
// is ready to use; it is safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	signals []health.Signal
}

// Report implements health.Reporter.
func (r *Recorder) Report(_ context.Context, s health.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.signals = append(r.signals, s)
}

// Signals returns a copy of every signal so far.
func (r *Recorder) Signals() []health.Signal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.signals)
}

// Take returns the signals so far and forgets them.
func (r *Recorder) Take() []health.Signal {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.signals
	r.signals = nil
	return out
}

// WaitFor waits until cond accepts the signals so far and returns them. The
// deadline (60s) only turns a hang into a failure.
func (r *Recorder) WaitFor(tb testing.TB, what string, cond func([]health.Signal) bool) []health.Signal {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if got := r.Signals(); cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			tb.Fatalf("gave up waiting for %s; got %+v", what, r.Signals())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
