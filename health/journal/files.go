package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// libsystemd skips a journal file it cannot use (a bad header, or one cut
// short by a full disk or a crash) without telling its caller, so the
// monitor checks the files itself to report what it cannot read.

// headerLen covers the header fields checked here (systemd's
// src/libsystemd/sd-journal/journal-def.h, struct Header).
const headerLen = 112

// ErrBadJournalFile wraps every problem found in a journal file's header.
var ErrBadJournalFile = errors.New("unusable journal file")

// checkHeader validates a journal file header against the file's size: the
// signature, and that the header and arena it declares fit in the file.
func checkHeader(h []byte, size int64) error {
	if len(h) < headerLen {
		return fmt.Errorf("%w: %d bytes, shorter than a header", ErrBadJournalFile, len(h))
	}
	if string(h[:8]) != "LPKSHHRH" {
		return fmt.Errorf("%w: bad signature %q", ErrBadJournalFile, h[:8])
	}
	headerSize := binary.LittleEndian.Uint64(h[88:])
	arenaSize := binary.LittleEndian.Uint64(h[96:])
	if headerSize < headerLen || headerSize > 1<<20 {
		return fmt.Errorf("%w: header size %d", ErrBadJournalFile, headerSize)
	}
	if size < 0 || arenaSize > uint64(size) || headerSize+arenaSize > uint64(size) {
		return fmt.Errorf("%w: truncated: header and arena need %d bytes, file has %d",
			ErrBadJournalFile, headerSize+arenaSize, size)
	}
	return nil
}

// journalFiles lists the *.journal and *.journal~ files in dir and in its
// subfolders one level down (journald's <machine-id> folders).
func journalFiles(dir string) ([]string, error) {
	var out []string
	for _, pattern := range []string{"*.journal", "*.journal~", "*/*.journal", "*/*.journal~"} {
		m, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return nil, fmt.Errorf("listing journal files in %s: %w", dir, err)
		}
		out = append(out, m...)
	}
	return out, nil
}

// checkFile checks one journal file's header.
func checkFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("journal file %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("journal file %s: %w", path, err)
	}
	h := make([]byte, headerLen)
	n, err := io.ReadFull(f, h)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("journal file %s: %w", path, err)
	}
	if err := checkHeader(h[:n], fi.Size()); err != nil {
		return fmt.Errorf("journal file %s: %w", path, err)
	}
	return nil
}
