package diagnostics

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autonode/autonode/sandbox/privileged"
)

// journalEntry is one entry of a fixture journal.
type journalEntry struct {
	unit, ident, message string
}

// writeJournal writes entries, stamped now, into a fresh folder as a journal
// file made by systemd-journal-remote from the export format, and returns
// the folder. It skips (fails with CI=true) without systemd-journal-remote.
func writeJournal(t *testing.T, entries []journalEntry) string {
	t.Helper()
	var bin string
	for _, p := range []string{"/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"} {
		if _, err := os.Stat(p); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		privileged.Missing(t, "systemd-journal-remote", errors.New("not in /lib/systemd or /usr/lib/systemd"))
	}
	var export bytes.Buffer
	now := time.Now().UnixMicro()
	for i, e := range entries {
		fmt.Fprintf(&export, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=0123456789abcdef0123456789abcdef\n", now+int64(i), 1000+i)
		fmt.Fprintf(&export, "_SYSTEMD_UNIT=%s\nSYSLOG_IDENTIFIER=%s\n_PID=%d\n_HOSTNAME=testnode\nMESSAGE=%s\n\n", e.unit, e.ident, 100+i, e.message)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, "--output="+filepath.Join(dir, "fixture.journal"), "-")
	cmd.Stdin = &export
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-journal-remote: %v\n%s", err, out)
	}
	return dir
}

// readBundle opens a tar.gz and returns its files by path, without the
// bundle's top folder, checking that every entry sits in that one folder.
func readBundle(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	gz, err := gzip.NewReader(r)
	if err != nil {
		t.Fatalf("bundle is not gzip: %v", err)
	}
	tr := tar.NewReader(gz)
	files := map[string]string{}
	top := ""
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("reading bundle: %v", err)
		}
		dir, rest, ok := strings.Cut(hdr.Name, "/")
		if !ok || (top != "" && dir != top) {
			t.Fatalf("bundle entry %q is not under one top folder (%q)", hdr.Name, top)
		}
		top = dir
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s: %v", hdr.Name, err)
		}
		files[rest] = string(data)
	}
}

// writeKmsgFixture writes kernel log records as /dev/kmsg gives them.
func writeKmsgFixture(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kmsg")
	data := "6,1,1000,-;Linux version 6.18 (fixture)\n" +
		"3,2,2500000,-;nvme nvme0: I/O 12 QID 3 timeout, aborting\n SUBSYSTEM=nvme\n DEVICE=c259:0\n"
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
