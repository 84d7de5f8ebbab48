package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ErrMalformed classifies every error ParseRecord returns, so that a caller
// can tell a bad record (count it, go on) from a failing source.
var ErrMalformed = errors.New("malformed kmsg record")

// Flag is the one-character continuation flag of a kmsg record.
type Flag byte

// The flags the kernel has exported. Kernels since 4.9 mark every fragment
// of a continued line with FlagFragment and never emit FlagContinued.
const (
	FlagNone      Flag = '-' // a whole line
	FlagFragment  Flag = 'c' // the first (or, on newer kernels, any) fragment of a line
	FlagContinued Flag = '+' // a later fragment of the line before it (kernels before 4.9)
)

// Record is one parsed /dev/kmsg record.
type Record struct {
	// Facility is the syslog facility: 0 (kern) for the kernel's own
	// messages, 1 (user) or higher for lines written to /dev/kmsg.
	Facility int
	// Level is the syslog severity, 0 (emerg) to 7 (debug).
	Level int
	// Sequence numbers records from 0 at boot, without gaps.
	Sequence uint64
	// Timestamp is the monotonic time since boot at which it was logged.
	Timestamp time.Duration
	// Flag is the record's continuation flag.
	Flag Flag
	// Caller is the optional "caller=T123" value (CONFIG_PRINTK_CALLER).
	Caller string
	// Message is the text, with \xNN escapes decoded.
	Message string
	// Dict holds the dictionary (continuation) lines, e.g. SUBSYSTEM and
	// DEVICE; nil when the record has none.
	Dict map[string]string
}

// Fragment reports whether the record is part of a line split by the kernel.
func (r Record) Fragment() bool { return r.Flag == FlagFragment || r.Flag == FlagContinued }

// maxPriority bounds the prefix: 3 bits of level under 8 bits of facility
// (Documentation/ABI/testing/dev-kmsg).
const maxPriority = 1<<11 - 1

// ParseRecord parses one record as read(2) returns it from /dev/kmsg:
//
//	"priority,sequence,timestamp_usec,flags[,more...];message\n"
//
// followed by zero or more dictionary lines " KEY=value\n". The kernel
// escapes bytes below 0x20, above 0x7e and the backslash as \xNN; they are
// decoded here. Extra header values after flags are ignored as the ABI
// requires, except "caller=". Every error wraps ErrMalformed.
func ParseRecord(b []byte) (Record, error) {
	var r Record
	line, rest, _ := bytes.Cut(b, []byte{'\n'})
	header, msg, ok := bytes.Cut(line, []byte{';'})
	if !ok {
		return r, fmt.Errorf("%w: no ';' after the header in %q", ErrMalformed, clip(line))
	}
	var fields [4][]byte
	for i := range fields {
		if i == 3 {
			var more []byte
			fields[i], more, _ = bytes.Cut(header, []byte{','})
			for len(more) > 0 {
				var v []byte
				v, more, _ = bytes.Cut(more, []byte{','})
				if c, ok := bytes.CutPrefix(v, []byte("caller=")); ok {
					r.Caller = string(c)
				}
			}
			break
		}
		var found bool
		fields[i], header, found = bytes.Cut(header, []byte{','})
		if !found {
			return r, fmt.Errorf("%w: header %q has %d fields, want at least 4", ErrMalformed, clip(line), i+1)
		}
	}
	prio, err := parseUint(fields[0], maxPriority)
	if err != nil {
		return r, fmt.Errorf("%w: priority %q: %w", ErrMalformed, clip(fields[0]), err)
	}
	r.Facility, r.Level = int(prio>>3), int(prio&7)
	if r.Sequence, err = parseUint(fields[1], 1<<64-1); err != nil {
		return r, fmt.Errorf("%w: sequence %q: %w", ErrMalformed, clip(fields[1]), err)
	}
	usec, err := parseUint(fields[2], 1<<63/1000-1) // fits a Duration in ns
	if err != nil {
		return r, fmt.Errorf("%w: timestamp %q: %w", ErrMalformed, clip(fields[2]), err)
	}
	r.Timestamp = time.Duration(usec) * time.Microsecond
	if len(fields[3]) != 1 {
		return r, fmt.Errorf("%w: flags %q: want one of '-', 'c', '+'", ErrMalformed, clip(fields[3]))
	}
	switch f := Flag(fields[3][0]); f {
	case FlagNone, FlagFragment, FlagContinued:
		r.Flag = f
	default:
		return r, fmt.Errorf("%w: flags %q: want one of '-', 'c', '+'", ErrMalformed, clip(fields[3]))
	}
	r.Message = unescape(msg)

	for len(rest) > 0 {
		var kv []byte
		kv, rest, _ = bytes.Cut(rest, []byte{'\n'})
		if len(kv) == 0 {
			continue // a trailing blank line, as a file may end
		}
		if kv[0] != ' ' {
			return r, fmt.Errorf("%w: record %d: dictionary line %q does not start with a space", ErrMalformed, r.Sequence, clip(kv))
		}
		k, v, ok := bytes.Cut(kv[1:], []byte{'='})
		if !ok || len(k) == 0 {
			return r, fmt.Errorf("%w: record %d: dictionary line %q is not KEY=value", ErrMalformed, r.Sequence, clip(kv))
		}
		if r.Dict == nil {
			r.Dict = make(map[string]string, 2)
		}
		r.Dict[string(k)] = unescape(v)
	}
	return r, nil
}

// parseUint parses decimal digits only (no sign, no spaces), up to max.
func parseUint(b []byte, max uint64) (uint64, error) {
	if len(b) == 0 {
		return 0, errors.New("empty")
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errors.New("not a decimal number")
		}
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, err
	}
	if n > max {
		return 0, fmt.Errorf("above %d", max)
	}
	return n, nil
}

// unescape decodes the kernel's \xNN escapes. A backslash that does not
// start a valid escape is kept as it is: the kernel never writes one, but a
// test or an old log might, and dropping text would hide it.
func unescape(b []byte) string {
	i := bytes.IndexByte(b, '\\')
	if i < 0 {
		return string(b) // the common case: one allocation, no copy loop
	}
	out := make([]byte, 0, len(b))
	for i >= 0 {
		out = append(out, b[:i]...)
		b = b[i:]
		if len(b) >= 4 && b[1] == 'x' && isHex(b[2]) && isHex(b[3]) {
			out = append(out, unhex(b[2])<<4|unhex(b[3]))
			b = b[4:]
		} else {
			out = append(out, '\\')
			b = b[1:]
		}
		i = bytes.IndexByte(b, '\\')
	}
	return string(append(out, b...))
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// clip bounds what an error quotes from untrusted input.
func clip(b []byte) []byte {
	const max = 80
	if len(b) > max {
		return b[:max]
	}
	return b
}
