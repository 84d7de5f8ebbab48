package variantcheck

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
	"sigs.k8s.io/yaml"

	"github.com/autonode/autonode/agent/config"
	"github.com/autonode/autonode/agent/network/cni/cniwire"
)

// The paths the variant's pieces agree on: the kubelet's kubeconfig (core-kit
// renders it) and the files autonode's templates become.
const (
	kubeletKubeconfig = "/etc/kubernetes/kubelet/kubeconfig"
	agentConfigPath   = "/etc/autonode/agent.yaml"
	conflistPath      = "/etc/cni/net.d/10-autonode.conflist"
	kubeProxyConfig   = "/etc/kubernetes/kube-proxy/config"
)

// sampleSettings reads testdata/settings.toml.
func sampleSettings(t *testing.T) map[string]any {
	t.Helper()
	var s map[string]any
	if err := toml.Unmarshal(readFile(t, filepath.Join("testdata", "settings.toml")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// without returns a deep copy of settings with the dotted key removed.
func without(t *testing.T, settings map[string]any, key string) map[string]any {
	t.Helper()
	data, err := json.Marshal(settings)
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(key, ".")
	m := c
	for _, p := range parts[:len(parts)-1] {
		m = m[p].(map[string]any)
	}
	delete(m, parts[len(parts)-1])
	return c
}

// with returns a deep copy of settings with the dotted key set.
func with(t *testing.T, settings map[string]any, key string, v any) map[string]any {
	t.Helper()
	c := without(t, settings, key)
	parts := strings.Split(key, ".")
	m := c
	for _, p := range parts[:len(parts)-1] {
		m = m[p].(map[string]any)
	}
	m[parts[len(parts)-1]] = v
	return c
}

func render(t *testing.T, pkg, name string, settings map[string]any) string {
	t.Helper()
	path := filepath.Join(repoRoot(t), "packages", pkg, name)
	out, err := RenderFile(path, readFile(t, path), settings)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// loadAgentConfig loads rendered agent YAML the way `--config` does, and
// validates it with the node-only kubeconfig path set aside.
func loadAgentConfig(t *testing.T, rendered string) config.Config {
	t.Helper()
	f := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(f, []byte(rendered), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	if err := cfg.LoadFile(f); err != nil {
		t.Fatalf("rendered agent config: %v\n%s", err, rendered)
	}
	if cfg.Kubernetes.Kubeconfig != kubeletKubeconfig {
		t.Errorf("kubernetes.kubeconfig = %q, want the kubelet's %s", cfg.Kubernetes.Kubeconfig, kubeletKubeconfig)
	}
	valid := cfg
	valid.Kubernetes.Kubeconfig = "" // exists only on the node
	if err := valid.Validate(); err != nil {
		t.Fatalf("rendered agent config: %v\n%s", err, rendered)
	}
	return cfg
}

func TestAgentConfigTemplate(t *testing.T) {
	settings := sampleSettings(t)
	cfg := loadAgentConfig(t, render(t, "autonode-agent", "autonode-agent-yaml", settings))
	if cfg.PodIdentity.ClusterName != "autonode-test" {
		t.Errorf("podIdentity.clusterName = %q, want settings.kubernetes.cluster-name", cfg.PodIdentity.ClusterName)
	}
	if !slices.Equal(cfg.Network.DNS.ClusterDNS, []string{"10.100.0.10"}) {
		t.Errorf("network.dns.clusterDNS = %q, want cluster-dns-ip without the node-local cache", cfg.Network.DNS.ClusterDNS)
	}
	if cfg.Network.DNS.Address != "169.254.20.10" {
		t.Errorf("network.dns.address = %q: the generator lists 169.254.20.10 first", cfg.Network.DNS.Address)
	}
	if got, want := cfg.Network.CNISocket, config.Default().Network.CNISocket; got != want {
		t.Errorf("network.cniSocket = %q, want the agent's default %q", got, want)
	}

	// cluster-dns-ip may be one string (the stock generator's form).
	cfg = loadAgentConfig(t, render(t, "autonode-agent", "autonode-agent-yaml",
		with(t, settings, "settings.kubernetes.cluster-dns-ip", "172.20.0.10")))
	if !slices.Equal(cfg.Network.DNS.ClusterDNS, []string{"172.20.0.10"}) {
		t.Errorf("with one cluster-dns-ip string: network.dns.clusterDNS = %q", cfg.Network.DNS.ClusterDNS)
	}
	// Without it, the cache is off and the domain falls back.
	minimal := without(t, without(t, settings, "settings.kubernetes.cluster-dns-ip"), "settings.kubernetes.cluster-domain")
	cfg = loadAgentConfig(t, render(t, "autonode-agent", "autonode-agent-yaml", minimal))
	if len(cfg.Network.DNS.ClusterDNS) != 0 || cfg.Network.DNS.ClusterDomain != "cluster.local" {
		t.Errorf("without cluster-dns-ip: clusterDNS %q, clusterDomain %q", cfg.Network.DNS.ClusterDNS, cfg.Network.DNS.ClusterDomain)
	}

	// The cluster name is required: strict mode fails the render.
	path := filepath.Join(repoRoot(t), "packages", "autonode-agent", "autonode-agent-yaml")
	if _, err := RenderFile(path, readFile(t, path), without(t, settings, "settings.kubernetes.cluster-name")); err == nil ||
		!strings.Contains(err.Error(), "cluster-name") {
		t.Errorf("render without settings.kubernetes.cluster-name: %v, want a missing-setting error", err)
	}
}

func TestConflistTemplate(t *testing.T) {
	out := render(t, "autonode-agent", "autonode-cni-conflist", sampleSettings(t))
	var list struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("conflist is not JSON: %v\n%s", err, out)
	}
	if len(list.Plugins) == 0 {
		t.Fatal("conflist has no plugins")
	}
	var first struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(list.Plugins[0], &first); err != nil {
		t.Fatal(err)
	}
	if first.Type != "autonode-cni" {
		t.Errorf("first plugin type %q, want the autonode-cni binary", first.Type)
	}
	// The plugin reads its netconf the way the runtime hands it over.
	socket, _, terr := cniwire.ParseClientConf(list.Plugins[0])
	if terr != nil {
		t.Fatalf("autonode-cni rejects its netconf: %v", terr)
	}
	if want := config.Default().Network.CNISocket; socket != want {
		t.Errorf("agentSocket %q, want the agent's cniSocket %q", socket, want)
	}
	if !slices.Contains([]string{"1.0.0", "1.1.0"}, list.CNIVersion) {
		t.Errorf("cniVersion %q", list.CNIVersion)
	}
}

func TestKubeProxyTemplate(t *testing.T) {
	settings := sampleSettings(t)
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(render(t, "autonode-kube-proxy", "kube-proxy-config", settings)), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg["kind"] != "KubeProxyConfiguration" || cfg["apiVersion"] != "kubeproxy.config.k8s.io/v1alpha1" {
		t.Errorf("kind %v, apiVersion %v", cfg["kind"], cfg["apiVersion"])
	}
	if cc, _ := cfg["clientConnection"].(map[string]any); cc["kubeconfig"] != kubeletKubeconfig {
		t.Errorf("clientConnection %v, want the kubelet's kubeconfig", cc)
	}
	if cfg["hostnameOverride"] != "i-0123456789abcdef0" {
		t.Errorf("hostnameOverride %v, want settings.kubernetes.hostname-override", cfg["hostnameOverride"])
	}
	var bare map[string]any
	if err := yaml.Unmarshal([]byte(render(t, "autonode-kube-proxy", "kube-proxy-config",
		without(t, settings, "settings.kubernetes.hostname-override"))), &bare); err != nil {
		t.Fatal(err)
	}
	if _, ok := bare["hostnameOverride"]; ok {
		t.Error("hostnameOverride rendered without settings.kubernetes.hostname-override")
	}
}

// defaults reads the variant's settings defaults overlay.
func defaults(t *testing.T) map[string]any {
	t.Helper()
	return decodeFile(t, filepath.Join(repoRoot(t), "sources", "settings-defaults", variantName, "defaults.d", "99-autonode.toml"))
}

// TestSettingsDefaults checks that the defaults wire each template to the
// file the units read and to a service that restarts them, and that the
// generators fill the kubelet settings the issue names.
func TestSettingsDefaults(t *testing.T) {
	root := repoRoot(t)
	d := defaults(t)
	files := d["configuration-files"].(map[string]any)
	wantPaths := map[string]string{
		"autonode-agent-yaml":   agentConfigPath,
		"autonode-cni-conflist": conflistPath,
		"kube-proxy-config":     kubeProxyConfig,
	}
	for name, v := range files {
		f := v.(map[string]any)
		if want, ok := wantPaths[name]; !ok || f["path"] != want {
			t.Errorf("configuration-files.%s.path = %v, want %q", name, f["path"], want)
		}
		tp, _ := f["template-path"].(string)
		if tp != "/usr/share/templates/"+name {
			t.Errorf("configuration-files.%s.template-path = %q, want /usr/share/templates/%s", name, tp, name)
		}
		if matches, _ := filepath.Glob(filepath.Join(root, "packages", "*", name)); len(matches) != 1 {
			t.Errorf("configuration-files.%s: template file packages/*/%s: found %d", name, name, len(matches))
		}
	}
	if got := slices.Sorted(maps.Keys(files)); !slices.Equal(got, slices.Sorted(maps.Keys(wantPaths))) {
		t.Errorf("configuration-files %q", got)
	}
	used := map[string]bool{}
	for svc, v := range d["services"].(map[string]any) {
		s := v.(map[string]any)
		for _, f := range toStrings(s["configuration-files"]) {
			if _, ok := files[f]; !ok {
				t.Errorf("services.%s names configuration file %q, which is not defined", svc, f)
			}
			used[f] = true
		}
		for _, c := range toStrings(s["restart-commands"]) {
			unit := strings.TrimPrefix(c, "/usr/bin/systemctl try-restart ")
			if unit == c || len(findFiles(t, root, "packages/*/"+unit)) != 1 {
				t.Errorf("services.%s restart command %q: want `/usr/bin/systemctl try-restart UNIT` for a unit of packages/", svc, c)
			}
		}
	}
	for f := range files {
		if !used[f] {
			t.Errorf("configuration file %s belongs to no service, so it is never rendered", f)
		}
	}
	affected := toStrings(dig(d, "metadata", "settings", "kubernetes")["affected-services"])
	for _, svc := range []string{"kubernetes", "autonode", "kube-proxy"} {
		if !slices.Contains(affected, svc) {
			t.Errorf("metadata.settings.kubernetes.affected-services %q lacks %s", affected, svc)
		}
	}
	if hc := dig(d, "settings", "host-containers"); dig(hc, "admin")["enabled"] != false || dig(hc, "control")["enabled"] != false {
		t.Errorf("host containers must be off by default: %v", hc)
	}
	gens := generators(t)
	for _, key := range []string{"max-pods", "kube-reserved", "eviction-hard"} {
		want := "/usr/bin/autonode-agent nodeconfig " + key
		if got := gens["settings.kubernetes."+key]; got != want {
			t.Errorf("setting-generator of settings.kubernetes.%s = %q, want %q", key, got, want)
		}
	}
}

// generators returns every setting-generator command of the defaults,
// keyed by setting.
func generators(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			switch v := v.(type) {
			case string:
				if k == "setting-generator" {
					out[prefix] = v
				}
			case map[string]any:
				walk(join(prefix, k), v)
			}
		}
	}
	walk("settings", dig(defaults(t), "metadata", "settings"))
	return out
}

func dig(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		m, _ = m[k].(map[string]any)
	}
	return m
}

func findFiles(t *testing.T, root, glob string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(root, glob))
	if err != nil {
		t.Fatal(err)
	}
	return matches
}

// TestTmpfilesPaths checks that the folders the package's tmpfiles create
// are the ones the agent's rendered configuration uses: its state folder
// (which holds the instance-store state file) and its CNI socket's folder.
func TestTmpfilesPaths(t *testing.T) {
	cfg := loadAgentConfig(t, render(t, "autonode-agent", "autonode-agent-yaml", sampleSettings(t)))
	want := []string{cfg.StateDir, filepath.Dir(cfg.Network.CNISocket)}
	if dir := filepath.Dir(cfg.Storage.InstanceStore.StatePath); dir != cfg.StateDir {
		want = append(want, dir)
	}
	var created []string
	path := filepath.Join(repoRoot(t), "packages", "autonode-agent", "autonode-tmpfiles.conf")
	for i, line := range strings.Split(string(readFile(t, path)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) < 2 || f[0] != "d" {
			t.Errorf("%s:%d: %q: want `d PATH MODE USER GROUP AGE`", path, i+1, line)
			continue
		}
		created = append(created, f[1])
	}
	slices.Sort(want)
	slices.Sort(created)
	if !slices.Equal(slices.Compact(want), created) {
		t.Errorf("tmpfiles create %q; the agent's configuration uses %q", created, want)
	}
}
