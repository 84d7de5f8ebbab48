package kernel

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/autonode/autonode/sandbox/privileged"
)

// TestPrivilegedKmsgSmoke opens the real /dev/kmsg read-only, positions at
// its end and reads for a short while. Other writers may log meanwhile, so
// records are allowed, but each must parse, and nothing may fail until the
// source is closed.
func TestPrivilegedKmsgSmoke(t *testing.T) {
	src, err := Open("/dev/kmsg")
	if err != nil {
		privileged.Missing(t, "/dev/kmsg", err)
		return
	}
	dev, ok := src.(*DeviceSource)
	if !ok {
		t.Fatalf("Open(/dev/kmsg) = %T, want *DeviceSource (is /dev/kmsg a character device?)", src)
	}
	defer dev.Close()
	if err := dev.SeekEnd(); err != nil {
		t.Fatal(err)
	}
	stop := time.AfterFunc(300*time.Millisecond, func() { dev.Close() })
	defer stop.Stop()
	for {
		b, err := dev.Next()
		if errors.Is(err, os.ErrClosed) {
			return // the wait ended with no error
		}
		if err != nil {
			t.Fatalf("reading /dev/kmsg: %v", err)
		}
		if _, err := ParseRecord(b); err != nil {
			t.Errorf("a live record does not parse: %v", err)
		}
	}
}
