package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/autonode/autonode/internal/atomicfile"
)

// cursorFile is what the monitor persists: the journal's own cursor of the
// last entry it handled, which names the entry, its boot and its file.
type cursorFile struct {
	Cursor string `json:"cursor"`
}

var errCursorCorrupt = errors.New("corrupt journal cursor")

// loadCursor reads path; ok is false with no error when there is none, and
// an unusable file is an error wrapping errCursorCorrupt.
func loadCursor(path string) (cur string, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("reading journal cursor %s: %w", path, err)
	}
	var c cursorFile
	if err := json.Unmarshal(b, &c); err != nil {
		return "", false, fmt.Errorf("%w %s: %w", errCursorCorrupt, path, err)
	}
	// sd_journal_seek_cursor accepts a malformed cursor it cannot place, so
	// check its shape here: "s=…;i=…;b=…;m=…;t=…;x=…".
	if !validCursor(c.Cursor) {
		return "", false, fmt.Errorf("%w %s: cursor %q is not a journal cursor", errCursorCorrupt, path, truncate(c.Cursor, 80))
	}
	return c.Cursor, true, nil
}

func validCursor(c string) bool {
	if c == "" || strings.ContainsAny(c, "\n\x00") {
		return false
	}
	keys := map[string]bool{}
	for _, kv := range strings.Split(c, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || len(k) != 1 || v == "" {
			return false
		}
		keys[k] = true
	}
	return keys["s"] && keys["i"]
}

// saveCursor replaces the cursor file atomically.
func saveCursor(path, cur string) error {
	b, err := json.Marshal(cursorFile{Cursor: cur})
	if err != nil {
		return fmt.Errorf("encoding journal cursor %s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("journal cursor: %w", err)
	}
	return nil
}

// quarantineCursor moves a corrupt cursor to path.bad for a human to read.
func quarantineCursor(path string) (string, error) {
	return atomicfile.SetAside(path, ".bad", time.Time{})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
