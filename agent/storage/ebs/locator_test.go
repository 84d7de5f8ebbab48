package ebs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autonode/autonode/agent/storage/ebs"
	"github.com/autonode/autonode/agent/storage/ebs/ebstest"
)

const (
	volA = "vol-0aaaaaaaaaaaaaaaa"
	volB = "vol-0bbbbbbbbbbbbbbbb"
	volC = "vol-0cccccccccccccccc"
)

// tree is a temporary /dev: device "nodes" are empty files, and their
// Identify data comes from the fake device table.
type tree struct {
	root    string
	devices *ebstest.Devices
	loc     *ebs.Locator
}

func newTree(t *testing.T) *tree {
	t.Helper()
	tr := &tree{root: t.TempDir(), devices: ebstest.NewDevices()}
	tr.loc = ebs.NewLocator(ebs.LocatorOptions{DevRoot: tr.root, Identifier: tr.devices, Logger: testLogger(t)})
	return tr
}

// attach makes <root>/<name> exist and identify as page.
func (tr *tree) attach(t *testing.T, name string, page []byte) string {
	t.Helper()
	path := filepath.Join(tr.root, name)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tr.devices.Set(path, page, nil)
	return path
}

// detach removes <root>/<name> and its fixture.
func (tr *tree) detach(t *testing.T, name string) {
	t.Helper()
	path := filepath.Join(tr.root, name)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	tr.devices.Remove(path)
}

func (tr *tree) path(rel string) string { return filepath.Join(tr.root, rel) }

// readlink returns the raw target of <root>/<rel>, or "" when there is no
// link.
func (tr *tree) readlink(t *testing.T, rel string) string {
	t.Helper()
	raw, err := os.Readlink(tr.path(rel))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func byID(id string) string { return filepath.Join(ebs.ByVolumeIDDir, id) }

func TestLocateScansAndWritesLinks(t *testing.T) {
	tr := newTree(t)
	tr.attach(t, "nvme0n1", ebstest.EBSVolume(volC, "/dev/xvda"))
	want := tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "sdf"))
	tr.attach(t, "nvme2n1", ebstest.InstanceStore("AWS1234567890ABCDEF0"))
	tr.attach(t, "nvme3n1", specPage(0x144d, "S5GXNF0R123456", "Samsung SSD 980 PRO 1TB", "5B2QGXA7", nil))
	tr.attach(t, "nvme4n1", []byte("short")) // unreadable: skipped, not fatal
	tr.attach(t, "nvme1n1p1", nil)           // partitions are not scanned
	tr.attach(t, "nvme1n2", nil)             // nor other namespaces

	got, err := tr.loc.Locate(t.Context(), volA)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("Locate = %s, want %s", got, want)
	}
	// Relative targets, as udev writes them.
	if raw := tr.readlink(t, byID(volA)); raw != "../../../nvme1n1" {
		t.Errorf("%s -> %q, want ../../../nvme1n1", byID(volA), raw)
	}
	if raw := tr.readlink(t, "sdf"); raw != "nvme1n1" {
		t.Errorf("sdf -> %q, want nvme1n1", raw)
	}
	// Locate writes only the links of the volume it found.
	if raw := tr.readlink(t, byID(volC)); raw != "" {
		t.Errorf("Locate(%s) wrote %s -> %s", volA, byID(volC), raw)
	}
	for _, name := range []string{"nvme1n1p1", "nvme1n2"} {
		if n := tr.devices.IdentifyCalls(tr.path(name)); n != 0 {
			t.Errorf("%s identified %d times, want 0", name, n)
		}
	}
}

func TestLocateFollowsVerifiedLink(t *testing.T) {
	tr := newTree(t)
	dev := tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "xvdba"))
	other := tr.attach(t, "nvme2n1", ebstest.EBSVolume(volB, "xvdbb"))
	if _, err := tr.loc.Locate(t.Context(), volA); err != nil {
		t.Fatal(err)
	}
	devCalls, otherCalls := tr.devices.IdentifyCalls(dev), tr.devices.IdentifyCalls(other)
	got, err := tr.loc.Locate(t.Context(), volA)
	if err != nil || got != dev {
		t.Fatalf("Locate = %s, %v; want %s", got, err, dev)
	}
	// The link was trusted only after its target was identified again,
	// and nothing else was scanned.
	if n := tr.devices.IdentifyCalls(dev) - devCalls; n != 1 {
		t.Errorf("link target identified %d times, want 1", n)
	}
	if n := tr.devices.IdentifyCalls(other) - otherCalls; n != 0 {
		t.Errorf("other device identified %d times, want 0", n)
	}
}

// TestLocateStaleLinkReattached plays aws-ebs-csi-driver #1224: volume A
// was at nvme1n1 and its link says so, then A was detached, B attached and
// given nvme1n1, and A reattached as nvme4n1. Following the link would
// mount B; the serial check catches it.
func TestLocateStaleLinkReattached(t *testing.T) {
	tr := newTree(t)
	tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "xvdba"))
	if _, err := tr.loc.Locate(t.Context(), volA); err != nil {
		t.Fatal(err)
	}
	tr.detach(t, "nvme1n1")
	tr.attach(t, "nvme1n1", ebstest.EBSVolume(volB, "xvdbb"))
	want := tr.attach(t, "nvme4n1", ebstest.EBSVolume(volA, "xvdba"))

	got, err := tr.loc.Locate(t.Context(), volA)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("Locate = %s, want %s (the stale link pointed at %s, which holds %s)", got, want, tr.path("nvme1n1"), volB)
	}
	if raw := tr.readlink(t, byID(volA)); raw != "../../../nvme4n1" {
		t.Errorf("link repaired to %q, want ../../../nvme4n1", raw)
	}
	if raw := tr.readlink(t, "xvdba"); raw != "nvme4n1" {
		t.Errorf("xvdba -> %q, want nvme4n1", raw)
	}
}

func TestLocateStaleLinkVolumeGone(t *testing.T) {
	tr := newTree(t)
	tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "xvdba"))
	if _, err := tr.loc.Locate(t.Context(), volA); err != nil {
		t.Fatal(err)
	}
	tr.detach(t, "nvme1n1")
	tr.attach(t, "nvme1n1", ebstest.EBSVolume(volB, "xvdbb"))

	got, err := tr.loc.Locate(t.Context(), volA)
	if err == nil {
		t.Fatalf("Locate = %s, want an error: the link points at %s", got, volB)
	}
	if !errors.Is(err, ebs.ErrVolumeNotFound) {
		t.Errorf("error %v does not wrap ErrVolumeNotFound", err)
	}
	var mismatch *ebs.MismatchError
	if !errors.As(err, &mismatch) || mismatch.Got != volB || mismatch.Want != volA {
		t.Errorf("error %v carries no MismatchError{Want: %s, Got: %s}", err, volA, volB)
	}
	for _, s := range []string{volA, byID(volA), "holds " + volB} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	if raw := tr.readlink(t, byID(volA)); raw != "" {
		t.Errorf("stale link left in place: -> %s", raw)
	}
}

func TestLocateStaleLinkToMissingDevice(t *testing.T) {
	tr := newTree(t)
	link := tr.path(byID(volA))
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../nvme9n1", link); err != nil {
		t.Fatal(err)
	}
	_, err := tr.loc.Locate(t.Context(), volA)
	if !errors.Is(err, ebs.ErrVolumeNotFound) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Locate error = %v, want volume not found after a link to a missing device", err)
	}
	if raw := tr.readlink(t, byID(volA)); raw != "" {
		t.Errorf("stale link left in place: -> %s", raw)
	}
}

// TestLocateLinkOutsideNamespaces: a partition passes the serial check (the
// ioctl reaches its disk), so a link to one must not be followed.
func TestLocateLinkOutsideNamespaces(t *testing.T) {
	tr := newTree(t)
	want := tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "xvdba"))
	part := tr.attach(t, "nvme1n1p1", ebstest.EBSVolume(volA, "xvdba"))
	mustSymlink(t, "../../../nvme1n1p1", tr.path(byID(volA)))
	got, err := tr.loc.Locate(t.Context(), volA)
	if err != nil || got != want {
		t.Fatalf("Locate = %s, %v; want %s, not the partition %s", got, err, want, part)
	}
	if raw := tr.readlink(t, byID(volA)); raw != "../../../nvme1n1" {
		t.Errorf("link -> %q, want ../../../nvme1n1", raw)
	}
	if n := tr.devices.IdentifyCalls(part); n != 0 {
		t.Errorf("the partition was identified %d times", n)
	}
}

func TestLocateNeverReplacesFiles(t *testing.T) {
	tr := newTree(t)
	dev := tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "sdf"))
	// A real device (or anything not a link) at either name stays.
	for _, rel := range []string{"sdf", byID(volA)} {
		if err := os.MkdirAll(filepath.Dir(tr.path(rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tr.path(rel), []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := tr.loc.Locate(t.Context(), volA)
	if err != nil || got != dev {
		t.Fatalf("Locate = %s, %v; want %s: the device is identified even where its links cannot be written", got, err, dev)
	}
	for _, rel := range []string{"sdf", byID(volA)} {
		if b, err := os.ReadFile(tr.path(rel)); err != nil || string(b) != "keep" {
			t.Errorf("%s = %q, %v; want it untouched", rel, b, err)
		}
	}
}

func TestLocateUnsafeDeviceName(t *testing.T) {
	tr := newTree(t)
	tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "../../x"))
	if _, err := tr.loc.Locate(t.Context(), volA); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(tr.root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "disk,nvme1n1" {
		t.Errorf("dev root holds %v, want only disk and nvme1n1", names)
	}
	if _, err := os.Lstat(filepath.Join(tr.root, "..", "..", "x")); err == nil {
		t.Errorf("a link escaped the dev root")
	}
}

func TestLocateErrors(t *testing.T) {
	tr := newTree(t)
	tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "xvdba"))
	tr.attach(t, "nvme2n1", ebstest.EBSVolume(volA, "xvdbb"))
	tests := []struct {
		id, want string
	}{
		{"vol-xyz", "not an EBS volume id"},
		{"../../etc/passwd", "not an EBS volume id"},
		{"vol0aaaaaaaaaaaaaaaa", "not an EBS volume id"},
		{volB, "locating " + volB + " among 2 EBS volumes under " + tr.root + ": EBS volume not attached"},
		{volA, "both identify as it"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			got, err := tr.loc.Locate(t.Context(), tt.id)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Locate = %q, %v; want an error containing %q", got, err, tt.want)
			}
		})
	}
	if _, err := ebs.NewLocator(ebs.LocatorOptions{DevRoot: filepath.Join(tr.root, "missing"), Identifier: tr.devices}).Locate(t.Context(), volA); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Locate under a missing dev root: %v", err)
	}
}

func TestLocateCancelled(t *testing.T) {
	tr := newTree(t)
	tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "xvdba"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := tr.loc.Locate(ctx, volA); !errors.Is(err, context.Canceled) {
		t.Fatalf("Locate with a cancelled context: %v", err)
	}
}

func TestVerify(t *testing.T) {
	tr := newTree(t)
	a := tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "xvdba"))
	store := tr.attach(t, "nvme2n1", ebstest.InstanceStore("AWS1234567890ABCDEF0"))
	if err := tr.loc.Verify(t.Context(), volA, a); err != nil {
		t.Errorf("Verify(%s, %s): %v", volA, a, err)
	}
	var mismatch *ebs.MismatchError
	if err := tr.loc.Verify(t.Context(), volB, a); !errors.As(err, &mismatch) || mismatch.Got != volA {
		t.Errorf("Verify(%s, %s) = %v, want a MismatchError naming %s", volB, a, err, volA)
	}
	if err := tr.loc.Verify(t.Context(), volA, store); !errors.As(err, &mismatch) || mismatch.Got != "" ||
		err.Error() != "device "+store+" is not EBS volume "+volA+": it holds no EBS volume" {
		t.Errorf("Verify on an instance-store disk = %v", err)
	}
	if err := tr.loc.Verify(t.Context(), volA, tr.path("nvme7n1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Verify on a missing device = %v, want ErrNotExist", err)
	}
}

func TestSync(t *testing.T) {
	tr := newTree(t)
	tr.attach(t, "nvme0n1", ebstest.EBSVolume(volC, "/dev/xvda"))
	tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "xvdba"))
	tr.attach(t, "nvme2n1", ebstest.EBSVolume(volB, "sdf"))
	if err := tr.loc.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		byID(volC): "../../../nvme0n1", "xvda": "nvme0n1",
		byID(volA): "../../../nvme1n1", "xvdba": "nvme1n1",
		byID(volB): "../../../nvme2n1", "sdf": "nvme2n1",
	}
	for rel, target := range want {
		if raw := tr.readlink(t, rel); raw != target {
			t.Errorf("%s -> %q, want %q", rel, raw, target)
		}
	}

	// A detaches; B moves from nvme2n1 to nvme1n1 under a new name; links
	// nobody owns sit beside ours.
	tr.detach(t, "nvme1n1")
	tr.detach(t, "nvme2n1")
	tr.attach(t, "nvme1n1", ebstest.EBSVolume(volB, "xvdbc"))
	mustSymlink(t, "loop7", tr.path("sdz"))                                             // a mapping-like name pointing elsewhere
	mustSymlink(t, "nvme1n1p1", tr.path("xvdbc1"))                                      // a partition link udev wrote
	mustSymlink(t, "../../../nvme1n1p1", tr.path(byID(volB)+"-part1"))                  // same
	mustSymlink(t, "../../../nvme1n1", tr.path(ebs.ByVolumeIDDir+"/.x.autonode-tmp-1")) // left by a crash
	if err := os.WriteFile(tr.path("sdg"), nil, 0o600); err != nil {                    // not a link
		t.Fatal(err)
	}
	if err := tr.loc.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	want = map[string]string{
		byID(volC): "../../../nvme0n1", "xvda": "nvme0n1",
		byID(volA): "", "xvdba": "",
		byID(volB): "../../../nvme1n1", "sdf": "", "xvdbc": "nvme1n1",
		"sdz": "loop7", "xvdbc1": "nvme1n1p1", byID(volB) + "-part1": "../../../nvme1n1p1",
		ebs.ByVolumeIDDir + "/.x.autonode-tmp-1": "",
	}
	for rel, target := range want {
		if raw := tr.readlink(t, rel); raw != target {
			t.Errorf("after the moves, %s -> %q, want %q", rel, raw, target)
		}
	}
	if _, err := os.Stat(tr.path("sdg")); err != nil {
		t.Errorf("a plain file was removed: %v", err)
	}
}

func TestRunSyncsUntilCancelled(t *testing.T) {
	tr := newTree(t)
	tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "xvdba"))
	if err := tr.loc.Ready(); err == nil {
		t.Error("Ready before Run synced")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tr.loc.Run(ctx) }()
	// Run syncs at once; wait until it says so, then stop it. The deadline
	// only keeps a broken Run from hanging the test.
	deadline := time.After(30 * time.Second)
	for tr.loc.Ready() != nil {
		select {
		case err := <-done:
			t.Fatalf("Run returned before syncing: %v", err)
		case <-deadline:
			cancel()
			t.Fatalf("Run never got ready: %v", tr.loc.Ready())
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	if raw := tr.readlink(t, byID(volA)); raw != "../../../nvme1n1" {
		t.Errorf("link after Run: %q", raw)
	}
}

func TestRunReportsSyncErrors(t *testing.T) {
	tr := newTree(t)
	tr.attach(t, "nvme1n1", ebstest.EBSVolume(volA, "sdf"))
	if err := os.WriteFile(tr.path("sdf"), nil, 0o600); err != nil { // a real /dev/sdf
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tr.loc.Run(ctx) }()
	deadline := time.After(30 * time.Second)
	for err := tr.loc.Ready(); err == nil || strings.Contains(err.Error(), "not synced yet"); err = tr.loc.Ready() {
		select {
		case err := <-done:
			t.Fatalf("Run returned: %v", err)
		case <-deadline:
			cancel()
			t.Fatalf("Ready = %v, want the sync error", err)
		case <-time.After(time.Millisecond):
		}
	}
	if err := tr.loc.Ready(); !strings.Contains(err.Error(), "refusing to replace a regular file") {
		t.Errorf("Ready = %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil: a failed sync does not stop it", err)
	}
	// The volume-id link was still written.
	if raw := tr.readlink(t, byID(volA)); raw != "../../../nvme1n1" {
		t.Errorf("link after Run: %q", raw)
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
