package variantcheck

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/autonode/autonode/agent/storage/ebs"
)

func TestParseUdevRules(t *testing.T) {
	valid := []struct {
		name, rules string
		programs    [][]string
	}{
		{"empty", "# nothing\n\n", nil},
		{"match and link", `KERNEL=="nvme[0-9]*n[0-9]*", ATTRS{model}=="x", SYMLINK+="disk/%k"`, nil},
		{"blank separated", `SUBSYSTEM=="block" ENV{ID}=="?*"  SYMLINK+="$env{ID}%n"`, nil},
		{"goto forward", "ACTION==\"remove\", GOTO=\"end\"\nLABEL=\"end\"\n", nil},
		{"continued line", "KERNEL==\"a\", \\\n  RUN+=\"/bin/x $devnode\"", [][]string{{"/bin/x", "$devnode"}}},
		{"import program", `IMPORT{program}="/usr/bin/p --f=env $devnode", PROGRAM="/usr/bin/q", RUN{builtin}+="kmod load x"`,
			[][]string{{"/usr/bin/p", "--f=env", "$devnode"}, {"/usr/bin/q"}}},
		{"escaped quote", `ENV{X}=="a\"b"`, nil},
		{"import parent", `IMPORT{parent}="AUTONODE_EBS_*"`, nil},
	}
	for _, c := range valid {
		t.Run(c.name, func(t *testing.T) {
			rules, err := ParseUdevRules("test.rules", []byte(c.rules))
			if err != nil {
				t.Fatal(err)
			}
			var progs [][]string
			for _, r := range rules {
				for _, p := range r.Programs() {
					progs = append(progs, p.Args)
				}
			}
			if !slices.EqualFunc(progs, c.programs, slices.Equal) {
				t.Errorf("programs %q, want %q", progs, c.programs)
			}
		})
	}

	invalid := []struct{ name, rules, want string }{
		{"unknown key", `KERNAL=="nvme*"`, "unknown key KERNAL"},
		{"lower-case key", `kernel=="nvme*"`, "cannot parse"},
		{"unterminated", `KERNEL=="nvme*`, "unterminated value"},
		{"unquoted", `KERNEL==nvme*`, "cannot parse"},
		{"no separator", `KERNEL=="a"SUBSYSTEM=="b"`, "no separator"},
		{"assign a match-only key", `KERNEL="nvme*"`, "KERNEL cannot be assigned"},
		{"match an assign-only key", `OPTIONS=="x"`, "OPTIONS cannot be matched"},
		{"label with ==", `LABEL=="x"`, "LABEL takes only ="},
		{"goto without label", `GOTO="missing"`, `GOTO "missing": no LABEL below it`},
		{"goto backwards", "LABEL=\"up\"\nGOTO=\"up\"", `GOTO "up": no LABEL below it`},
		{"label twice", "LABEL=\"x\"\nLABEL=\"x\"", `LABEL "x" defined twice`},
		{"env without attr", `ENV=="x"`, "ENV needs an {attribute}"},
		{"kernel with attr", `KERNEL{x}=="x"`, "KERNEL takes no {attribute}"},
		{"import type", `IMPORT{programm}="/bin/x"`, "IMPORT{programm}: want one of"},
		{"unknown substitution", `SYMLINK+="$devnod"`, `unknown substitution "$devnod"`},
		{"env substitution without name", `SYMLINK+="$env"`, "needs {name}"},
		{"unknown short substitution", `SYMLINK+="%z"`, `unknown substitution "%z"`},
		{"remove from IMPORT", `IMPORT{program}-="/bin/x"`, "IMPORT takes no -="},
		{"set DEVTYPE", `ENV{DEVTYPE}="disk"`, "ENV{DEVTYPE} cannot be set"},
	}
	for _, c := range invalid {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseUdevRules("test.rules", []byte(c.rules))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "test.rules:") {
				t.Errorf("ParseUdevRules(%q) = %v, want an error naming the file and %q", c.rules, err, c.want)
			}
		})
	}
}

// TestPackagedUdevRules parses every rules file the packages ship and
// checks that each names a file the spec installs and is named NN-name.rules,
// as udev orders them.
func TestPackagedUdevRules(t *testing.T) {
	root := repoRoot(t)
	files := findFiles(t, root, "packages/*/*.rules")
	if len(files) == 0 {
		t.Fatal("no udev rules in packages/")
	}
	for _, f := range files {
		if _, err := ParseUdevRules(f, readFile(t, f)); err != nil {
			t.Error(err)
		}
		base := filepath.Base(f)
		if len(base) < 4 || base[0] < '0' || base[0] > '9' || base[1] < '0' || base[1] > '9' || base[2] != '-' {
			t.Errorf("%s: udev reads rules in lexical order; name it NN-name.rules", base)
		}
		if base == "70-autonode-ebs.rules" {
			checkDocumentedRule(t, f, filepath.Join(root, "docs", "storage.md"))
		}
		spec := expandSpec(t, filepath.Join(filepath.Dir(f), filepath.Base(filepath.Dir(f))+".spec"))
		if !strings.Contains(spec, "/usr/lib/udev/rules.d/"+base+"\n") {
			t.Errorf("%s: the spec does not install it in /usr/lib/udev/rules.d", base)
		}
	}
}

// checkDocumentedRule checks that the rule docs/storage.md shows is the
// one shipped, comments aside.
func checkDocumentedRule(t *testing.T, rules, doc string) {
	t.Helper()
	var shipped []string
	for _, l := range strings.Split(string(readFile(t, rules)), "\n") {
		if !strings.HasPrefix(l, "#") {
			shipped = append(shipped, l)
		}
	}
	want := strings.TrimSpace(strings.Join(shipped, "\n"))
	for _, block := range strings.Split(string(readFile(t, doc)), "```") {
		if strings.Contains(block, "LABEL=") && strings.TrimSpace(block) == want {
			return
		}
	}
	t.Errorf("%s does not show %s as shipped:\n%s", doc, filepath.Base(rules), want)
}

// checkUdevRules checks the rules the RPM installs against the binary it
// built: each program a rule runs is installed and accepts the rule's
// flags; the variables a rule reads back from `ebs-id --format=env` are
// ones the binary prints (found as "KEY=" in it, since printing them needs
// an EBS volume); the rule matches the model and writes the links the
// agent's own sync writes. udev itself is not run: it needs the device.
func checkUdevRules(t *testing.T, sysroot, agent string) {
	files := findFiles(t, filepath.Join(sysroot, "usr", "lib", "udev", "rules.d"), "*.rules")
	if len(files) == 0 {
		t.Fatal("the RPM installs no udev rules")
	}
	binary := readFile(t, agent)
	envRead := regexp.MustCompile(`\$env\{([A-Z0-9_]+)\}`)
	for _, f := range files {
		data := readFile(t, f)
		rules, err := ParseUdevRules(f, data)
		if err != nil {
			t.Error(err)
			continue
		}
		read := map[string]bool{} // AUTONODE_ variables the rules read
		for _, m := range envRead.FindAllStringSubmatch(string(data), -1) {
			read[m[1]] = true
		}
		var links []string
		for _, r := range rules {
			for _, tok := range r.Tokens {
				if tok.Key == "ENV" && strings.HasPrefix(tok.Attr, "AUTONODE_") && (tok.Op == "==" || tok.Op == "!=") {
					read[tok.Attr] = true
				}
				if tok.Key == "ATTRS" && tok.Attr == "model" && tok.Value != ebs.ModelEBS {
					t.Errorf("%s:%d: matches model %q, want %q", f, r.Line, tok.Value, ebs.ModelEBS)
				}
				if tok.Key == "SYMLINK" && strings.Contains(tok.Value, "by-volume-id") {
					links = append(links, tok.Value)
				}
			}
			for _, p := range r.Programs() {
				prog := p.Args
				info, err := os.Stat(filepath.Join(sysroot, prog[0]))
				if err != nil || info.Mode()&0o111 == 0 {
					t.Errorf("%s:%d: runs %s, which the RPM does not install as an executable (%v)", f, r.Line, prog[0], err)
					continue
				}
				if prog[0] != "/usr/bin/autonode-agent" {
					continue
				}
				// The rule's words without udev's substitutions (the
				// device), then --help: the flags parse, nothing runs.
				var args []string
				for _, a := range prog[1:] {
					if !strings.ContainsAny(a, "$%") {
						args = append(args, a)
					}
				}
				run(t, nil, agent, append(args, "--help")...)
				// The output must be what the token reads: KEY=value
				// lines for IMPORT, link names for PROGRAM's %c.
				want := map[string]string{"IMPORT": "--format=env", "PROGRAM": "--format=links"}[p.Token.Key]
				if args[0] == "ebs-id" && (want == "" || !slices.Contains(args, want)) {
					t.Errorf("%s:%d: %s runs %q; want ebs-id with %s", f, r.Line, p.Token.Key, prog, want)
				}
			}
		}
		if len(read) == 0 {
			t.Errorf("%s reads no AUTONODE_ variable from ebs-id", f)
		}
		for v := range read {
			if !bytes.Contains(binary, []byte(v+"=")) {
				t.Errorf("%s reads $env{%s}, which autonode-agent ebs-id --format=env does not print", f, v)
			}
		}
		for _, l := range links {
			if !strings.HasPrefix(l, ebs.ByVolumeIDDir+"/") {
				t.Errorf("%s: link %q is not under the agent's %s", f, l, ebs.ByVolumeIDDir)
			}
		}
		if len(links) == 0 {
			t.Errorf("%s writes no by-volume-id link", f)
		}
	}
}
