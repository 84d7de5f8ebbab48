// Package backoff gives the agent one shape of retry delay, so that every
// retry loop (IMDS, the apiserver, subsystem restarts) behaves alike: start
// at an initial wait and double it each time up to a cap, then add up to 10%
// jitter so that many nodes do not retry in step.
package backoff

import (
	"context"
	"math"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// New returns capped exponential backoff; call Step for each next delay.
func New(initial, max time.Duration) wait.Backoff {
	return wait.Backoff{Duration: initial, Factor: 2, Jitter: 0.1, Steps: math.MaxInt32, Cap: max}
}

// Sleep waits for d, or returns ctx.Err() as soon as ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
