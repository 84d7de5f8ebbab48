package ebs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// ByVolumeIDDir is where the volume-id links live, relative to the /dev
// root: /dev/disk/autonode/by-volume-id/vol-0abc… points at /dev/nvmeNn1.
const ByVolumeIDDir = "disk/autonode/by-volume-id"

// tmpLinkInfix marks the temporary link that is renamed over a link to
// replace it atomically; Sync removes any a crash left behind.
const tmpLinkInfix = ".autonode-tmp-"

// namespaceName matches the kernel's names of the first namespace of an
// NVMe controller, the one an EBS volume or instance-store disk exposes.
var namespaceName = regexp.MustCompile(`^nvme[0-9]+n1$`)

// links manages the stable names under one /dev root. Targets are relative,
// as udev writes them, so a tree stays valid wherever it is mounted (and a
// test tree never points into the real /dev).
type links struct {
	devRoot string
}

func (l links) byVolumeID(volumeID string) string {
	return filepath.Join(l.devRoot, ByVolumeIDDir, volumeID)
}

func (l links) byName(name string) string {
	return filepath.Join(l.devRoot, name)
}

// resolve returns the path a link points at (one level, cleaned) and the raw
// target. It returns an error wrapping fs.ErrNotExist when there is no link.
func (l links) resolve(link string) (target, raw string, err error) {
	raw, err = os.Readlink(link)
	if err != nil {
		return "", "", err
	}
	if filepath.IsAbs(raw) {
		return filepath.Clean(raw), raw, nil
	}
	return filepath.Join(filepath.Dir(link), raw), raw, nil
}

// ensure makes link point at device. It replaces another link atomically
// (rename over it) and refuses to replace anything that is not a symlink:
// a real device node or file at that name is never ours to remove.
func (l links) ensure(link, device string) (changed bool, err error) {
	rel, err := filepath.Rel(filepath.Dir(link), device)
	if err != nil {
		return false, fmt.Errorf("link %s: %w", link, err)
	}
	fi, err := os.Lstat(link)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return false, fmt.Errorf("link %s: %w", link, err)
	case fi.Mode()&fs.ModeSymlink == 0:
		return false, fmt.Errorf("link %s: refusing to replace a %s with a link to %s", link, fileKind(fi.Mode()), device)
	default:
		if raw, err := os.Readlink(link); err == nil && raw == rel {
			return false, nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return false, fmt.Errorf("link %s: %w", link, err)
	}
	tmp := filepath.Join(filepath.Dir(link), "."+filepath.Base(link)+tmpLinkInfix+randomSuffix())
	if err := os.Symlink(rel, tmp); err != nil {
		return false, fmt.Errorf("link %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		_ = os.Remove(tmp)
		return false, fmt.Errorf("link %s: %w", link, err)
	}
	return true, nil
}

// removeIf removes link if it is still the symlink with raw target raw, so
// that a link someone just repaired (udev, another call) survives.
func (l links) removeIf(link, raw string) error {
	now, err := os.Readlink(link)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && now != raw) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("link %s: %w", link, err)
	}
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing link %s: %w", link, err)
	}
	return nil
}

// namespaces lists the NVMe namespace devices (nvmeNn1) under the root.
func (l links) namespaces() ([]string, error) {
	entries, err := os.ReadDir(l.devRoot)
	if err != nil {
		return nil, fmt.Errorf("listing NVMe devices: %w", err)
	}
	var out []string
	for _, e := range entries {
		if namespaceName.MatchString(e.Name()) {
			out = append(out, filepath.Join(l.devRoot, e.Name()))
		}
	}
	return out, nil
}

// isNamespace reports whether path names an NVMe namespace directly under
// the root: only links pointing there are ours to judge.
func (l links) isNamespace(path string) bool {
	return filepath.Dir(path) == filepath.Clean(l.devRoot) && namespaceName.MatchString(filepath.Base(path))
}

func isTmpLink(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, tmpLinkInfix)
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeDevice != 0:
		return "device node"
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	}
	return "non-link file"
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}
