package config

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsAreValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestEveryInvalidFieldIsNamed(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		field   string
		allowed string // a fragment of the allowed-values text
	}{
		{"log format", func(c *Config) { c.Log.Format = "xml" }, "log.format (--log-format)", "json, text"},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, "log.level (--log-level)", "debug, info, warn, error"},
		{"http address not host:port", func(c *Config) { c.HTTP.Address = "8080" }, "http.address (--http-address)", "host:port"},
		{"http address off loopback", func(c *Config) { c.HTTP.Address = "0.0.0.0:8080" }, "http.address (--http-address)", "loopback"},
		{"http port", func(c *Config) { c.HTTP.Address = "127.0.0.1:70000" }, "http.address (--http-address)", "0 to 65535"},
		{"imds endpoint scheme", func(c *Config) { c.IMDS.Endpoint = "ftp://x" }, "imds.endpoint (--imds-endpoint)", "http://"},
		{"imds endpoint relative", func(c *Config) { c.IMDS.Endpoint = "/latest" }, "imds.endpoint (--imds-endpoint)", "absolute"},
		{"imds timeout zero", func(c *Config) { c.IMDS.Timeout.Duration = 0 }, "imds.timeout (--imds-timeout)", "above 0s"},
		{"imds timeout huge", func(c *Config) { c.IMDS.Timeout.Duration = time.Hour }, "imds.timeout (--imds-timeout)", "at most 1m0s"},
		{"kubeconfig missing", func(c *Config) { c.Kubernetes.Kubeconfig = "/nonexistent/kubeconfig" }, "kubernetes.kubeconfig (--kubeconfig)", "no such file"},
		{"qps", func(c *Config) { c.Kubernetes.QPS = 0 }, "kubernetes.qps (--kube-api-qps)", "above 0"},
		{"qps NaN", func(c *Config) { c.Kubernetes.QPS = float32(math.NaN()) }, "kubernetes.qps (--kube-api-qps)", "above 0"},
		{"kubeconfig not a kubeconfig", func(c *Config) { c.Kubernetes.Kubeconfig = "config_test.go" }, "kubernetes.kubeconfig (--kubeconfig)", "valid kubeconfig"},
		{"burst below qps", func(c *Config) { c.Kubernetes.Burst = 5 }, "kubernetes.burst (--kube-api-burst)", "at least kubernetes.qps"},
		{"shutdown timeout", func(c *Config) { c.ShutdownTimeout.Duration = -time.Second }, "shutdownTimeout (--shutdown-timeout)", "above 0s"},
		{"eks auth endpoint", func(c *Config) { c.PodIdentity.EKSAuthEndpoint = "eks-auth" }, "podIdentity.eksAuthEndpoint (--eks-auth-endpoint)", "absolute"},
		{"pod identity port", func(c *Config) { c.PodIdentity.Port = 0 }, "podIdentity.port (config file only)", "1 to 65535"},
		{"pod identity cache", func(c *Config) { c.PodIdentity.MaxCacheEntries = 0 }, "podIdentity.maxCacheEntries (config file only)", "from 1"},
		{"state dir", func(c *Config) { c.StateDir = "state" }, "stateDir (--state-dir)", "absolute path"},
		{"console path", func(c *Config) { c.Health.ConsolePath = "ttyS0" }, "health.consolePath (--console-path)", "absolute path"},
		{"heartbeat", func(c *Config) { c.Health.HeartbeatInterval.Duration = 0 }, "health.heartbeatInterval (config file only)", "above 0s"},
		{"restarts", func(c *Config) { c.Health.RestartsPerHour = -1 }, "health.restartsPerHour (config file only)", "0 to 60"},
		{"severity override", func(c *Config) { c.Health.SeverityOverrides = map[string]string{"OOMKill": "dire"} }, "health.severityOverrides (config file only)", "dire"},
		{"cni socket", func(c *Config) { c.Network.CNISocket = "cni.sock" }, "network.cniSocket (--cni-socket)", "absolute path"},
		{"ec2 endpoint", func(c *Config) { c.Network.EC2Endpoint = "ec2" }, "network.ec2Endpoint (--ec2-endpoint)", "absolute"},
		{"warm target", func(c *Config) { c.Network.WarmIPTarget = -1 }, "network.warmIPTarget (config file only)", "0 to 10000"},
		{"mtu", func(c *Config) { c.Network.MTU = 100 }, "network.mtu (config file only)", "576 to 9001"},
		{"snat excluded", func(c *Config) { c.Network.SNATExcludedCIDRs = []string{"10.0.0.0"} }, "network.snatExcludedCIDRs (config file only)", "IPv4 CIDR"},
		{"dns address", func(c *Config) { c.Network.DNS.Address = "fd00::1" }, "network.dns.address (config file only)", "IPv4"},
		{"cluster dns", func(c *Config) { c.Network.DNS.ClusterDNS = []string{"kube-dns"} }, "network.dns.clusterDNS (config file only)", "IP addresses"},
		{"device plugin dir", func(c *Config) { c.DevicePlugins.Dir = "plugins" }, "devicePlugins.dir (--device-plugin-dir)", "absolute path"},
		{"sysfs root", func(c *Config) { c.DevicePlugins.SysfsRoot = "" }, "devicePlugins.sysfsRoot (--sysfs-root)", "absolute path"},
		{"cdi dir", func(c *Config) { c.DevicePlugins.NVIDIA.CDIDir = "cdi" }, "devicePlugins.nvidia.cdiDir (config file only)", "absolute path"},
		{"neuron mode", func(c *Config) { c.DevicePlugins.Neuron.Mode = "both" }, "devicePlugins.neuron.mode (--neuron-mode)", "core, device"},
		{"xid quiet period", func(c *Config) { c.DevicePlugins.NVIDIA.XIDQuietPeriod.Duration = 0 }, "devicePlugins.nvidia.xidQuietPeriod (config file only)", "above 0s"},
		{"xid both lists", func(c *Config) {
			c.DevicePlugins.NVIDIA.XIDIgnore = []uint64{13, 79}
			c.DevicePlugins.NVIDIA.XIDFatal = []uint64{79}
		}, "devicePlugins.nvidia.xidFatal (config file only)", "not also be in devicePlugins.nvidia.xidIgnore"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %v, want a *FieldError", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tt.field) || !strings.Contains(msg, tt.allowed) {
				t.Errorf("Validate() = %q, want it to start with %q and mention %q", msg, tt.field, tt.allowed)
			}
		})
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	c := Default()
	c.Log.Format, c.Log.Level = "xml", "loud"
	err := c.Validate()
	for _, want := range []string{"log.format", "log.level"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "log:\n  level: warn\n  format: text\nkubernetes:\n  qps: 7\n  burst: 9\n")
	cmd, err := Parse("agent", []string{"--config", file, "--log-level", "debug"},
		env(map[string]string{"AUTONODE_LOG_LEVEL": "error", "AUTONODE_KUBE_API_BURST": "12"}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	c := cmd.Config
	if c.Log.Level != "debug" {
		t.Errorf("log.level = %q, want the flag's debug over env and file", c.Log.Level)
	}
	if c.Kubernetes.Burst != 12 {
		t.Errorf("kubernetes.burst = %d, want the env's 12 over the file", c.Kubernetes.Burst)
	}
	if c.Log.Format != "text" || c.Kubernetes.QPS != 7 {
		t.Errorf("file values lost: format %q qps %v", c.Log.Format, c.Kubernetes.QPS)
	}
	if c.HTTP.Address != Default().HTTP.Address {
		t.Errorf("http.address = %q, want the default", c.HTTP.Address)
	}
}

func TestBoolFlagStandsAlone(t *testing.T) {
	cmd, err := Parse("agent", []string{"--device-plugins=false"}, env(nil), &bytes.Buffer{})
	if err != nil || cmd.Config.DevicePlugins.Enabled {
		t.Fatalf("--device-plugins=false: %v, enabled %v", err, cmd.Config.DevicePlugins.Enabled)
	}
	cmd, err = Parse("agent", []string{"--device-plugins"}, env(map[string]string{"AUTONODE_DEVICE_PLUGINS": "false"}), &bytes.Buffer{})
	if err != nil || !cmd.Config.DevicePlugins.Enabled {
		t.Fatalf("--device-plugins over env false: %v, enabled %v", err, cmd.Config.DevicePlugins.Enabled)
	}
}

func TestConfigFromEnvironmentVariable(t *testing.T) {
	file := writeFile(t, "shutdownTimeout: 45s\n")
	cmd, err := Parse("agent", nil, env(map[string]string{"AUTONODE_CONFIG": file}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got := cmd.Config.ShutdownTimeout.Duration; got != 45*time.Second {
		t.Errorf("shutdownTimeout = %s, want 45s from the file named by AUTONODE_CONFIG", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		file string
		want string
	}{
		{"unknown yaml key", nil, nil, "log:\n  formatt: json\n", `unknown field "formatt"`},
		{"yaml type", nil, nil, "kubernetes:\n  qps: lots\n", "config file"},
		{"bad duration in yaml", nil, nil, "shutdownTimeout: soon\n", "config file"},
		{"missing file", []string{"--config", "/nonexistent.yaml"}, nil, "", "reading config file"},
		{"bad env", nil, map[string]string{"AUTONODE_KUBE_API_BURST": "many"}, "", "AUTONODE_KUBE_API_BURST"},
		{"bad flag value", []string{"--imds-timeout", "soon"}, nil, "", "--imds-timeout"},
		{"NaN flag", []string{"--kube-api-qps", "NaN"}, nil, "", "not a finite number"},
		{"invalid value from flag", []string{"--log-format", "xml"}, nil, "", "log.format (--log-format)"},
		{"unknown flag", []string{"--frobnicate"}, nil, "", "frobnicate"},
		{"stray argument", []string{"extra"}, nil, "", "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeFile(t, tt.file)}, args...)
			}
			_, err := Parse("agent", args, env(tt.env), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	_, err := Parse("autonode-agent", []string{"--help"}, env(nil), &out)
	if !errors.Is(err, ErrHelp) {
		t.Fatalf("Parse(--help) = %v, want ErrHelp", err)
	}
	for _, o := range options() {
		if !strings.Contains(out.String(), "-"+o.flag) || !strings.Contains(out.String(), envName(o.flag)) {
			t.Errorf("--help does not document --%s and %s", o.flag, envName(o.flag))
		}
	}
}

func TestPrintConfigRoundTrips(t *testing.T) {
	cmd, err := Parse("agent", []string{"--print-config", "--log-level", "warn"}, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !cmd.PrintConfig {
		t.Fatal("PrintConfig not set")
	}
	data, err := cmd.Config.YAML()
	if err != nil {
		t.Fatal(err)
	}
	back := Default()
	if err := back.LoadFile(writeFile(t, string(data))); err != nil {
		t.Fatalf("printed config does not load back: %v\n%s", err, data)
	}
	if !reflect.DeepEqual(back, cmd.Config) {
		t.Errorf("round trip changed the config:\n got %+v\nwant %+v", back, cmd.Config)
	}
}

// FuzzLoadFile feeds arbitrary settings files through loading and
// validation: whatever the bytes, the result is a config or an error.
func FuzzLoadFile(f *testing.F) {
	f.Add([]byte("log:\n  format: text\nkubernetes:\n  qps: 5\n  burst: 10\nshutdownTimeout: 10s\n"))
	f.Add([]byte("http:\n  address: '[::1]:80'\nimds:\n  endpoint: http://127.0.0.1:1\n  timeout: 1s\n"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c := Default()
		if err := c.LoadFile(p); err != nil {
			return
		}
		_ = c.Validate()
		if _, err := c.YAML(); err != nil {
			t.Fatalf("a loaded config does not marshal: %v", err)
		}
	})
}
