package subsystem

import (
	"errors"
	"sync"
)

// Readiness is a concurrency-safe readiness flag with a reason, for
// subsystems to embed and satisfy the Ready half of Subsystem.
type Readiness struct {
	mu  sync.Mutex
	err error
}

// NewReadiness returns a Readiness that is not ready, for the given reason.
func NewReadiness(reason string) *Readiness {
	return &Readiness{err: errors.New(reason)}
}

// SetReady marks the subsystem ready.
func (r *Readiness) SetReady() { r.set(nil) }

// SetNotReady marks the subsystem not ready, for reason err.
func (r *Readiness) SetNotReady(err error) { r.set(err) }

func (r *Readiness) set(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// Ready returns nil when ready, or why not.
func (r *Readiness) Ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}
