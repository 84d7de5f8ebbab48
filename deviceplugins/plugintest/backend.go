package plugintest

import (
	"context"
	"testing"
	"time"

	"github.com/autonode/autonode/deviceplugins"
)

// StartBackend runs b until the test ends and returns the device lists it
// reports, for backend tests that need no kubelet.
func StartBackend(t *testing.T, b deviceplugins.Backend) <-chan []deviceplugins.Device {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan []deviceplugins.Device, 16)
	done := make(chan error, 1)
	go func() {
		done <- b.Run(ctx, func(ds []deviceplugins.Device) {
			select {
			case updates <- ds:
			case <-ctx.Done():
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: Run: %v", b.ResourceName(), err)
		}
	})
	return updates
}

// WaitForUpdate returns the first list from updates that satisfies ok. The
// deadline only stops a hung test; nothing depends on how fast updates come.
func WaitForUpdate(t *testing.T, updates <-chan []deviceplugins.Device, what string, ok func([]deviceplugins.Device) bool) []deviceplugins.Device {
	t.Helper()
	deadline := time.After(WaitTimeout)
	for {
		select {
		case ds := <-updates:
			if ok(ds) {
				return ds
			}
		case <-deadline:
			t.Fatalf("no device list with %s", what)
		}
	}
}
