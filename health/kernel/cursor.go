package kernel

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/autonode/autonode/internal/atomicfile"
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

// saveCursor replaces the cursor file atomically.
func saveCursor(path string, c cursor) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encoding kmsg cursor %s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("kmsg cursor: %w", err)
	}
	return nil
}

// quarantineCursor moves a corrupt cursor aside to path.bad, for a human to
// look at, so that the next save does not destroy the evidence.
func quarantineCursor(path string) (string, error) {
	return atomicfile.SetAside(path, ".bad", time.Time{})
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
