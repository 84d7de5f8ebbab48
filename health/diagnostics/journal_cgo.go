//go:build cgo

package diagnostics

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/sdjournal"
)

// readJournalUnit returns the entries of one systemd unit since a time, one
// a line as `journalctl -o short-iso` prints them, read with libsystemd
// (through sdjournal) from dir, or from the system journal when dir is
// empty. At most max bytes are returned; the newest entries are dropped.
func readJournalUnit(ctx context.Context, dir, unit string, since time.Time, max int64) ([]byte, error) {
	var j *sdjournal.Journal
	var err error
	if dir != "" {
		j, err = sdjournal.NewJournalFromDir(dir)
	} else {
		j, err = sdjournal.NewJournal()
	}
	if err != nil {
		return nil, fmt.Errorf("opening journal %s: %w", dir, err)
	}
	defer j.Close()
	if err := j.AddMatch(sdjournal.SD_JOURNAL_FIELD_SYSTEMD_UNIT + "=" + unit); err != nil {
		return nil, fmt.Errorf("journal match on unit %s: %w", unit, err)
	}
	if err := j.SeekRealtimeUsec(uint64(since.UnixMicro())); err != nil {
		return nil, fmt.Errorf("seeking journal for unit %s: %w", unit, err)
	}
	var out bytes.Buffer
	for n := 0; ; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		adv, err := j.Next()
		if err != nil {
			return nil, fmt.Errorf("reading journal for unit %s: %w", unit, err)
		}
		if adv == 0 {
			return out.Bytes(), nil
		}
		e, err := j.GetEntry()
		if err != nil {
			return nil, fmt.Errorf("reading journal entry for unit %s: %w", unit, err)
		}
		line := formatJournalEntry(e.RealtimeTimestamp, e.Fields)
		if int64(out.Len()+len(line)) > max {
			out.WriteString("[truncated: the unit's journal exceeds the bundle's per-source limit]\n")
			return out.Bytes(), nil
		}
		out.WriteString(line)
	}
}

// formatJournalEntry writes "2026-11-25T10:15:00.000000+0000 host ident[pid]: message\n".
func formatJournalEntry(usec uint64, f map[string]string) string {
	ts := time.UnixMicro(int64(usec)).UTC().Format("2006-01-02T15:04:05.000000Z0700")
	ident := f[sdjournal.SD_JOURNAL_FIELD_SYSLOG_IDENTIFIER]
	if ident == "" {
		ident = f[sdjournal.SD_JOURNAL_FIELD_COMM]
	}
	if pid := f[sdjournal.SD_JOURNAL_FIELD_PID]; pid != "" {
		if _, err := strconv.Atoi(pid); err == nil {
			ident += "[" + pid + "]"
		}
	}
	return ts + " " + f[sdjournal.SD_JOURNAL_FIELD_HOSTNAME] + " " + ident + ": " + f[sdjournal.SD_JOURNAL_FIELD_MESSAGE] + "\n"
}
