// Package atomicfile replaces small state files (cursors, checkpoints,
// budgets) so that a crash or power loss leaves either the old content or
// the new, never a torn file: write a temporary file in the same folder,
// fsync it, rename it over the target, and fsync the folder so the rename
// itself is durable. (github.com/google/renameio does the first three but
// not the folder sync.)
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// WriteFile atomically replaces path with data, creating its folder.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating folder of %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing folder of %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing folder of %s: %w", path, err)
	}
	return nil
}

// SetAside renames a file that could not be read to path + suffix, or, when
// suffix is empty, path + ".corrupt-<UTC time>", so that a human can look
// at it and the next write does not destroy the evidence. It returns the
// new name.
func SetAside(path, suffix string, now time.Time) (string, error) {
	if suffix == "" {
		suffix = ".corrupt-" + now.UTC().Format("20060102T150405.000000000Z")
	}
	aside := path + suffix
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("setting %s aside: %w", path, err)
	}
	return aside, nil
}
