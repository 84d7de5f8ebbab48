package instancestore

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const diskSize = 512 << 20 // above mkfs.xfs's 300 MiB minimum; sparse

// seedKubelet fills the root disk's kubelet folder with every kind of
// entry the first setup must carry over.
func seedKubelet(t *testing.T, dir string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "pki", "kubelet.crt"), "certificate")
	crt := filepath.Join(dir, "pki", "kubelet.crt")
	must(t, os.Chmod(crt, 0o600))
	must(t, os.Lchown(crt, 1000, 1001))
	must(t, unix.Lsetxattr(crt, "user.autonode", []byte("label"), 0))
	must(t, os.Chmod(filepath.Join(dir, "pki"), 0o750))
	must(t, os.Symlink("pki/kubelet.crt", filepath.Join(dir, "link")))
	must(t, os.Link(crt, filepath.Join(dir, "hard")))
	must(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o640))
	must(t, unix.Mknod(filepath.Join(dir, "whiteout"), unix.S_IFCHR, 0)) // an overlayfs whiteout: 0:0, mode 0
	l, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	must(t, err)
	t.Cleanup(func() { l.Close() })
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// checkKubeletCopy checks what seedKubelet made, as seen through the bind.
func checkKubeletCopy(t *testing.T, dir string) {
	t.Helper()
	crt := filepath.Join(dir, "pki", "kubelet.crt")
	if got := readFile(t, crt); got != "certificate" {
		t.Errorf("kubelet.crt = %q", got)
	}
	var st, hard, pki unix.Stat_t
	must(t, unix.Lstat(crt, &st))
	must(t, unix.Lstat(filepath.Join(dir, "hard"), &hard))
	must(t, unix.Lstat(filepath.Join(dir, "pki"), &pki))
	if st.Mode&0o7777 != 0o600 || st.Uid != 1000 || st.Gid != 1001 {
		t.Errorf("kubelet.crt mode %#o owner %d:%d, want 0600 1000:1001", st.Mode&0o7777, st.Uid, st.Gid)
	}
	if pki.Mode&0o7777 != 0o750 {
		t.Errorf("pki mode %#o, want 0750", pki.Mode&0o7777)
	}
	if hard.Ino != st.Ino {
		t.Error("the hard link was copied as a separate file")
	}
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(crt, "user.autonode", buf)
	if err != nil || string(buf[:n]) != "label" {
		t.Errorf("xattr user.autonode = %q, %v", buf[:n], err)
	}
	if dest, err := os.Readlink(filepath.Join(dir, "link")); err != nil || dest != "pki/kubelet.crt" {
		t.Errorf("link -> %q, %v", dest, err)
	}
	var fifo, wh unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dir, "fifo"), &fifo))
	must(t, unix.Lstat(filepath.Join(dir, "whiteout"), &wh))
	if fifo.Mode&unix.S_IFMT != unix.S_IFIFO || wh.Mode&unix.S_IFMT != unix.S_IFCHR || wh.Rdev != 0 {
		t.Errorf("fifo mode %#o, whiteout mode %#o rdev %d", fifo.Mode, wh.Mode, wh.Rdev)
	}
	if _, err := os.Lstat(filepath.Join(dir, "kubelet.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket was copied: %v", err)
	}
}

// TestPrivilegedSingleDisk runs the whole life of a one-disk instance store
// for real: first boot, a rerun, a reboot, and a start after the kubelet.
func TestPrivilegedSingleDisk(t *testing.T) {
	for _, fs := range []string{"xfs", "ext4"} {
		t.Run(fs, func(t *testing.T) {
			root := privRoot(t, "mkfs."+fs)
			dev := newLoop(t, diskSize)
			opts, rec := testOptions(t, root, fs, dev)
			containerd, kubelet, pods := opts.Binds[0].Path, opts.Binds[1].Path, opts.Binds[2].Path
			seedKubelet(t, kubelet)
			ctx := context.Background()

			// First boot: formats, mounts, binds, carries the kubelet's
			// folder over.
			rep, err := Setup(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Action != ActionFormatted || rep.Layout != LayoutSingle || rep.Filesystem != fs || rep.Target != dev {
				t.Errorf("first setup: %+v", rep)
			}
			if !hasNote(rep.Notes, "copied "+kubelet) {
				t.Errorf("notes %q do not report the copy", rep.Notes)
			}
			if sig := blkidOf(t, dev); sig.Type != fs || sig.Label != Label {
				t.Errorf("after setup %s holds %s", dev, sig)
			}
			if _, err := Verify(ctx, opts); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{opts.MountPoint, containerd, kubelet, pods} {
				if !mountedAt(t, p) {
					t.Errorf("%s is not a mount point", p)
				}
			}
			checkKubeletCopy(t, kubelet)
			st, err := ReadState(opts.StatePath)
			if err != nil || st.Phase != PhaseDone || !st.Formatted || st.UUID == "" {
				t.Errorf("state %+v, %v", st, err)
			}
			writeFile(t, filepath.Join(containerd, "blob"), "image layer")
			writeFile(t, filepath.Join(pods, "ns_pod_uid", "c", "0.log"), "log line\n")
			rec.take()

			// A rerun in the same boot changes nothing.
			rep, err = Setup(ctx, opts)
			if err != nil || rep.Action != ActionVerified {
				t.Fatalf("rerun: %+v, %v", rep, err)
			}
			if c := mkfsCalls(rec.take()); len(c) > 0 {
				t.Errorf("rerun ran %q", c)
			}

			// Reboot: everything unmounted; setup remounts without
			// formatting, and the data is still there.
			unmountUnder(t, root)
			if _, err := Verify(ctx, opts); !errors.Is(err, ErrNotSetUp) {
				t.Errorf("Verify() after unmounting = %v, want ErrNotSetUp", err)
			}
			// The original stays on the root disk, under the bind.
			if got := readFile(t, filepath.Join(kubelet, "pki", "kubelet.crt")); got != "certificate" {
				t.Errorf("the original kubelet.crt on the root disk = %q", got)
			}
			rep, err = Setup(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Action != ActionMounted {
				t.Errorf("after reboot: %+v", rep)
			}
			if c := mkfsCalls(rec.take()); len(c) > 0 {
				t.Errorf("after reboot setup ran %q", c)
			}
			if got := readFile(t, filepath.Join(containerd, "blob")); got != "image layer" {
				t.Errorf("blob after reboot = %q", got)
			}
			if got := readFile(t, filepath.Join(pods, "ns_pod_uid", "c", "0.log")); got != "log line\n" {
				t.Errorf("log after reboot = %q", got)
			}
			checkKubeletCopy(t, kubelet)

			// Once the kubelet has started, setup only verifies: it passes
			// while all is in place and mounts nothing when it is not.
			writeFile(t, opts.KubeletMarkers[0], "")
			if rep, err := Setup(ctx, opts); err != nil || rep.Action != ActionVerified {
				t.Fatalf("after the marker: %+v, %v", rep, err)
			}
			unmountUnder(t, root)
			_, err = Setup(ctx, opts)
			if !errors.Is(err, ErrKubeletStarted) || !errors.Is(err, ErrNotSetUp) || !strings.Contains(err.Error(), "marker") {
				t.Errorf("Setup() after the marker with nothing mounted = %v, want ErrKubeletStarted", err)
			}
			if mountedAt(t, opts.MountPoint) {
				t.Error("setup mounted although the kubelet has started")
			}
			if c := rec.take(); len(c) > 0 {
				t.Errorf("setup ran tools although the kubelet has started: %q", c)
			}
		})
	}
}

// TestPrivilegedForeignFilesystem: a disk with someone else's filesystem is
// left alone; --force formats it.
func TestPrivilegedForeignFilesystem(t *testing.T) {
	root := privRoot(t, "mkfs.xfs", "mkfs.ext4")
	dev := newLoop(t, diskSize)
	if out, err := exec.Command("mkfs.ext4", "-q", "-L", "data", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	before := blkidOf(t, dev)
	opts, rec := testOptions(t, root, "xfs", dev)
	ctx := context.Background()

	_, err := Setup(ctx, opts)
	if !errors.Is(err, ErrForeignData) || !strings.Contains(err.Error(), `ext4 signature labelled "data"`) {
		t.Fatalf("Setup() = %v, want ErrForeignData naming the ext4", err)
	}
	if after := blkidOf(t, dev); after != before {
		t.Errorf("refused disk changed: %s -> %s", before, after)
	}
	if c := mkfsCalls(rec.take()); len(c) > 0 {
		t.Errorf("refused disk got %q", c)
	}
	if mountedAt(t, opts.MountPoint) {
		t.Error("mounted a refused disk")
	}

	opts.Force = true
	rep, err := Setup(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Action != ActionFormatted || !hasNote(rep.Notes, "--force") {
		t.Errorf("forced setup: %+v", rep)
	}
	if sig := blkidOf(t, dev); sig.Type != "xfs" || sig.Label != Label {
		t.Errorf("after --force %s holds %s", dev, sig)
	}
	if _, err := Verify(ctx, opts); err != nil {
		t.Fatal(err)
	}
}

// TestPrivilegedInterruptedSetup: the next setup detects a setup that was
// cut short, reports it, and finishes the job from what the disks hold.
func TestPrivilegedInterruptedSetup(t *testing.T) {
	ctx := context.Background()

	t.Run("while formatting a blank disk", func(t *testing.T) {
		root := privRoot(t, "mkfs.xfs")
		dev := newLoop(t, diskSize)
		opts, _ := testOptions(t, root, "xfs", dev)
		must(t, writeState(opts.StatePath, &State{Phase: PhaseFormatting, Layout: LayoutSingle, Devices: []string{dev}}, time.Now()))
		if _, err := Verify(ctx, opts); !errors.Is(err, ErrNotSetUp) || !strings.Contains(err.Error(), "stopped while formatting") {
			t.Errorf("Verify() = %v, want it to report the interrupted setup", err)
		}
		rep, err := Setup(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Action != ActionFormatted || !hasNote(rep.Notes, "an earlier setup was interrupted while formatting on "+dev) {
			t.Errorf("setup after an interrupted one: %+v", rep)
		}
	})

	t.Run("after mkfs, before the state said so", func(t *testing.T) {
		root := privRoot(t, "mkfs.xfs")
		dev := newLoop(t, diskSize)
		opts, _ := testOptions(t, root, "xfs", dev)
		if out, err := exec.Command("mkfs.xfs", "-q", "-L", Label, dev).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.xfs: %v: %s", err, out)
		}
		old := blkidOf(t, dev)
		must(t, writeState(opts.StatePath, &State{Phase: PhaseFormatting, Layout: LayoutSingle, Devices: []string{dev}}, time.Now()))
		rep, err := Setup(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Action != ActionFormatted || !hasNote(rep.Notes, "may be incomplete") {
			t.Errorf("setup: %+v", rep)
		}
		if now := blkidOf(t, dev); now.UUID == old.UUID {
			t.Error("the possibly incomplete filesystem was kept")
		}
	})

	t.Run("while copying a folder over", func(t *testing.T) {
		root := privRoot(t, "mkfs.xfs")
		dev := newLoop(t, diskSize)
		opts, _ := testOptions(t, root, "xfs", dev)
		kubelet := opts.Binds[1]
		seedKubelet(t, kubelet.Path)
		if _, err := Setup(ctx, opts); err != nil {
			t.Fatal(err)
		}
		// Cut it short by hand: the kubelet copy back in staging with a
		// stray file, the bind gone, the state saying binding.
		unmountUnder(t, root)
		must(t, unix.Mount(dev, opts.MountPoint, "xfs", 0, ""))
		dst := filepath.Join(opts.MountPoint, kubelet.dirName())
		staging := filepath.Join(opts.MountPoint, stagingDir, kubelet.dirName())
		must(t, os.Rename(dst, staging))
		writeFile(t, filepath.Join(staging, "half-copied"), "x")
		must(t, unix.Unmount(opts.MountPoint, 0))
		st, err := ReadState(opts.StatePath)
		must(t, err)
		st.Phase = PhaseBinding
		must(t, writeState(opts.StatePath, st, time.Now()))

		rep, err := Setup(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Action != ActionMounted || !hasNote(rep.Notes, "interrupted while binding") {
			t.Errorf("setup: %+v", rep)
		}
		if _, err := os.Lstat(filepath.Join(kubelet.Path, "half-copied")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the unfinished copy was used: %v", err)
		}
		checkKubeletCopy(t, kubelet.Path)
		if _, err := os.Lstat(staging); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("staging left behind: %v", err)
		}
		if _, err := Verify(ctx, opts); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPrivilegedBtrfsRAID0: btrfs joins two disks itself, data and
// metadata RAID0, and a reboot mounts it again without formatting.
func TestPrivilegedBtrfsRAID0(t *testing.T) {
	root := privRoot(t, "mkfs.btrfs", "btrfs")
	a, b := newLoop(t, diskSize), newLoop(t, diskSize)
	opts, rec := testOptions(t, root, "btrfs", a, b)
	ctx := context.Background()

	rep, err := Setup(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Action != ActionFormatted || rep.Layout != LayoutBtrfs {
		t.Errorf("setup: %+v", rep)
	}
	sa, sb := blkidOf(t, a), blkidOf(t, b)
	if sa.Type != "btrfs" || sa.Label != Label || sa.UUID != sb.UUID {
		t.Errorf("disks hold %s and %s, want one btrfs labelled %s", sa, sb, Label)
	}
	out, err := exec.Command("btrfs", "filesystem", "df", opts.MountPoint).CombinedOutput()
	if err != nil {
		t.Fatalf("btrfs filesystem df: %v: %s", err, out)
	}
	for _, want := range []string{"Data, RAID0", "Metadata, RAID0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("btrfs filesystem df lacks %q:\n%s", want, out)
		}
	}
	if _, err := Verify(ctx, opts); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(opts.Binds[0].Path, "blob"), "layer")
	rec.take()

	unmountUnder(t, root)
	rep, err = Setup(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Action != ActionMounted {
		t.Errorf("after reboot: %+v", rep)
	}
	if c := mkfsCalls(rec.take()); len(c) > 0 {
		t.Errorf("after reboot setup ran %q", c)
	}
	if got := readFile(t, filepath.Join(opts.Binds[0].Path, "blob")); got != "layer" {
		t.Errorf("blob after reboot = %q", got)
	}
	if _, err := Verify(ctx, opts); err != nil {
		t.Fatal(err)
	}
}

// TestPrivilegedMdadmStandIn runs the mdadm layout end to end with only
// mdadm itself faked (this kernel has no md): a third loop device stands in
// for the array, the fake checks mdadm's exact arguments and marks the
// members, and mkfs.xfs, blkid and the mounts are real.
func TestPrivilegedMdadmStandIn(t *testing.T) {
	root := privRoot(t, "mkfs.xfs")
	// Striped, mkfs.xfs needs more than 512 MiB for its 64 MiB log.
	m1, m2, arrayDisk := newLoop(t, 64<<20), newLoop(t, 64<<20), newLoop(t, 1<<30)
	devRoot := filepath.Join(root, "dev")
	array := filepath.Join(devRoot, "md", ArrayName)
	opts, rec := testOptions(t, root, "xfs", m1, m2)
	opts.DevRoot = devRoot

	members := map[string]Signature{} // what mdadm wrote, as blkid would see it
	link := func() {
		must(t, os.MkdirAll(filepath.Dir(array), 0o755))
		must(t, os.Symlink(arrayDisk, array))
	}
	rec.intercept = func(name string, args []string) ([]byte, bool, error) {
		dev := args[len(args)-1]
		switch name {
		case "mdadm":
			switch strings.Join(args, " ") {
			case "--create " + array + " --run --level=0 --metadata=1.2 --chunk=256 --name=ephemeral --raid-devices=2 " + m1 + " " + m2:
				for _, m := range []string{m1, m2} {
					members[m] = Signature{Type: "linux_raid_member", Label: "host:" + ArrayName, UUID: "md-uuid"}
				}
				link()
			case "--assemble " + array + " " + m1 + " " + m2:
				link()
			default:
				t.Errorf("unexpected mdadm %q", args)
				return nil, true, errors.New("unexpected")
			}
			return nil, true, nil
		case "blkid":
			if sig, ok := members[dev]; ok {
				out, err := blkidAnswer(sig, name, args)
				return out, true, err
			}
		case "mkfs.xfs":
			if want := "-L " + Label + " -d su=256k,sw=2 " + array; strings.Join(args, " ") != want {
				t.Errorf("mkfs.xfs %q, want %q", args, want)
			}
		}
		return nil, false, nil
	}
	ctx := context.Background()

	rep, err := Setup(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Action != ActionFormatted || rep.Layout != LayoutMdadm || rep.Target != array {
		t.Errorf("setup: %+v", rep)
	}
	if c := mkfsCalls(rec.take()); len(c) != 2 || c[0][0] != "mdadm" || c[1][0] != "mkfs.xfs" {
		t.Errorf("calls %q, want mdadm --create then mkfs.xfs", c)
	}
	// The stripe geometry reached the filesystem: sunit 256 KiB = 64
	// blocks of 4 KiB, swidth 2 disks.
	out, err := exec.Command("xfs_info", opts.MountPoint).CombinedOutput()
	if err != nil {
		t.Fatalf("xfs_info: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "sunit=64") || !strings.Contains(string(out), "swidth=128 blks") {
		t.Errorf("xfs_info shows no 256k x 2 stripe:\n%s", out)
	}
	if _, err := Verify(ctx, opts); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(opts.Binds[0].Path, "blob"), "layer")

	// Reboot: the array is stopped (its link gone); setup assembles it and
	// mounts the filesystem it holds.
	unmountUnder(t, root)
	must(t, os.Remove(array))
	rep, err = Setup(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Action != ActionMounted {
		t.Errorf("after reboot: %+v", rep)
	}
	if c := mkfsCalls(rec.take()); len(c) != 1 || c[0][1] != "--assemble" {
		t.Errorf("after reboot calls %q, want only mdadm --assemble", c)
	}
	if got := readFile(t, filepath.Join(opts.Binds[0].Path, "blob")); got != "layer" {
		t.Errorf("blob after reboot = %q", got)
	}
}

// TestPrivilegedBtrfsHalfMade: one disk with our btrfs and one blank is not
// a layout setup made whole; it is refused untouched, and formatted afresh
// once the state file shows an interrupted setup on these disks.
func TestPrivilegedBtrfsHalfMade(t *testing.T) {
	root := privRoot(t, "mkfs.btrfs")
	a, b := newLoop(t, diskSize), newLoop(t, diskSize)
	if out, err := exec.Command("mkfs.btrfs", "-q", "-L", Label, a).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs: %v: %s", err, out)
	}
	before := blkidOf(t, a)
	opts, rec := testOptions(t, root, "btrfs", a, b)
	ctx := context.Background()

	_, err := Setup(ctx, opts)
	if !errors.Is(err, ErrHalfMade) || !strings.Contains(err.Error(), a+" holds a btrfs signature") {
		t.Fatalf("Setup() = %v, want ErrHalfMade naming %s", err, a)
	}
	if c := mkfsCalls(rec.take()); len(c) > 0 || blkidOf(t, a) != before || !blkidOf(t, b).Blank() {
		t.Fatalf("a refused layout was changed: %q", c)
	}

	must(t, writeState(opts.StatePath, &State{Phase: PhaseFormatting, Layout: LayoutBtrfs, Devices: []string{a, b}}, time.Now()))
	rep, err := Setup(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Action != ActionFormatted || !hasNote(rep.Notes, "resuming the interrupted setup") {
		t.Errorf("setup: %+v", rep)
	}
	if sa, sb := blkidOf(t, a), blkidOf(t, b); sa.UUID != sb.UUID || sa.UUID == before.UUID {
		t.Errorf("disks hold %+v and %+v, want one new btrfs", sa, sb)
	}
}
