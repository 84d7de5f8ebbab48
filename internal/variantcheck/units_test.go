package variantcheck

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// unitKeys reads a systemd unit file into section.Key -> values, in order,
// splitting space-separated lists (After=, Before=) into words.
func unitKeys(t *testing.T, path string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(readFile(t, path)), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %q is not KEY=VALUE", path, line)
			}
			out[section+"."+k] = append(out[section+"."+k], strings.Fields(v)...)
		}
	}
	return out
}

// TestUnits checks what the issue asks of the two units beyond what
// systemd-analyze verify (in TestAgentPackage) checks: the agent notifies
// and is watched and restarted; the storage setup is a oneshot running
// `storage setup` before containerd and the kubelet.
func TestUnits(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "packages", "autonode-agent")

	agent := unitKeys(t, filepath.Join(dir, "autonode-agent.service"))
	if got := agent["Service.Type"]; !slices.Equal(got, []string{"notify"}) {
		t.Errorf("autonode-agent.service Type=%q, want notify", got)
	}
	if w := agent["Service.WatchdogSec"]; len(w) != 1 {
		t.Errorf("autonode-agent.service WatchdogSec=%q", w)
	} else if d, err := time.ParseDuration(w[0]); err != nil || d <= 0 {
		t.Errorf("autonode-agent.service WatchdogSec=%s: want a positive duration (%v)", w[0], err)
	}
	if r := agent["Service.Restart"]; len(r) != 1 || (r[0] != "always" && r[0] != "on-failure") {
		t.Errorf("autonode-agent.service Restart=%q, want always or on-failure", r)
	}
	if !slices.Contains(agent["Unit.After"], "autonode-storage-setup.service") {
		t.Error("autonode-agent.service is not ordered after autonode-storage-setup.service")
	}

	setup := unitKeys(t, filepath.Join(dir, "autonode-storage-setup.service"))
	if got := setup["Service.Type"]; !slices.Equal(got, []string{"oneshot"}) {
		t.Errorf("autonode-storage-setup.service Type=%q, want oneshot", got)
	}
	if got := setup["Service.ExecStart"]; len(got) < 3 || !slices.Equal(got[:3], []string{"/usr/bin/autonode-agent", "storage", "setup"}) {
		t.Errorf("autonode-storage-setup.service ExecStart=%q, want autonode-agent storage setup", got)
	}
	// Both read the file the settings render (TestSettingsDefaults).
	for name, u := range map[string]map[string][]string{"autonode-agent.service": agent, "autonode-storage-setup.service": setup} {
		args := u["Service.ExecStart"]
		if i := slices.Index(args, "--config"); i < 0 || i+1 >= len(args) || args[i+1] != agentConfigPath {
			t.Errorf("%s ExecStart=%q: want --config %s", name, args, agentConfigPath)
		}
	}
	for _, unit := range []string{"containerd.service", "kubelet.service"} {
		if !slices.Contains(setup["Unit.Before"], unit) {
			t.Errorf("autonode-storage-setup.service is not ordered before %s", unit)
		}
	}
}
