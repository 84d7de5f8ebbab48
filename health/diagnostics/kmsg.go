package diagnostics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// KmsgRecord is one record of the kernel log as /dev/kmsg gives it:
// "prio,seq,usec,flags[,...];message", then optional " KEY=value" lines.
type KmsgRecord struct {
	Facility, Level int
	Seq             uint64
	// Usec is microseconds since boot.
	Usec    uint64
	Message string
	// Dict holds the continuation lines (SUBSYSTEM=, DEVICE=), if any.
	Dict []string
}

// ParseKmsgRecord parses one /dev/kmsg record. The message is kept as the
// kernel escaped it (non-printable bytes as \xNN).
func ParseKmsgRecord(rec string) (KmsgRecord, error) {
	rec = strings.TrimSuffix(rec, "\n")
	head, body, ok := strings.Cut(rec, ";")
	if !ok {
		return KmsgRecord{}, fmt.Errorf("kmsg record %.40q: no ';' after the header", rec)
	}
	fields := strings.Split(head, ",")
	if len(fields) < 3 {
		return KmsgRecord{}, fmt.Errorf("kmsg record header %.40q: want prio,seq,usec", head)
	}
	prio, err := strconv.ParseUint(fields[0], 10, 32)
	if err != nil {
		return KmsgRecord{}, fmt.Errorf("kmsg record header %.40q: priority: %w", head, err)
	}
	var r KmsgRecord
	r.Facility, r.Level = int(prio>>3), int(prio&7)
	if r.Seq, err = strconv.ParseUint(fields[1], 10, 64); err != nil {
		return KmsgRecord{}, fmt.Errorf("kmsg record header %.40q: sequence: %w", head, err)
	}
	if r.Usec, err = strconv.ParseUint(fields[2], 10, 64); err != nil {
		return KmsgRecord{}, fmt.Errorf("kmsg record header %.40q: timestamp: %w", head, err)
	}
	lines := strings.Split(body, "\n")
	r.Message = lines[0]
	for _, l := range lines[1:] {
		if d, ok := strings.CutPrefix(l, " "); ok {
			r.Dict = append(r.Dict, d)
		}
	}
	return r, nil
}

// levels are the syslog level names, indexed by level.
var levels = [8]string{"emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"}

// String formats r as dmesg does, with the level: "[   12.345678] err: msg".
func (r KmsgRecord) String() string {
	return fmt.Sprintf("[%5d.%06d] %s: %s", r.Usec/1e6, r.Usec%1e6, levels[r.Level&7], r.Message)
}

// snapshotKmsg returns the kernel log as text, one record a line, without
// waiting for new records. A character device (/dev/kmsg) is read one record
// per read(2) in non-blocking mode until EAGAIN; a regular file (a test
// fixture) holds records one a line, continuations indented. At most max
// bytes are returned; the newest records are the ones dropped.
func snapshotKmsg(ctx context.Context, path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("opening kernel log %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("kernel log %s: %w", path, err)
	}
	var out bytes.Buffer
	emit := func(rec string) bool {
		line := rec
		if r, err := ParseKmsgRecord(rec); err == nil {
			line = r.String()
		}
		if int64(out.Len()+len(line)+1) > max {
			out.WriteString("[truncated: the kernel log exceeds the bundle's per-source limit]\n")
			return false
		}
		out.WriteString(line)
		out.WriteByte('\n')
		return true
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		data, err := io.ReadAll(io.LimitReader(f, max))
		if err != nil {
			return nil, fmt.Errorf("reading kernel log %s: %w", path, err)
		}
		for _, rec := range splitKmsgFile(string(data)) {
			if !emit(rec) {
				break
			}
		}
		return out.Bytes(), nil
	}
	// Each read returns exactly one record; the kernel's record limit is
	// under 8 KiB (PRINTK_MESSAGE_MAX plus the dictionary).
	buf := make([]byte, 16<<10)
	for n := 0; ; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		k, err := unix.Read(int(f.Fd()), buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return out.Bytes(), nil // no more records: a snapshot, not a follow
		case errors.Is(err, unix.EPIPE):
			continue // the record was overwritten while we read; the next follows
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return nil, fmt.Errorf("reading kernel log %s: %w", path, err)
		case k == 0:
			return out.Bytes(), nil
		}
		if !emit(string(buf[:k])) {
			return out.Bytes(), nil
		}
	}
}

// splitKmsgFile splits a fixture file into records: a line that starts with
// a space continues the record before it.
func splitKmsgFile(data string) []string {
	var recs []string
	for line := range strings.SplitSeq(data, "\n") {
		if strings.HasPrefix(line, " ") && len(recs) > 0 {
			recs[len(recs)-1] += "\n" + line
			continue
		}
		if line != "" {
			recs = append(recs, line)
		}
	}
	return recs
}
