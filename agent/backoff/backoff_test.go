package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestNewGrowsAndIsCapped(t *testing.T) {
	b := New(10*time.Millisecond, 40*time.Millisecond)
	for i, want := range []time.Duration{10, 20, 40, 40, 40} {
		want *= time.Millisecond
		if d := b.Step(); d < want || d > want+want/10 {
			t.Errorf("step %d: %s, want %s plus at most 10%% jitter", i+1, d, want)
		}
	}
}

func TestSleepStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep on a cancelled context = %v, want context.Canceled", err)
	}
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Errorf("Sleep = %v, want nil", err)
	}
}
