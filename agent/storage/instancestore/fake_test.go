package instancestore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// fakeRunner answers blkid from a table of signatures and records every
// call; handlers may script other tools. Tools it has no answer for fail
// the test.
type fakeRunner struct {
	t *testing.T

	mu    sync.Mutex
	sigs  map[string]Signature // blkid's answer per device; absent means blank
	calls [][]string
	// handle scripts tools other than blkid; nil answers success.
	handle func(name string, args []string) ([]byte, error)
}

func newFakeRunner(t *testing.T) *fakeRunner {
	return &fakeRunner{t: t, sigs: map[string]Signature{}}
}

func (f *fakeRunner) set(dev string, s Signature) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sigs[dev] = s
}

func (f *fakeRunner) Run(_ context.Context, name string, args ...string) ([]byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, append([]string{name}, args...))
	f.mu.Unlock()
	if name == "blkid" {
		f.mu.Lock()
		defer f.mu.Unlock()
		return blkidAnswer(f.sigs[args[len(args)-1]], name, args)
	}
	if f.handle != nil {
		return f.handle(name, args)
	}
	return nil, nil
}

// blkidAnswer renders s as blkid -p -o export would, exit codes included.
func blkidAnswer(s Signature, name string, args []string) ([]byte, error) {
	switch {
	case s.Ambivalent:
		return nil, &CommandError{Name: name, Args: args, ExitCode: blkidAmbivalent, Err: fmt.Errorf("exit status 8")}
	case s.Blank():
		return nil, &CommandError{Name: name, Args: args, ExitCode: blkidNothingFound, Err: fmt.Errorf("exit status 2")}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "DEVNAME=%s\n", args[len(args)-1])
	for _, kv := range [][2]string{{"UUID", s.UUID}, {"LABEL", s.Label}, {"TYPE", s.Type}, {"PTTYPE", s.PTType}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, "%s=%s\n", kv[0], kv[1])
		}
	}
	return []byte(b.String()), nil
}

// callsOf returns the recorded calls of one tool, without blkid's.
func (f *fakeRunner) callsOf(name string) [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out [][]string
	for _, c := range f.calls {
		if c[0] == name {
			out = append(out, c[1:])
		}
	}
	return out
}

// fakeDisks makes a sysfs tree with n instance-store NVMe disks and a /dev
// folder of regular files standing in for them (enough for discovery and
// the exclusive-open check, not for mounting).
func fakeDisks(t *testing.T, n int) (sysfs, dev string, disks []string) {
	t.Helper()
	root := t.TempDir()
	sysfs, dev = filepath.Join(root, "sys"), filepath.Join(root, "dev")
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("nvme%dn1", i)
		writeFile(t, filepath.Join(sysfs, "block", name, "device", "model"), InstanceStoreModel+"                \n")
		writeFile(t, filepath.Join(dev, name), "")
		disks = append(disks, filepath.Join(dev, name))
	}
	// The root volume, an EBS disk, must not be picked.
	writeFile(t, filepath.Join(sysfs, "block", "nvme0n1", "device", "model"), "Amazon Elastic Block Store\n")
	return sysfs, dev, disks
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newTestSetup returns a setup over fake disks, as Setup builds it, for
// driving one layout step directly.
func newTestSetup(t *testing.T, n int, r Runner, force bool) (*setup, []string) {
	t.Helper()
	sysfs, dev, disks := fakeDisks(t, n)
	opts := Options{SysfsRoot: sysfs, DevRoot: dev, Runner: r, Force: force,
		StatePath: filepath.Join(t.TempDir(), "state.json"), MountPoint: "/mnt/unused"}
	if err := opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	return &setup{opts: opts, log: opts.Logger, state: &State{Devices: disks}}, disks
}

func hasNote(notes []string, substr string) bool {
	return slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, substr) })
}
