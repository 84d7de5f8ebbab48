package variantcheck

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// This file checks udev rules files offline. Debian 12's systemd 252 has no
// `udevadm verify` (it arrived in systemd 253), so the rules are parsed here
// by the grammar of udev(7) as systemd 252 reads it (src/udev/udev-rules.c):
// known keys with the operators each accepts, `{attr}` where a key needs
// one, quoted values, the substitutions udev expands, and every GOTO
// landing on a LABEL further down. It is stricter than udev 252 in one
// place: tokens must be separated by a comma or a blank (later udev warns).
// What this does not catch is a rule that parses but matches nothing on a
// real device.

// UdevToken is one KEY{attr}OP"value" of a rule.
type UdevToken struct {
	Key, Attr, Op, Value string
}

// UdevRule is one logical line of a rules file.
type UdevRule struct {
	Line   int
	Tokens []UdevToken
}

// udevKey says how udev accepts one key.
type udevKey struct {
	match, assign bool     // whether ==/!= and =/+=/-=/:= are allowed
	attr          int      // attrNone, attrRequired or attrOptional
	attrs         []string // the allowed {attr} values, when fixed
	onlyAssign    bool     // only "=" (LABEL, GOTO)
	noRemove      bool     // no "-="
}

const (
	attrNone = iota
	attrRequired
	attrOptional
)

// udevKeys lists the keys of udev(7) in systemd 252.
func udevKeys() map[string]udevKey {
	m := func() udevKey { return udevKey{match: true} }
	both := func() udevKey { return udevKey{match: true, assign: true} }
	withAttr := func(k udevKey, mode int, attrs ...string) udevKey { k.attr, k.attrs = mode, attrs; return k }
	noRemove := func(k udevKey) udevKey { k.noRemove = true; return k }
	return map[string]udevKey{
		"ACTION": m(), "DEVPATH": m(), "KERNEL": m(), "KERNELS": m(), "SUBSYSTEM": m(), "SUBSYSTEMS": m(),
		"DRIVER": m(), "DRIVERS": m(), "TAGS": m(), "RESULT": m(),
		"ATTRS":   withAttr(m(), attrRequired),
		"CONST":   withAttr(m(), attrRequired, "arch", "virt"),
		"TEST":    withAttr(m(), attrOptional), // {attr} is a file mode
		"SYMLINK": both(), "TAG": both(), "OWNER": both(), "GROUP": both(), "MODE": both(),
		"NAME":     noRemove(both()),
		"ENV":      noRemove(withAttr(both(), attrRequired)),
		"ATTR":     noRemove(withAttr(both(), attrRequired)),
		"SYSCTL":   noRemove(withAttr(both(), attrRequired)),
		"SECLABEL": withAttr(udevKey{assign: true}, attrRequired),
		"RUN":      withAttr(udevKey{assign: true}, attrOptional, "program", "builtin"),
		"OPTIONS":  {assign: true, noRemove: true},
		// PROGRAM and IMPORT are matches that udev also accepts written as
		// assignments.
		"PROGRAM": noRemove(both()),
		"IMPORT":  noRemove(withAttr(both(), attrRequired, "program", "builtin", "file", "db", "cmdline", "parent")),
		"LABEL":   {assign: true, onlyAssign: true},
		"GOTO":    {assign: true, onlyAssign: true},
	}
}

var (
	udevToken = regexp.MustCompile(`^([A-Z]+)(?:\{([^{}]*)\})?(==|!=|\+=|-=|:=|=)"`)
	// The substitutions of udev(7), long and short forms.
	udevSubst    = regexp.MustCompile(`\$\{?[a-z]*\}?|%.`)
	udevSubstOK  = regexp.MustCompile(`^(\$(kernel|number|devpath|id|driver|attr|sysfs|env|major|minor|result|parent|name|links|root|sys|devnode|tempnode|\$)|%[knpbsEMmcPNrS%])$`)
	udevNeedsArg = regexp.MustCompile(`^(\$(attr|sysfs|env)|%[sE])$`)
)

// ParseUdevRules parses a udev rules file and checks it as udev would,
// naming the file and line of every problem.
func ParseUdevRules(name string, data []byte) ([]UdevRule, error) {
	var rules []UdevRule
	var errs []error
	fail := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", name, line, fmt.Sprintf(format, args...)))
	}
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		start := i + 1
		text := lines[i]
		for strings.HasSuffix(text, "\\") && i+1 < len(lines) {
			i++
			text = strings.TrimSuffix(text, "\\") + lines[i]
		}
		text = strings.TrimSpace(text)
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		rule, err := parseUdevLine(text)
		if err != nil {
			fail(start, "%v", err)
			continue
		}
		rule.Line = start
		rules = append(rules, rule)
	}

	keys := udevKeys()
	labels := map[string]int{} // label -> index of its rule
	for i, r := range rules {
		for _, t := range r.Tokens {
			if t.Key == "LABEL" {
				if _, dup := labels[t.Value]; dup {
					fail(r.Line, "LABEL %q defined twice", t.Value)
				}
				labels[t.Value] = i
			}
		}
	}
	for i, r := range rules {
		for _, t := range r.Tokens {
			k, ok := keys[t.Key]
			if !ok {
				fail(r.Line, "unknown key %s", t.Key)
				continue
			}
			isMatch := t.Op == "==" || t.Op == "!="
			switch {
			case k.onlyAssign && t.Op != "=":
				fail(r.Line, "%s takes only =, not %s", t.Key, t.Op)
			case k.noRemove && t.Op == "-=":
				fail(r.Line, "%s takes no -=", t.Key)
			case isMatch && !k.match:
				fail(r.Line, "%s cannot be matched (%s)", t.Key, t.Op)
			case !isMatch && !k.assign:
				fail(r.Line, "%s cannot be assigned (%s); use == or !=", t.Key, t.Op)
			}
			switch {
			case k.attr == attrNone && t.Attr != "":
				fail(r.Line, "%s takes no {attribute}", t.Key)
			case k.attr == attrRequired && t.Attr == "":
				fail(r.Line, "%s needs an {attribute}", t.Key)
			case len(k.attrs) > 0 && t.Attr != "" && !slices.Contains(k.attrs, t.Attr):
				fail(r.Line, "%s{%s}: want one of %s", t.Key, t.Attr, strings.Join(k.attrs, ", "))
			}
			// udev sets these itself and refuses rules that assign them.
			if t.Key == "ENV" && !isMatch && slices.Contains([]string{"ACTION", "DEVLINKS", "DEVNAME", "DEVPATH",
				"DEVTYPE", "DRIVER", "IFINDEX", "MAJOR", "MINOR", "SEQNUM", "SUBSYSTEM", "TAGS"}, t.Attr) {
				fail(r.Line, "ENV{%s} cannot be set", t.Attr)
			}
			if t.Key == "GOTO" {
				if j, ok := labels[t.Value]; !ok || j <= i {
					fail(r.Line, "GOTO %q: no LABEL below it", t.Value)
				}
			}
			if err := checkUdevSubst(t.Value); err != nil {
				fail(r.Line, "%s: %v", t.Key, err)
			}
		}
	}
	return rules, errors.Join(errs...)
}

// parseUdevLine splits one logical line into its tokens.
func parseUdevLine(text string) (UdevRule, error) {
	var r UdevRule
	rest := text
	for rest != "" {
		m := udevToken.FindStringSubmatch(rest)
		if m == nil {
			return r, fmt.Errorf("cannot parse %q: want KEY[{attr}]OP\"value\"", rest)
		}
		rest = rest[len(m[0]):]
		var value strings.Builder
		closed := false
		for i := 0; i < len(rest); i++ {
			switch c := rest[i]; {
			case c == '\\' && i+1 < len(rest) && rest[i+1] == '"':
				value.WriteByte('"')
				i++
			case c == '"':
				rest, closed = rest[i+1:], true
			default:
				value.WriteByte(c)
			}
			if closed {
				break
			}
		}
		if !closed {
			return r, fmt.Errorf("%s: unterminated value", m[1])
		}
		r.Tokens = append(r.Tokens, UdevToken{Key: m[1], Attr: m[2], Op: m[3], Value: value.String()})
		// Tokens are separated by a comma, blanks or both.
		trimmed := strings.TrimLeft(rest, " \t")
		trimmed, comma := strings.CutPrefix(trimmed, ",")
		trimmed = strings.TrimLeft(trimmed, " \t")
		if trimmed != "" && !comma && len(trimmed) == len(rest) {
			return r, fmt.Errorf("%s: no separator before %q", m[1], trimmed)
		}
		rest = trimmed
	}
	return r, nil
}

// checkUdevSubst checks each $name or %c substitution of a value.
func checkUdevSubst(v string) error {
	for _, loc := range udevSubst.FindAllStringIndex(v, -1) {
		s := v[loc[0]:loc[1]]
		base := strings.Trim(s, "{}")
		if strings.HasPrefix(s, "${") {
			base = "$" + strings.Trim(s[1:], "{}")
		}
		if !udevSubstOK.MatchString(base) {
			return fmt.Errorf("unknown substitution %q", s)
		}
		if udevNeedsArg.MatchString(base) && !strings.HasPrefix(v[loc[1]:], "{") {
			return fmt.Errorf("substitution %s needs {name}", s)
		}
	}
	return nil
}

// UdevProgram is a command a rule runs, and the token that runs it.
type UdevProgram struct {
	Token UdevToken
	Args  []string // split into words as udev splits them
}

// Programs returns the commands a rule runs: IMPORT{program}, PROGRAM and
// RUN{program} (or plain RUN) values.
func (r UdevRule) Programs() []UdevProgram {
	var out []UdevProgram
	for _, t := range r.Tokens {
		if (t.Key == "IMPORT" && t.Attr == "program") || t.Key == "PROGRAM" ||
			(t.Key == "RUN" && (t.Attr == "" || t.Attr == "program")) {
			out = append(out, UdevProgram{Token: t, Args: strings.Fields(t.Value)})
		}
	}
	return out
}
