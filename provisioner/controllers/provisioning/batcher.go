package provisioning

import (
	"context"
	"time"

	"k8s.io/utils/clock"
)

// Batcher gathers triggers into batches: a batch opens at the first trigger
// and closes once no trigger has come for IdleDuration, or MaxDuration after
// it opened, whichever is first. Pods that turn pending together are then
// scheduled together, which packs them better than one at a time.
type Batcher struct {
	clock   clock.Clock
	idle    time.Duration
	max     time.Duration
	trigger chan struct{}
}

// NewBatcher returns a batcher on the given clock; k8s.io/utils/clock's
// RealClock in production, a fake one in tests.
func NewBatcher(c clock.Clock, idle, max time.Duration) *Batcher {
	return &Batcher{clock: c, idle: idle, max: max, trigger: make(chan struct{}, 1)}
}

// Trigger opens a batch or keeps the open one going. It never blocks.
func (b *Batcher) Trigger() {
	select {
	case b.trigger <- struct{}{}:
	default: // one is already waiting to be seen
	}
}

// Wait blocks until a batch has opened and closed. It returns false when
// ctx ends first.
func (b *Batcher) Wait(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-b.trigger:
	}
	maxTimer := b.clock.NewTimer(b.max)
	defer maxTimer.Stop()
	for {
		// A fresh idle timer per trigger: resetting one races with a value
		// it already delivered.
		idle := b.clock.NewTimer(b.idle)
		select {
		case <-ctx.Done():
			idle.Stop()
			return false
		case <-b.trigger:
			idle.Stop()
		case <-idle.C():
			return true
		case <-maxTimer.C():
			idle.Stop()
			return true
		}
	}
}
