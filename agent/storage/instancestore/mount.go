package instancestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// stagingDir holds first copies of the bind folders until they are
// complete; a copy cut short is removed and redone by the next setup.
const stagingDir = ".autonode-staging"

// mount mounts t at the mount point unless it is mounted there already. It
// reports whether it mounted.
func (s *setup) mount(t target) (bool, error) {
	mp := s.opts.MountPoint
	mounts, err := readMounts(s.opts.ProcRoot)
	if err != nil {
		return false, err
	}
	if m := mountAt(mounts, mp); m != nil {
		if !sourceMatches(m.Source, t) {
			return false, fmt.Errorf("%s is already a mount of %s (%s), not of the instance store %s; unmount it first", mp, m.Source, m.FSType, t.device)
		}
		s.log.Info("instance store already mounted", "mountPoint", mp, "device", m.Source)
		return false, nil
	}
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return false, fmt.Errorf("creating mount point %s: %w", mp, err)
	}
	var data string
	if t.fsType == "btrfs" && len(t.members) > 1 {
		// Naming every device spares a `btrfs device scan` before mounting.
		data = "device=" + strings.Join(t.members, ",device=")
	}
	// noatime: nothing on the instance store reads access times, and
	// updating them turns image and log reads into writes.
	if err := unix.Mount(t.device, mp, t.fsType, unix.MS_NOATIME, data); err != nil {
		return false, fmt.Errorf("mounting %s (%s) at %s: %w", t.device, t.fsType, mp, err)
	}
	s.log.Info("mounted instance store", "device", t.device, "filesystem", t.fsType, "mountPoint", mp)
	return true, nil
}

// bindAll bind-mounts each configured folder from the instance store,
// copying the folder's content there the first time. It returns how many
// binds it made.
func (s *setup) bindAll() (int, error) {
	made := 0
	for _, b := range s.opts.Binds {
		// Read again each time: an earlier bind may hold this one's path.
		mounts, err := readMounts(s.opts.ProcRoot)
		if err != nil {
			return made, err
		}
		eph := mountAt(mounts, s.opts.MountPoint)
		if eph == nil {
			return made, fmt.Errorf("%s is not mounted", s.opts.MountPoint)
		}
		if m := mountAt(mounts, b.Path); m != nil {
			if !isOurBind(m, eph, b) {
				return made, fmt.Errorf("%s is already a mount of %s (%s, root %s); not binding the instance store over it", b.Path, m.Source, m.FSType, m.Root)
			}
			if err := setPropagation(b); err != nil {
				return made, err
			}
			continue
		}
		if under := mountsUnder(mounts, b.Path); len(under) > 0 {
			return made, fmt.Errorf("%s has mounts inside it (%s): something (the kubelet, containerd) has used it, so it cannot be moved; stop it and unmount them first",
				b.Path, strings.Join(under, ", "))
		}
		src := filepath.Join(s.opts.MountPoint, b.dirName())
		if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
			if err := s.populate(b, src); err != nil {
				return made, err
			}
		} else if err != nil {
			return made, fmt.Errorf("checking %s: %w", src, err)
		}
		if err := os.MkdirAll(b.Path, 0o755); err != nil {
			return made, fmt.Errorf("creating %s: %w", b.Path, err)
		}
		if err := unix.Mount(src, b.Path, "", unix.MS_BIND, ""); err != nil {
			return made, fmt.Errorf("bind-mounting %s onto %s: %w", src, b.Path, err)
		}
		if err := setPropagation(b); err != nil {
			return made, err
		}
		s.log.Info("bound folder to the instance store", "path", b.Path, "source", src, "shared", b.Shared)
		made++
	}
	return made, nil
}

func setPropagation(b Bind) error {
	flags, name := uintptr(unix.MS_PRIVATE), "private"
	if b.Shared {
		flags, name = unix.MS_SHARED|unix.MS_REC, "rshared"
	}
	if err := unix.Mount("", b.Path, "", flags, ""); err != nil {
		return fmt.Errorf("making %s %s: %w", b.Path, name, err)
	}
	return nil
}

// populate makes the bind's folder on the instance store: a copy of what
// the path holds on the root disk, made in a staging folder and renamed into
// place once complete. The original stays where it is, under the bind.
func (s *setup) populate(b Bind, src string) error {
	fi, err := os.Lstat(b.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(src, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", src, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("checking %s: %w", b.Path, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s is a symbolic link; configure the folder it points to instead", b.Path)
	case !fi.IsDir():
		return fmt.Errorf("%s is not a folder", b.Path)
	}
	staging := filepath.Join(s.opts.MountPoint, stagingDir, b.dirName())
	if err := os.RemoveAll(staging); err != nil {
		return fmt.Errorf("removing the unfinished copy %s: %w", staging, err)
	}
	if err := os.MkdirAll(filepath.Dir(staging), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(staging), err)
	}
	stats, err := copyTree(b.Path, staging)
	if err != nil {
		return fmt.Errorf("copying %s onto the instance store (the original is untouched): %w", b.Path, err)
	}
	if err := syncFS(staging); err != nil {
		return err
	}
	if err := os.Rename(staging, src); err != nil {
		return fmt.Errorf("moving the copy of %s into place: %w", b.Path, err)
	}
	if err := syncFS(src); err != nil {
		return err
	}
	if stats.files+stats.dirs+stats.others > 1 {
		s.note("copied %s (%d files, %d folders, %d other entries, %d bytes) onto the instance store; the originals stay on the root disk, hidden under the bind mount",
			b.Path, stats.files, stats.dirs, stats.others, stats.bytes)
	}
	if stats.sockets > 0 {
		s.log.Info("skipped sockets, which are useless once their server is gone", "path", b.Path, "count", stats.sockets)
	}
	return nil
}

// syncFS flushes the whole filesystem holding p, once, rather than each
// copied file.
func syncFS(p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", p, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("syncing the filesystem of %s: %w", p, err)
	}
	return nil
}

// readMounts reads this process's mount table.
func readMounts(procRoot string) ([]*mountinfo.Info, error) {
	p := filepath.Join(procRoot, "self", "mountinfo")
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	defer f.Close()
	mounts, err := mountinfo.GetMountsFromReader(f, nil)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	return mounts, nil
}

// mountAt returns the mount visible at p: the last one there, as later
// mounts stack on earlier ones.
func mountAt(mounts []*mountinfo.Info, p string) *mountinfo.Info {
	var top *mountinfo.Info
	for _, m := range mounts {
		if m.Mountpoint == p {
			top = m
		}
	}
	return top
}

// mountsUnder lists the mount points strictly inside p.
func mountsUnder(mounts []*mountinfo.Info, p string) []string {
	var out []string
	for _, m := range mounts {
		if strings.HasPrefix(m.Mountpoint, p+"/") && !slices.Contains(out, m.Mountpoint) {
			out = append(out, m.Mountpoint)
		}
	}
	return out
}

// isOurBind reports whether m is the bind of b's folder from eph: the same
// filesystem, rooted at the folder.
func isOurBind(m, eph *mountinfo.Info, b Bind) bool {
	return m.Major == eph.Major && m.Minor == eph.Minor && m.Root == path.Join(eph.Root, b.dirName())
}

// sourceMatches reports whether a mount's source is t: its device or, for
// btrfs, any of its disks, compared after resolving symbolic links
// (/dev/md/ephemeral is a link to /dev/md127).
func sourceMatches(source string, t target) bool {
	src := resolve(source)
	if src == resolve(t.device) {
		return true
	}
	if t.fsType == "btrfs" {
		for _, m := range t.members {
			if src == resolve(m) {
				return true
			}
		}
	}
	return false
}

func resolve(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// shared reports whether a mount is in a shared peer group.
func shared(m *mountinfo.Info) bool {
	for _, f := range strings.Fields(m.Optional) {
		if strings.HasPrefix(f, "shared:") {
			return true
		}
	}
	return false
}
