package instancestore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// copyStats counts what copyTree copied.
type copyStats struct {
	files, dirs, others, sockets int
	bytes                        int64
}

// copyTree copies the folder src to dst (which must not exist) with
// everything a container runtime's or the kubelet's state needs kept:
// ownership, modes, times, extended attributes (SELinux labels, overlayfs's
// opaque markers), symbolic links, hard links, device nodes (overlayfs
// whiteouts) and FIFOs. Sockets are skipped. It stays on src's filesystem.
//
// Hand-written because no Go library copies all of these; cp -a does, but
// Bottlerocket ships no coreutils.
func copyTree(src, dst string) (copyStats, error) {
	var st copyStats
	var root unix.Stat_t
	if err := unix.Lstat(src, &root); err != nil {
		return st, fmt.Errorf("stat %s: %w", src, err)
	}
	type dirMeta struct {
		path string
		stat unix.Stat_t
	}
	var dirs []dirMeta
	type inode struct{ dev, ino uint64 }
	links := map[inode]string{}

	err := filepath.WalkDir(src, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, rel)
		var sys unix.Stat_t
		if err := unix.Lstat(p, &sys); err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		if sys.Dev != root.Dev {
			return fmt.Errorf("%s is on another filesystem than %s", p, src)
		}
		mode := sys.Mode & unix.S_IFMT
		if mode != unix.S_IFDIR && sys.Nlink > 1 {
			id := inode{sys.Dev, sys.Ino}
			if first, ok := links[id]; ok {
				if err := os.Link(first, out); err != nil {
					return fmt.Errorf("hard link %s: %w", out, err)
				}
				st.files++
				return nil
			}
			links[id] = out
		}
		switch mode {
		case unix.S_IFDIR:
			// Owner-only until its metadata is copied after its content.
			if err := os.Mkdir(out, 0o700); err != nil {
				return fmt.Errorf("creating %s: %w", out, err)
			}
			dirs = append(dirs, dirMeta{out, sys})
			st.dirs++
			return nil
		case unix.S_IFREG:
			n, err := copyFile(p, out)
			if err != nil {
				return err
			}
			st.files++
			st.bytes += n
		case unix.S_IFLNK:
			dest, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("reading link %s: %w", p, err)
			}
			if err := os.Symlink(dest, out); err != nil {
				return fmt.Errorf("creating link %s: %w", out, err)
			}
			st.others++
		case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
			if err := unix.Mknod(out, sys.Mode, int(sys.Rdev)); err != nil {
				return fmt.Errorf("creating node %s: %w", out, err)
			}
			st.others++
		case unix.S_IFSOCK:
			st.sockets++
			return nil
		default:
			return fmt.Errorf("%s: unknown file type %#o", p, mode)
		}
		return copyMeta(p, out, &sys)
	})
	if err != nil {
		return st, err
	}
	// Deepest first, so that setting a folder's times is not undone by
	// creating entries inside it.
	for _, d := range slices.Backward(dirs) {
		rel, _ := filepath.Rel(dst, d.path)
		if err := copyMeta(filepath.Join(src, rel), d.path, &d.stat); err != nil {
			return st, err
		}
	}
	return st, nil
}

func copyFile(src, dst string) (int64, error) {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return 0, fmt.Errorf("opening %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("creating %s: %w", dst, err)
	}
	// io.Copy uses copy_file_range or sendfile where the kernel allows.
	n, err := io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("copying %s: %w", src, err)
	}
	return n, nil
}

// copyMeta gives dst src's owner, mode, extended attributes and times.
func copyMeta(src, dst string, st *unix.Stat_t) error {
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", dst, err)
	}
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	if !isLink {
		// After chown, which clears the setuid and setgid bits.
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return fmt.Errorf("chmod %s: %w", dst, err)
		}
	}
	if err := copyXattrs(src, dst); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times of %s: %w", dst, err)
	}
	return nil
}

func copyXattrs(src, dst string) error {
	names, err := listXattrs(src)
	if err != nil {
		return err
	}
	for _, name := range names {
		val, err := getXattr(src, name)
		if err != nil {
			return err
		}
		if err := unix.Lsetxattr(dst, name, val, 0); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) {
				continue // the instance store's filesystem cannot hold it
			}
			return fmt.Errorf("setting attribute %s on %s: %w", name, dst, err)
		}
	}
	return nil
}

func listXattrs(p string) ([]string, error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Llistxattr(p, buf)
		switch {
		case errors.Is(err, unix.ERANGE) && size < 1<<20:
			continue
		case errors.Is(err, unix.EOPNOTSUPP):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("listing attributes of %s: %w", p, err)
		}
		var names []string
		for _, b := range splitNul(buf[:n]) {
			names = append(names, string(b))
		}
		return names, nil
	}
}

func getXattr(p, name string) ([]byte, error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		switch {
		case errors.Is(err, unix.ERANGE) && size < 1<<20:
			continue
		case err != nil:
			return nil, fmt.Errorf("reading attribute %s of %s: %w", name, p, err)
		}
		return buf[:n], nil
	}
}

func splitNul(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := slices.Index(b, 0)
		if i < 0 {
			i = len(b)
		}
		if i > 0 {
			out = append(out, b[:i])
		}
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return out
}
