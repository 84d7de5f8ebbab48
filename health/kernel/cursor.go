package kernel

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// cursor is what the monitor persists so that a restart resumes after the
// last record it handled. Sequence numbers restart at each boot, so the
// cursor names the boot it belongs to.
type cursor struct {
	BootID   string `json:"boot_id"`
	Sequence uint64 `json:"sequence"`
}

// errCursorCorrupt wraps a cursor file that exists but cannot be used.
var errCursorCorrupt = errors.New("corrupt kmsg cursor")

// loadCursor reads path. It returns ok=false and no error when there is no
// file, and an error wrapping errCursorCorrupt when the file is unusable.
func loadCursor(path string) (c cursor, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("reading kmsg cursor %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, false, fmt.Errorf("%w %s: %w", errCursorCorrupt, path, err)
	}
	if c.BootID == "" {
		return c, false, fmt.Errorf("%w %s: no boot_id", errCursorCorrupt, path)
	}
	return c, true, nil
}

// saveCursor replaces path atomically: a crash leaves the old cursor or the
// new one, never a torn file. The directory is synced so that the rename
// itself survives a power loss.
func saveCursor(path string, c cursor) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encoding kmsg cursor %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating kmsg cursor folder %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing kmsg cursor %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	_, err = tmp.Write(append(b, '\n'))
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
		return fmt.Errorf("writing kmsg cursor %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("syncing kmsg cursor folder %s: %w", dir, err)
		}
	}
	return nil
}

// quarantineCursor moves a corrupt cursor aside to path.bad, for a human to
// look at, so that the next save does not destroy the evidence.
func quarantineCursor(path string) (string, error) {
	bad := path + ".bad"
	if err := os.Rename(path, bad); err != nil {
		return "", fmt.Errorf("moving corrupt kmsg cursor %s aside: %w", path, err)
	}
	return bad, nil
}

// readBootID returns this boot's id, e.g. from
// /proc/sys/kernel/random/boot_id.
func readBootID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading boot id %s: %w", path, err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("reading boot id %s: empty", path)
	}
	return id, nil
}
