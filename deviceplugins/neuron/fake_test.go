package neuron

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shape is an instance type's Neuron hardware.
type shape struct {
	name    string
	devices int
	cores   int
	links   func(i int) []int
}

// torus4x4 is the trn1/trn2 device torus. Device 0's neighbours come out as
// "12, 3, 4, 1", as neuron-ls prints them on a trn1.32xlarge.
func torus4x4(i int) []int {
	r, c := i/4, i%4
	return []int{((r+3)%4)*4 + c, r*4 + (c+3)%4, ((r+1)%4)*4 + c, r*4 + (c+1)%4}
}

// ring is the inf2.48xlarge device ring.
func ring(n int) func(int) []int {
	return func(i int) []int { return []int{(i + n - 1) % n, (i + 1) % n} }
}

func noLinks(int) []int { return nil }

// The shapes under test; functions rather than variables so that no test
// can change one for another.
func trn1() shape   { return shape{name: "trn1.32xlarge", devices: 16, cores: 2, links: torus4x4} }
func trn2() shape   { return shape{name: "trn2.48xlarge", devices: 16, cores: 8, links: torus4x4} }
func inf2() shape   { return shape{name: "inf2.48xlarge", devices: 12, cores: 2, links: ring(12)} }
func inf2xl() shape { return shape{name: "inf2.xlarge", devices: 1, cores: 2, links: noLinks} }

// fakeSysfs writes s as the Neuron driver lays it out under a fresh sysfs
// root and returns the root.
func fakeSysfs(t testing.TB, s shape) string {
	t.Helper()
	root := t.TempDir()
	for i := range s.devices {
		dir := filepath.Join(root, deviceDir, fmt.Sprintf("neuron%d", i))
		var links []string
		for _, n := range s.links(i) {
			links = append(links, fmt.Sprint(n))
		}
		// The driver prints no trailing newline on either file.
		writeFile(t, filepath.Join(dir, "core_count"), fmt.Sprint(s.cores))
		writeFile(t, filepath.Join(dir, "connected_devices"), strings.Join(links, ", "))
		writeFile(t, filepath.Join(dir, "reset"), "")
		writeFile(t, filepath.Join(dir, "info", "architecture", "arch_type"), "NCv2\n")
		writeFile(t, filepath.Join(dir, "stats", "hardware", "mem_ecc_uncorrected"), "0\n")
		writeFile(t, filepath.Join(dir, "stats", "hardware", "mem_ecc_repairable_uncorrected"), "0\n")
		writeFile(t, filepath.Join(dir, "stats", "hardware", "sram_ecc_uncorrected"), "0\n")
		for c := range s.cores {
			writeFile(t, filepath.Join(dir, fmt.Sprintf("neuron_core%d", c), "stats", "status", "failure", "total"), "0\n")
		}
	}
	return root
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newBackend(t testing.TB, root string, mode Mode) *Backend {
	t.Helper()
	b, err := New(Options{SysfsRoot: root, Mode: mode, PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPresent(t *testing.T) {
	if got, err := Present(fakeSysfs(t, trn1())); err != nil || !got {
		t.Errorf("Present(trn1) = %v, %v; want true", got, err)
	}
	if got, err := Present(t.TempDir()); err != nil || got {
		t.Errorf("Present(empty sysfs) = %v, %v; want false", got, err)
	}
}
