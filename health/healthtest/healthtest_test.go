package healthtest

import (
	"context"
	"testing"

	"github.com/autonode/autonode/health"
)

func TestRecorder(t *testing.T) {
	var r Recorder
	go r.Report(context.Background(), health.Signal{Reason: "A"})
	got := r.WaitFor(t, "signal A", func(s []health.Signal) bool { return len(s) == 1 })
	if got[0].Reason != "A" {
		t.Errorf("got %+v", got)
	}
	r.Report(context.Background(), health.Signal{Reason: "B"})
	if taken := r.Take(); len(taken) != 2 || taken[1].Reason != "B" {
		t.Errorf("Take() = %+v", taken)
	}
	if left := r.Signals(); len(left) != 0 {
		t.Errorf("after Take: %+v", left)
	}
}
