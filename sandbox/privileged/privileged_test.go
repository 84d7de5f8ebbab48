package privileged

import (
	"errors"
	"fmt"
	"testing"
)

// recordingTB captures how Missing ends a test without ending the real one.
type recordingTB struct {
	testing.TB
	skipped, failed string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}

func TestMissing(t *testing.T) {
	tests := []struct {
		ci                  string
		wantSkip, wantFatal bool
	}{
		{ci: "", wantSkip: true},
		{ci: "false", wantSkip: true},
		{ci: "true", wantFatal: true},
	}
	for _, tt := range tests {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			rec := &recordingTB{TB: t}
			Missing(rec, "NetAdmin", errors.New("operation not permitted"))
			if got := rec.skipped != ""; got != tt.wantSkip {
				t.Errorf("skipped = %q, want skip %v", rec.skipped, tt.wantSkip)
			}
			if got := rec.failed != ""; got != tt.wantFatal {
				t.Errorf("failed = %q, want fatal %v", rec.failed, tt.wantFatal)
			}
			for _, msg := range []string{rec.skipped, rec.failed} {
				if msg != "" && msg != "NetAdmin unavailable: operation not permitted" &&
					msg != "NetAdmin unavailable (CI=true, so not skipping): operation not permitted" {
					t.Errorf("message %q does not name capability and reason", msg)
				}
			}
		})
	}
}

func TestCapabilityString(t *testing.T) {
	for c, want := range map[Capability]string{
		Root: "Root", NetAdmin: "NetAdmin", BPF: "BPF", Loop: "Loop", APIServer: "APIServer", 99: "Capability(99)",
	} {
		if got := c.String(); got != want {
			t.Errorf("Capability(%d).String() = %q, want %q", int(c), got, want)
		}
	}
}

func TestAssetsDirHonoursKubebuilderAssets(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KUBEBUILDER_ASSETS", dir)
	if _, err := AssetsDir(); err == nil {
		t.Fatalf("AssetsDir() with an empty %s: want an error naming the missing binary", dir)
	}
}

// TestPrivilegedProbes runs every probe for real. Each probe is gated by
// Require itself, so on an unprivileged machine the subtests skip, and with
// CI=true they fail.
func TestPrivilegedProbes(t *testing.T) {
	for _, c := range []Capability{Root, NetAdmin, BPF, Loop, APIServer} {
		t.Run(c.String(), func(t *testing.T) {
			Require(t, c)
			// Memoized: a second call agrees with the first.
			if err := probes[c](); err != nil {
				t.Fatalf("second probe of %v: %v", c, err)
			}
		})
	}
}
