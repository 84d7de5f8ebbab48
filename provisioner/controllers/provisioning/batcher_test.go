package provisioning

import (
	"context"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// settle blocks until the batcher has taken the pending trigger and waits
// on its two timers (idle and max), or has returned, so that a Step lands
// on the timers it means to.
func settle(b *Batcher, c *clocktesting.FakeClock, done chan bool) {
	for len(done) == 0 && (len(b.trigger) > 0 || c.Waiters() != 2) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(5 * time.Millisecond) // from receiving a trigger to the new idle timer
}

func TestBatcherClosesAfterIdle(t *testing.T) {
	t.Parallel()
	c := clocktesting.NewFakeClock(time.Unix(0, 0))
	b := NewBatcher(c, time.Second, 10*time.Second)
	done := make(chan bool, 1)
	b.Trigger()
	go func() { done <- b.Wait(t.Context()) }()
	settle(b, c, done)
	// Triggers keep the batch open past several idle periods...
	for range 3 {
		c.Step(900 * time.Millisecond)
		b.Trigger()
		settle(b, c, done)
		select {
		case <-done:
			t.Fatal("batch closed while triggers kept coming")
		default:
		}
	}
	// ...and a full idle period closes it.
	c.Step(time.Second)
	if !<-done {
		t.Fatal("Wait = false, want true")
	}
}

func TestBatcherClosesAtMax(t *testing.T) {
	t.Parallel()
	c := clocktesting.NewFakeClock(time.Unix(0, 0))
	b := NewBatcher(c, time.Second, 3*time.Second)
	done := make(chan bool, 1)
	b.Trigger()
	go func() { done <- b.Wait(t.Context()) }()
	settle(b, c, done)
	for i := 0; ; i++ {
		c.Step(600 * time.Millisecond)
		select {
		case ok := <-done:
			if !ok {
				t.Fatal("Wait = false, want true")
			}
			if elapsed := time.Duration(i+1) * 600 * time.Millisecond; elapsed < 3*time.Second {
				t.Fatalf("batch closed after %s, before the 3s max", elapsed)
			}
			return
		default:
		}
		if i > 10 {
			t.Fatal("batch never closed although triggers passed the max")
		}
		b.Trigger()
		settle(b, c, done)
	}
}

func TestBatcherWaitsForFirstTrigger(t *testing.T) {
	t.Parallel()
	c := clocktesting.NewFakeClock(time.Unix(0, 0))
	b := NewBatcher(c, time.Second, 10*time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan bool, 1)
	go func() { done <- b.Wait(ctx) }()
	c.Step(time.Hour) // no trigger: nothing to close
	select {
	case <-done:
		t.Fatal("Wait returned without a trigger")
	default:
	}
	cancel()
	if <-done {
		t.Fatal("Wait = true after cancel, want false")
	}
}
