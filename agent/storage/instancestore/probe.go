package instancestore

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
)

// Signature is what blkid finds at the start of a device: a filesystem, an
// md member's superblock or a partition table.
type Signature struct {
	Type   string // TYPE: xfs, ext4, btrfs, linux_raid_member, ...
	Label  string // LABEL: the filesystem label, or an md member's home-host:name
	UUID   string // UUID: the filesystem's, or the md array's
	PTType string // PTTYPE: a partition table (gpt, dos)
	// Ambivalent: blkid found several signatures that disagree; such a
	// device is never ours.
	Ambivalent bool
}

// Blank reports whether blkid found nothing on the device.
func (s Signature) Blank() bool { return s.Type == "" && s.PTType == "" && !s.Ambivalent }

func (s Signature) String() string {
	switch {
	case s.Ambivalent:
		return "several conflicting signatures"
	case s.Blank():
		return "nothing"
	case s.PTType != "" && s.Type == "":
		return "a " + s.PTType + " partition table"
	}
	out := "a " + s.Type + " signature"
	if s.Label != "" {
		out += fmt.Sprintf(" labelled %q", s.Label)
	}
	if s.PTType != "" {
		out += " and a " + s.PTType + " partition table"
	}
	return out
}

// blkid exit codes with -p (blkid(8)).
const (
	blkidNothingFound = 2
	blkidAmbivalent   = 8
)

// probe reads the signatures on dev with blkid's low-level probe, which
// reads the device itself rather than blkid's cache.
func probe(ctx context.Context, r Runner, dev string) (Signature, error) {
	out, err := r.Run(ctx, "blkid", "-p", "-o", "export", dev)
	switch exitCode(err) {
	case blkidNothingFound:
		return Signature{}, nil
	case blkidAmbivalent:
		return Signature{Ambivalent: true}, nil
	}
	if err != nil {
		return Signature{}, fmt.Errorf("probing %s: %w", dev, err)
	}
	return parseBlkid(out)
}

// parseBlkid parses blkid's export format: KEY=value lines, where value has
// unsafe characters backslash-escaped. Labels come from the disk, so this
// parses untrusted input.
func parseBlkid(out []byte) (Signature, error) {
	var s Signature
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok || key == "" {
			return Signature{}, fmt.Errorf("parsing blkid output: line %q is not KEY=value", truncate(line, 80))
		}
		val = unescapeBlkid(val)
		switch key {
		case "TYPE":
			s.Type = val
		case "LABEL":
			s.Label = val
		case "UUID":
			s.UUID = val
		case "PTTYPE":
			s.PTType = val
		}
	}
	if err := sc.Err(); err != nil {
		return Signature{}, fmt.Errorf("parsing blkid output: %w", err)
	}
	return s, nil
}

// unescapeBlkid undoes blkid's export quoting, which puts a backslash
// before every character that is not safe in a shell word.
func unescapeBlkid(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// kind classifies a signature against what setup writes.
type kind int

const (
	kindBlank   kind = iota
	kindOurFS        // a filesystem labelled Label
	kindMember       // a member of our md array
	kindForeign      // anything else: never formatted without --force
)

func (k kind) String() string {
	return [...]string{"blank", "ours", "a member of our array", "foreign"}[k]
}

func classify(s Signature) kind {
	switch {
	case s.Blank():
		return kindBlank
	case s.Ambivalent || s.PTType != "":
		return kindForeign
	case s.Label == Label && (s.Type == "xfs" || s.Type == "ext4" || s.Type == "btrfs"):
		return kindOurFS
	case s.Type == "linux_raid_member" && (s.Label == ArrayName || strings.HasSuffix(s.Label, ":"+ArrayName)):
		// mdadm stores the name as home-host:name unless the home host is
		// unset; the host changes when an instance is re-launched.
		return kindMember
	}
	return kindForeign
}
