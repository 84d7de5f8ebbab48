package variantcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"

	"github.com/autonode/autonode/sandbox/privileged"
)

// crossRoot is %{_cross_rootdir} in the test macros: where the specs
// install, under the build root.
const crossRoot = "x86_64-bottlerocket-linux-gnu/sys-root"

// workDir is where the project is staged and the agent's RPM built: a
// folder in the user's cache, whose lock the whole test binary holds, so
// that concurrent `go test` runs take turns. rpmbuild's Go uses the user's
// Go build cache (`go env GOCACHE`), and the spec builds with -trimpath, so
// the cache entries depend on neither this folder nor the checkout's path.
// It lives at package level only because sync.OnceValues needs a home; it
// is set once.
var workDir = sync.OnceValues(func() (string, error) {
	base := os.Getenv("AUTONODE_VARIANTCHECK_DIR")
	if base == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return "", err
		}
		base = filepath.Join(cache, "autonode", "variantcheck")
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(base, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	// Held until the process exits, which closes the file.
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	return base, nil
})

// stagedProject runs `hack/twoliter-project.sh`, the script behind
// `make twoliter-project`, once per test binary and returns the tree.
var stagedProject = sync.OnceValues(func() (string, error) {
	dir, err := workDir()
	if err != nil {
		return "", err
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "twoliter")
	cmd := exec.Command(filepath.Join(root, "hack", "twoliter-project.sh"), out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("hack/twoliter-project.sh: %w\n%s", err, b)
	}
	return out, nil
})

func staged(t *testing.T) string {
	t.Helper()
	start := time.Now()
	dir, err := stagedProject()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("staged project %s (%s)", dir, time.Since(start).Round(time.Millisecond))
	return dir
}

// TestStagedProject checks the tree `make twoliter-project` assembles: the
// layout twoliter reads, one Go module under sources/, and a Cargo
// workspace whose members and path dependencies all resolve.
func TestStagedProject(t *testing.T) {
	if testing.Short() {
		t.Skip("stages and vendors the Go module")
	}
	dir := staged(t)
	for _, p := range []string{
		"Twoliter.toml", "Cargo.toml", "Cargo.lock", "kits/build.rs", "kits/kit.rs", "kits/autonode-kit/Cargo.toml",
		"packages/build.rs", "packages/packages.rs", "variants/build.rs", "variants/variants.rs",
		"variants/" + variantName + "/Cargo.toml", "sources/Cargo.toml",
		"sources/autonode/go.mod", "sources/autonode/go.sum", "sources/autonode/vendor/modules.txt",
		"sources/autonode/agent/cmd/autonode-agent/main.go",
	} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("staged tree: %v", err)
		}
	}
	for _, p := range []string{"sources/autonode/hack", "variant", "sources/autonode/packages"} {
		if _, err := os.Stat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("staged tree must not hold %s (err %v)", p, err)
		}
	}
	var mods []string
	if err := filepath.WalkDir(filepath.Join(dir, "sources"), func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "go.mod" {
			mods = append(mods, path)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(mods) != 1 {
		t.Errorf("go.mod files under sources/: %q; twoliter vendors each, so there must be exactly one", mods)
	}
	ws := decodeFile(t, filepath.Join(dir, "Cargo.toml"))
	for _, m := range toStrings(ws["workspace"].(map[string]any)["members"]) {
		manifest := filepath.Join(dir, m, "Cargo.toml")
		man, err := ParseManifest(manifest, readFile(t, manifest))
		if err != nil {
			t.Error(err)
			continue
		}
		for dep, p := range man.BuildDependencies {
			if _, err := os.Stat(filepath.Join(dir, m, p, "Cargo.toml")); err != nil {
				t.Errorf("%s: build dependency %s: %v", m, dep, err)
			}
		}
		data := readFile(t, manifest)
		for _, key := range []string{"build", "path"} {
			for _, match := range regexp.MustCompile(`(?m)^`+key+` = "([^"]+)"`).FindAllSubmatch(data, -1) {
				if _, err := os.Stat(filepath.Join(dir, m, string(match[1]))); err != nil {
					t.Errorf("%s: %s = %q: %v", m, key, match[1], err)
				}
			}
		}
	}
	// Where cargo is installed, let it read the workspace and lock file as
	// twoliter's cargo does.
	if cargo, err := exec.LookPath("cargo"); err == nil {
		cmd := exec.Command(cargo, "metadata", "--offline", "--locked", "--no-deps", "--format-version", "1")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("cargo metadata: %v\n%s", err, out)
		}
	} else {
		t.Log("cargo not installed: the workspace was checked by this test's own reading only")
	}
}

// expandSpec runs `rpmspec -P` with the test macros.
func expandSpec(t *testing.T, spec string) string {
	t.Helper()
	out, err := exec.Command("rpmspec", "-P", "--load", crossMacros(t), spec).Output()
	if err != nil {
		t.Fatalf("rpmspec -P %s: %v\n%s", spec, err, stderrOf(err))
	}
	return string(out)
}

// TestSpecs expands every spec with rpmspec, checks that each Source it
// names is in its package folder, and that the agent's %build builds each
// binary from the module's main packages with the network off.
func TestSpecs(t *testing.T) {
	root := repoRoot(t)
	specs := findFiles(t, root, "packages/*/*.spec")
	if len(specs) == 0 {
		t.Fatal("no specs")
	}
	for _, spec := range specs {
		t.Run(filepath.Base(spec), func(t *testing.T) {
			text := expandSpec(t, spec)
			for _, m := range regexp.MustCompile(`(?m)^Source\d*:\s*(\S+)`).FindAllStringSubmatch(text, -1) {
				if strings.Contains(m[1], "://") {
					continue
				}
				if _, err := os.Stat(filepath.Join(filepath.Dir(spec), m[1])); err != nil {
					t.Errorf("Source %s: %v", m[1], err)
				}
			}
		})
	}

	text := expandSpec(t, filepath.Join(root, "packages", "autonode-agent", "autonode-agent.spec"))
	// rpmspec -P prints %prep and %build as one script.
	build := section(text, "%prep", "%install")
	builds := regexp.MustCompile(`(?m)^go build .* -o bin/(\S+) \./(\S+)$`).FindAllStringSubmatch(build, -1)
	if len(builds) == 0 {
		t.Fatalf("%%build builds nothing:\n%s", build)
	}
	first := strings.Index(build, "\ngo build")
	setBefore := func(pattern string) string {
		m := regexp.MustCompile(`(?m)^\s*(?:export )?` + pattern).FindStringSubmatchIndex(build)
		if m == nil || m[0] > first {
			t.Errorf("%%build does not set %s before it builds", pattern)
			return ""
		}
		return build[m[2]:m[3]]
	}
	goflags := strings.Fields(setBefore(`GOFLAGS="([^"]*)"`))
	for _, want := range []string{"-mod=vendor", "-buildmode=pie"} {
		if !slices.Contains(goflags, want) {
			t.Errorf("GOFLAGS %q lacks %s", goflags, want)
		}
	}
	if v := setBefore(`GOPROXY="?(\w+)"?`); v != "off" {
		t.Errorf("GOPROXY=%q, want off", v)
	}
	if v := setBefore(`GOTOOLCHAIN="?(\w+)"?`); v != "local" {
		t.Errorf("GOTOOLCHAIN=%q, want local", v)
	}
	var bins []string
	for _, b := range builds {
		name, pkg := b[1], b[2]
		bins = append(bins, name)
		if !strings.Contains(b[0], " -trimpath ") {
			t.Errorf("%s is built without -trimpath, so its build-cache entries depend on the build folder", name)
		}
		if filepath.Base(pkg) != name {
			t.Errorf("binary %s is built from %s: the binary is named after its command folder", name, pkg)
		}
		main, err := os.ReadFile(filepath.Join(root, pkg, "main.go"))
		if err != nil || !bytes.Contains(main, []byte("\npackage main\n")) {
			t.Errorf("%s is not a main package (%v)", pkg, err)
		}
	}
	slices.Sort(bins)
	if !slices.Equal(bins, []string{"autonode-agent", "autonode-cni"}) {
		t.Errorf("the spec builds %q, want autonode-agent and autonode-cni", bins)
	}
}

func section(text, from, to string) string {
	_, rest, _ := strings.Cut(text, "\n"+from+"\n")
	s, _, _ := strings.Cut(rest, "\n"+to+"\n")
	return s
}

// TestAgentPackage builds the autonode-agent RPM as twoliter would, with
// rpmbuild and the test macros, in a network namespace of its own (so
// nothing can be fetched), from the staged and vendored module, and then
// checks what it installs: the file list, that the binaries accept what
// the units and settings generators pass them, and the units with
// systemd-analyze.
func TestAgentPackage(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	for _, tool := range []string{"rpmbuild", "rpm", "unshare", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (make deps installs it)", tool, err)
		}
	}
	project := staged(t)
	dir, err := workDir()
	if err != nil {
		t.Fatal(err)
	}
	top := filepath.Join(dir, "rpm")
	buildroot := filepath.Join(dir, "buildroot")
	for _, p := range []string{top, buildroot} {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(top, "BUILD"), 0o755); err != nil {
		t.Fatal(err)
	}
	// twoliter's build container shows the project's sources/ here.
	if err := os.Symlink(filepath.Join(project, "sources"), filepath.Join(top, "BUILD", "sources")); err != nil {
		t.Fatal(err)
	}
	pkgDir := filepath.Join(project, "packages", "autonode-agent")
	logPath := filepath.Join(dir, "rpmbuild.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command("unshare", "--net", "rpmbuild", "-bb", "--nodeps", "--noclean",
		"--load", crossMacros(t), "--define", "_topdir "+top, "--define", "_sourcedir "+pkgDir,
		"--buildroot", buildroot, filepath.Join(pkgDir, "autonode-agent.spec"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	start := time.Now()
	if err := cmd.Run(); err != nil {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("rpmbuild: %v; the last lines of %s:\n%s", err, logPath, tail(string(log), 40))
	}
	// CPU time counts every process rpmbuild waited for (the Go builds):
	// unlike the wall time, it does not depend on what else the machine runs.
	t.Logf("rpmbuild of autonode-agent, network off: %s (CPU %s)", time.Since(start).Round(time.Second),
		(cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Round(time.Second))

	rpms := findFiles(t, top, "RPMS/*/bottlerocket-autonode-agent-*.rpm")
	if len(rpms) != 1 {
		t.Fatalf("built RPMs %q", rpms)
	}
	out, err := exec.Command("rpm", "-qlp", rpms[0]).Output()
	if err != nil {
		t.Fatalf("rpm -qlp: %v\n%s", err, stderrOf(err))
	}
	files := strings.Fields(string(out))
	want := []string{
		"/usr/bin/autonode-agent",
		"/usr/lib/systemd/system/autonode-agent.service",
		"/usr/lib/systemd/system/autonode-storage-setup.service",
		"/usr/lib/tmpfiles.d/autonode.conf",
		"/usr/lib/udev/rules.d/70-autonode-ebs.rules",
		"/usr/libexec/cni/bin/autonode-cni",
		"/usr/share/licenses/autonode-agent/vendor",
		"/usr/share/licenses/autonode-agent/vendor/modules.txt",
		"/usr/share/templates/autonode-agent-yaml",
		"/usr/share/templates/autonode-cni-conflist",
	}
	for i, w := range want {
		want[i] = "/" + crossRoot + w
	}
	if !slices.Equal(files, want) {
		t.Errorf("the RPM installs\n%s\nwant\n%s", strings.Join(files, "\n"), strings.Join(want, "\n"))
	}

	sysroot := filepath.Join(buildroot, crossRoot)
	agent := filepath.Join(sysroot, "usr", "bin", "autonode-agent")
	rendered := renderedAgentConfig(t)

	t.Run("units", func(t *testing.T) { verifyUnits(t, sysroot) })

	t.Run("ExecStart", func(t *testing.T) {
		for _, unit := range []string{"autonode-agent.service", "autonode-storage-setup.service"} {
			args := execStart(t, filepath.Join(sysroot, "usr", "lib", "systemd", "system", unit))
			if args[0] != "/usr/bin/autonode-agent" {
				t.Errorf("%s runs %s", unit, args[0])
				continue
			}
			// The unit's flags on the shipped binary, with the config file
			// this test rendered; --help stops after parsing them.
			for i, a := range args {
				if a == agentConfigPath {
					args[i] = rendered
				}
			}
			run(t, nil, agent, append(args[1:], "--help")...)
		}
		// And the daemon accepts the rendered configuration as a whole.
		var cfg struct {
			Network struct {
				CNISocket string `json:"cniSocket"`
			} `json:"network"`
		}
		if err := yaml.Unmarshal([]byte(run(t, nil, agent, "--config", rendered, "--print-config")), &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Network.CNISocket != "/run/autonode/cni.sock" {
			t.Errorf("the agent's cniSocket %q is not the conflist's agentSocket", cfg.Network.CNISocket)
		}
	})

	t.Run("settings generators", func(t *testing.T) { runGenerators(t, agent) })

	t.Run("udev rules", func(t *testing.T) { checkUdevRules(t, sysroot, agent) })

	t.Run("CNI version", func(t *testing.T) {
		var v struct {
			Supported []string `json:"supportedVersions"`
		}
		out := run(t, []string{"CNI_COMMAND=VERSION"}, filepath.Join(sysroot, "usr", "libexec", "cni", "bin", "autonode-cni"))
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("VERSION: %v\n%s", err, out)
		}
		var list struct {
			CNIVersion string `json:"cniVersion"`
		}
		if err := json.Unmarshal([]byte(render(t, "autonode-agent", "autonode-cni-conflist", sampleSettings(t))), &list); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(v.Supported, list.CNIVersion) {
			t.Errorf("autonode-cni supports %q, not the conflist's cniVersion %s", v.Supported, list.CNIVersion)
		}
	})
}

// renderedAgentConfig renders the agent's config template with the sample
// settings into a file, pointing kubernetes.kubeconfig at a kubeconfig
// that exists here.
func renderedAgentConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	const kc = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`
	if err := os.WriteFile(kubeconfig, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	out := render(t, "autonode-agent", "autonode-agent-yaml", sampleSettings(t))
	if !strings.Contains(out, kubeletKubeconfig) {
		t.Fatalf("the agent config does not name %s", kubeletKubeconfig)
	}
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(out, kubeletKubeconfig, kubeconfig)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// execStart returns the ExecStart= words of a unit file.
func execStart(t *testing.T, unit string) []string {
	t.Helper()
	for _, line := range strings.Split(string(readFile(t, unit)), "\n") {
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatalf("%s has no ExecStart", unit)
	return nil
}

// run runs a binary and fails the test unless it exits 0.
func run(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Errorf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, tail(stderr.String(), 20))
	}
	return stdout.String()
}

// bottlerocketUnits stand in for the units of core-kit that autonode's
// units name, so that systemd-analyze resolves every dependency. Their
// content does not matter to the check; their names do.
func bottlerocketUnits() map[string]string {
	return map[string]string{
		"containerd.service":   "[Unit]\nDescription=containerd (core-kit)\n[Service]\nType=notify\nExecStart=/usr/bin/stand-in\n",
		"kubelet.service":      "[Unit]\nDescription=kubelet (core-kit)\n[Service]\nType=notify\nExecStart=/usr/bin/stand-in\n",
		"preconfigured.target": "[Unit]\nDescription=Bottlerocket initial configuration complete (core-kit)\n",
		"configured.target":    "[Unit]\nDescription=Bottlerocket final configuration complete (core-kit)\n",
		"runtime.slice":        "[Unit]\nDescription=Container runtime slice (core-kit)\n",
	}
}

// verifyUnits runs `systemd-analyze verify --root` over the installed
// units, with the host's standard targets and stand-ins for core-kit's
// units, plus kube-proxy.service (its binary cannot be built offline, so a
// stand-in executable takes its place). Any output is a failure: systemd
// only warns about unknown keys and bad values.
func verifyUnits(t *testing.T, sysroot string) {
	unitDir := filepath.Join(sysroot, "usr", "lib", "systemd", "system")
	hostTargets, err := filepath.Glob("/lib/systemd/system/*.target")
	if err != nil || len(hostTargets) == 0 {
		t.Fatalf("no systemd targets in /lib/systemd/system (install systemd): %v", err)
	}
	for _, src := range hostTargets {
		dst := filepath.Join(unitDir, filepath.Base(src))
		if _, ok := bottlerocketUnits()[filepath.Base(src)]; ok {
			continue
		}
		if err := os.WriteFile(dst, readFile(t, src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range bottlerocketUnits() {
		if err := os.WriteFile(filepath.Join(unitDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root := repoRoot(t)
	if err := os.WriteFile(filepath.Join(unitDir, "kube-proxy.service"),
		readFile(t, filepath.Join(root, "packages", "autonode-kube-proxy", "kube-proxy.service")), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{"stand-in", "kube-proxy"} {
		if err := os.WriteFile(filepath.Join(sysroot, "usr", "bin", bin), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	units := []string{"autonode-agent.service", "autonode-storage-setup.service", "kube-proxy.service"}
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--root=" + sysroot}, units...)...)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", strings.Join(units, " "), err, out)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
