package system

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrMalformedMountInfo wraps every mountinfo line that cannot be parsed.
var ErrMalformedMountInfo = errors.New("malformed mountinfo line")

// MountInfo is one line of /proc/<pid>/mountinfo (proc(5)).
type MountInfo struct {
	ID, ParentID int
	// Root is the path within the filesystem that is mounted; MountPoint is
	// where, relative to the process's root. Both are unescaped.
	Root, MountPoint string
	// Options are the per-mount options (rw/ro, nosuid, ...); SuperOptions
	// are the filesystem's own. Either may say "ro".
	Options      []string
	FSType       string
	Source       string
	SuperOptions []string
}

// ReadOnly reports whether the mount or its superblock is read-only.
func (m MountInfo) ReadOnly() bool {
	return hasOption(m.Options, "ro") || hasOption(m.SuperOptions, "ro")
}

func hasOption(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

// ParseMountInfo parses one mountinfo line:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// The optional fields between the options and " - " vary in number. Paths
// are unescaped from the kernel's octal escapes (\040 for a space).
func ParseMountInfo(line string) (MountInfo, error) {
	var m MountInfo
	fields := strings.Fields(line)
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if len(fields) < 6 || sep < 0 || len(fields) < sep+3 {
		return m, fmt.Errorf("%w: %q", ErrMalformedMountInfo, truncate(line, 200))
	}
	var err error
	if m.ID, err = strconv.Atoi(fields[0]); err != nil {
		return m, fmt.Errorf("%w: mount id %q", ErrMalformedMountInfo, truncate(fields[0], 40))
	}
	if m.ParentID, err = strconv.Atoi(fields[1]); err != nil {
		return m, fmt.Errorf("%w: parent id %q", ErrMalformedMountInfo, truncate(fields[1], 40))
	}
	if m.Root, err = unescapeOctal(fields[3]); err != nil {
		return m, err
	}
	if m.MountPoint, err = unescapeOctal(fields[4]); err != nil {
		return m, err
	}
	if !strings.HasPrefix(m.MountPoint, "/") {
		return m, fmt.Errorf("%w: mount point %q is not absolute", ErrMalformedMountInfo, truncate(m.MountPoint, 200))
	}
	m.Options = strings.Split(fields[5], ",")
	m.FSType = fields[sep+1]
	if m.Source, err = unescapeOctal(fields[sep+2]); err != nil {
		return m, err
	}
	if len(fields) > sep+3 {
		m.SuperOptions = strings.Split(fields[sep+3], ",")
	}
	return m, nil
}

// unescapeOctal undoes the kernel's mangle(): space, tab, newline, backslash
// and '#' are written as \ooo.
func unescapeOctal(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("%w: bad escape in %q", ErrMalformedMountInfo, truncate(s, 200))
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("%w: bad escape in %q", ErrMalformedMountInfo, truncate(s, 200))
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}

// containingMount returns the mount that path lives on: the entry with the
// longest mount point that is path or a parent of it, the last listed when
// several are stacked on one point (the top one is visible).
func containingMount(mounts []MountInfo, path string) (MountInfo, bool) {
	path = filepath.Clean(path)
	best, found := MountInfo{}, false
	for _, m := range mounts {
		mp := filepath.Clean(m.MountPoint)
		if mp != "/" && path != mp && !strings.HasPrefix(path, mp+"/") {
			continue
		}
		if !found || len(mp) >= len(filepath.Clean(best.MountPoint)) {
			best, found = m, true
		}
	}
	return best, found
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
