package variantcheck

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// variantName is the variant's directory name under variants/ in the
// staged tree; variant/Cargo.toml's package name spells it with "_".
const variantName = "aws-k8s-1.36-autonode"

// repoRoot is the repository root: this package is internal/variantcheck.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "Twoliter.toml")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func decodeFile(t *testing.T, path string) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := toml.Unmarshal(readFile(t, path), &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

// manifests parses every kit, package and variant Cargo.toml of the
// repository, keyed by the path of its folder in the staged tree.
func manifests(t *testing.T, root string) map[string]Manifest {
	t.Helper()
	out := map[string]Manifest{}
	add := func(staged, path string) {
		m, err := ParseManifest(path, readFile(t, path))
		if err != nil {
			t.Error(err)
		}
		out[staged] = m
	}
	for _, glob := range []string{"kits/*/Cargo.toml", "packages/*/Cargo.toml"} {
		paths, err := filepath.Glob(filepath.Join(root, glob))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			rel, _ := filepath.Rel(root, filepath.Dir(p))
			add(rel, p)
		}
	}
	add("variants/"+variantName, filepath.Join(root, "variant", "Cargo.toml"))
	return out
}

func TestTwoliterToml(t *testing.T) {
	root := repoRoot(t)
	if err := CheckTwoliterProject("Twoliter.toml", readFile(t, filepath.Join(root, "Twoliter.toml"))); err != nil {
		t.Error(err)
	}
	doc := decodeFile(t, filepath.Join(root, "Twoliter.toml"))
	vendors, _ := doc["vendor"].(map[string]any)
	kits := map[string]bool{}
	for _, k := range doc["kit"].([]any) {
		k := k.(map[string]any)
		kits[k["name"].(string)] = true
		if _, ok := vendors[k["vendor"].(string)]; !ok {
			t.Errorf("kit %s: vendor %q is not defined under [vendor]", k["name"], k["vendor"])
		}
	}
	for _, want := range []string{"bottlerocket-core-kit", "bottlerocket-kernel-kit"} {
		if !kits[want] {
			t.Errorf("Twoliter.toml does not pin %s", want)
		}
	}
}

// TestManifests checks every Cargo manifest against buildsys's keys, and
// that the workspace, the kit and the variant name only things that exist.
func TestManifests(t *testing.T) {
	root := repoRoot(t)
	ms := manifests(t, root)

	ws := decodeFile(t, filepath.Join(root, "Cargo.toml"))
	members := toStrings(ws["workspace"].(map[string]any)["members"])
	var staged []string
	for dir := range ms {
		staged = append(staged, dir)
	}
	sort.Strings(staged)
	sort.Strings(members)
	if !slices.Equal(members, staged) {
		t.Errorf("Cargo.toml workspace members %q, want every kit, package and the variant: %q", members, staged)
	}

	var kits []string
	for dir, m := range ms {
		if want := strings.ReplaceAll(filepath.Base(dir), ".", "_"); m.Name != want && m.Kind != "package" {
			t.Errorf("%s: package name %q, want %q (buildsys takes the name from the folder)", dir, m.Name, want)
		}
		if m.Kind == "kit" {
			kits = append(kits, dir)
		}
		for dep, p := range m.BuildDependencies {
			target := filepath.Clean(filepath.Join(dir, p))
			if _, ok := ms[target]; !ok {
				t.Errorf("%s: build dependency %s at %s is not a kit or package of this project", dir, dep, target)
			}
		}
		if m.Kind == "package" {
			name, _ := m.Metadata["package-name"].(string)
			if name == "" {
				name = filepath.Base(dir)
			}
			if _, err := os.Stat(filepath.Join(root, dir, name+".spec")); err != nil {
				t.Errorf("%s: buildsys builds %s.spec: %v", dir, name, err)
			}
		}
	}

	// Every package is in the kit, so that the kit's repository carries it.
	if len(kits) != 1 {
		t.Fatalf("kits %q, want exactly one", kits)
	}
	inKit := map[string]bool{}
	for _, p := range ms[kits[0]].BuildDependencies {
		inKit[filepath.Clean(filepath.Join(kits[0], p))] = true
	}
	for dir, m := range ms {
		if m.Kind == "package" && !inKit[dir] {
			t.Errorf("%s is not a build dependency of %s", dir, kits[0])
		}
	}
	variant := ms["variants/"+variantName]
	if variant.Kind != "variant" {
		t.Fatalf("variant/Cargo.toml is a %q manifest", variant.Kind)
	}
	if got := variant.BuildDependencies["autonode-kit"]; got != "../../kits/autonode-kit" {
		t.Errorf("the variant builds on autonode-kit through %q", got)
	}
}

// externalPackages reads testdata/external-packages.txt: the packages the
// pinned kits provide that the variant may name.
func externalPackages(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "external-packages.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		out[fields[0]] = fields[1]
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestIncludedPackages checks that every package the variant includes
// exists: in a pinned kit, or as a package (or subpackage, or provided
// name) of one of this project's specs.
func TestIncludedPackages(t *testing.T) {
	root := repoRoot(t)
	ms := manifests(t, root)
	ours := specPackages(t, root)
	external := externalPackages(t)
	included := toStrings(ms["variants/"+variantName].Metadata["included-packages"])
	for _, p := range included {
		_, inKit := external[p]
		if !inKit && !ours[p] {
			t.Errorf("included package %q is neither in a pinned kit (testdata/external-packages.txt) nor built by packages/", p)
		}
	}
	for _, want := range []string{"release", "kubelet-1.36", "containerd-2.2", "aws-iam-authenticator",
		"ecr-credential-provider-1.36", "cni-plugins", "autonode-agent", "autonode-kube-proxy", "autonode-release",
		"settings-defaults", "settings-plugins", "settings-migrations"} {
		if !slices.Contains(included, want) {
			t.Errorf("the variant does not include %s", want)
		}
	}
	if !slices.ContainsFunc(included, func(p string) bool { return strings.HasPrefix(p, "kernel-") }) {
		t.Error("the variant includes no kernel")
	}
}

// specPackages lists what this project's specs build: every (sub)package
// name and every name they provide, without the bottlerocket- prefix.
func specPackages(t *testing.T, root string) map[string]bool {
	t.Helper()
	specs, err := filepath.Glob(filepath.Join(root, "packages", "*", "*.spec"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, spec := range specs {
		for _, q := range [][]string{{"--qf", "%{NAME}\\n"}, {"--provides"}} {
			args := append([]string{"-q", "--load", crossMacros(t)}, q...)
			cmd := exec.Command("rpmspec", append(args, spec)...)
			outb, err := cmd.Output()
			if err != nil {
				t.Fatalf("rpmspec %s %s: %v\n%s", strings.Join(q, " "), spec, err, stderrOf(err))
			}
			for _, line := range strings.Split(string(outb), "\n") {
				fields := strings.Fields(line)
				if len(fields) > 0 && strings.HasPrefix(fields[0], "bottlerocket-") {
					out[strings.TrimPrefix(fields[0], "bottlerocket-")] = true
				}
			}
		}
	}
	return out
}

func crossMacros(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", "bottlerocket-cross.macros"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func toStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// TestTomlFiles parses every TOML file of the out-of-tree build: the root
// files, the kit, the packages, the variant and sources/.
func TestTomlFiles(t *testing.T) {
	root := repoRoot(t)
	files := []string{filepath.Join(root, "Twoliter.toml"), filepath.Join(root, "Cargo.toml"), filepath.Join(root, "Cargo.lock")}
	for _, dir := range []string{"kits", "packages", "variant", "sources"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && (filepath.Ext(path) == ".toml" || d.Name() == "Cargo.lock") {
				files = append(files, path)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		decodeFile(t, f)
	}
	if len(files) < 12 {
		t.Errorf("only %d TOML files: %q", len(files), files)
	}
}
