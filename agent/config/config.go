// Package config holds the agent's configuration: its defaults, the YAML
// file, environment variables and flags, in rising order of precedence, and
// the validation that runs once at start so that a bad value stops the agent
// with a message naming the field and what it may be.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/autonode/autonode/health"
)

// Config is the agent's effective configuration. Its YAML form is the config
// file's format; docs/configuration.md describes every field.
type Config struct {
	Log        Log        `json:"log"`
	HTTP       HTTP       `json:"http"`
	IMDS       IMDS       `json:"imds"`
	Kubernetes Kubernetes `json:"kubernetes"`
	// DevicePlugins configures the NVIDIA, Neuron and EFA device plugins.
	DevicePlugins DevicePlugins `json:"devicePlugins"`
	// PodIdentity configures the Pod Identity credentials endpoint.
	PodIdentity PodIdentity `json:"podIdentity"`
	// Health configures the monitors, the node conditions and repair.
	Health Health `json:"health"`
	// Network configures pod networking: IPAM, the CNI backend and the
	// node-local DNS cache.
	Network Network `json:"network"`
	// Policy configures NetworkPolicy enforcement.
	Policy Policy `json:"policy"`
	// Storage configures the instance store (docs/storage.md).
	Storage Storage `json:"storage"`
	// StateDir keeps what must survive an agent restart: the monitors'
	// cursors, the repair budget, the IPAM checkpoint. Default is
	// /var/lib/autonode.
	StateDir string `json:"stateDir"`
	// ShutdownTimeout bounds a graceful stop: how long subsystems get to
	// return after SIGTERM. Default is 30s.
	ShutdownTimeout metav1.Duration `json:"shutdownTimeout"`
}

// Log configures the agent's structured logs.
type Log struct {
	// Format is json (default) or text.
	Format string `json:"format"`
	// Level is debug, info (default), warn or error.
	Level string `json:"level"`
}

// HTTP configures the status server (/healthz, /readyz, /metrics).
type HTTP struct {
	// Address is a loopback host:port. Default is 127.0.0.1:61680.
	Address string `json:"address"`
}

// IMDS configures how the agent reads its instance identity.
type IMDS struct {
	// Endpoint overrides the instance metadata service URL; empty uses the
	// SDK's default (http://169.254.169.254). The sandbox points it at its
	// emulator.
	Endpoint string `json:"endpoint,omitempty"`
	// Timeout bounds one metadata request. Default is 5s.
	Timeout metav1.Duration `json:"timeout"`
}

// Kubernetes configures the agent's API client.
type Kubernetes struct {
	// Kubeconfig is a kubeconfig path; empty means in-cluster config.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// QPS is the sustained request rate to the apiserver. Default is 20.
	QPS float32 `json:"qps"`
	// Burst is the short-term request allowance above QPS. Default is 40.
	Burst int `json:"burst"`
}

// Network configures pod networking.
type Network struct {
	// Enabled runs IPAM, the CNI backend and the datapath. Default is true.
	Enabled bool `json:"enabled"`
	// CNISocket is where autonode-cni reaches the agent. Default is
	// /run/autonode/cni.sock.
	CNISocket string `json:"cniSocket"`
	// EC2Endpoint overrides the region's EC2 API; the sandbox points it at
	// its emulator.
	EC2Endpoint string `json:"ec2Endpoint,omitempty"`
	// PrefixDelegation hands out /28 prefixes' addresses instead of
	// secondary IPs (Nitro types).
	PrefixDelegation bool `json:"prefixDelegation"`
	// The VPC CNI's warm targets (docs/ipam.md). All zero means its
	// defaults: one warm ENI, one warm prefix.
	WarmENITarget    int `json:"warmENITarget"`
	WarmIPTarget     int `json:"warmIPTarget"`
	MinimumIPTarget  int `json:"minimumIPTarget"`
	WarmPrefixTarget int `json:"warmPrefixTarget"`
	// MTU of the pods' interfaces. Default is 9001.
	MTU int `json:"mtu"`
	// ExternalSNAT leaves SNAT of traffic leaving the VPC to a NAT gateway.
	ExternalSNAT bool `json:"externalSNAT"`
	// SNATExcludedCIDRs are destinations, besides the VPC, never SNATed.
	SNATExcludedCIDRs []string `json:"snatExcludedCIDRs,omitempty"`
	// DNS configures the node-local DNS cache; it runs when ClusterDNS is set.
	DNS NodeLocalDNS `json:"dns"`
}

// NodeLocalDNS configures the node-local caching resolver.
type NodeLocalDNS struct {
	// Address is where pods reach it. Default is 169.254.20.10.
	Address string `json:"address"`
	// ClusterDomain goes to ClusterDNS; everything else to the VPC
	// resolver. Default is cluster.local.
	ClusterDomain string `json:"clusterDomain"`
	// ClusterDNS are the cluster DNS Service's addresses; empty turns the
	// cache off.
	ClusterDNS []string `json:"clusterDNS,omitempty"`
}

// Health configures node health: monitors, conditions, repair.
type Health struct {
	// KmsgPath is the kernel log device. Default is /dev/kmsg.
	KmsgPath string `json:"kmsgPath"`
	// ConsolePath receives a health summary while the apiserver is out of
	// reach, for EC2 GetConsoleOutput. Default is /dev/ttyS0.
	ConsolePath string `json:"consolePath"`
	// HeartbeatInterval is how often unchanged conditions are re-written.
	// Default is 5m.
	HeartbeatInterval metav1.Duration `json:"heartbeatInterval"`
	// RestartsPerHour bounds local unit restarts per unit. Default is 3.
	RestartsPerHour int `json:"restartsPerHour"`
	// ContainerdAddress is containerd's socket, probed by the runtime
	// monitor. Default is /run/containerd/containerd.sock.
	ContainerdAddress string `json:"containerdAddress"`
	// KubeletHealthzURL is the kubelet's health endpoint; "-" turns the
	// check off. Default is http://127.0.0.1:10248/healthz.
	KubeletHealthzURL string `json:"kubeletHealthzURL"`
	// SeverityOverrides maps a reason (docs/health.md) to fatal, warning or
	// info.
	SeverityOverrides map[string]string `json:"severityOverrides,omitempty"`
}

// PodIdentity configures the EKS Pod Identity endpoint on 169.254.170.23 and
// fd00:ec2::23. It runs when ClusterName is set.
type PodIdentity struct {
	// ClusterName is the EKS cluster whose associations EKS Auth applies.
	// Empty turns the endpoint off.
	ClusterName string `json:"clusterName,omitempty"`
	// EKSAuthEndpoint overrides https://eks-auth.<region>.api.aws; the
	// sandbox points it at its emulator.
	EKSAuthEndpoint string `json:"eksAuthEndpoint,omitempty"`
	// Port is the TCP port on both addresses. Default is 80, the port the
	// EKS webhook writes into pods' AWS_CONTAINER_CREDENTIALS_FULL_URI.
	Port int `json:"port"`
	// MaxCacheEntries bounds the credential cache (one entry per service
	// account token). Default is 2000.
	MaxCacheEntries int `json:"maxCacheEntries"`
}

// DevicePlugins configures the kubelet device plugins. Each plugin serves only
// when its hardware is present under SysfsRoot.
type DevicePlugins struct {
	// Enabled turns the device plugins on. Default is true.
	Enabled bool `json:"enabled"`
	// Dir is the kubelet's device-plugin folder, where kubelet.sock is.
	// Default is /var/lib/kubelet/device-plugins/.
	Dir string `json:"dir"`
	// SysfsRoot is where sysfs is mounted. Default is /sys.
	SysfsRoot string `json:"sysfsRoot"`
	NVIDIA    NVIDIA `json:"nvidia"`
	Neuron    Neuron `json:"neuron"`
}

// NVIDIA configures the nvidia.com/gpu plugin's XID policy and CDI output.
type NVIDIA struct {
	// XIDIgnore lists XIDs that leave the GPU healthy. Default is 13, 31,
	// 43, 45, 68, 109 (application errors).
	XIDIgnore []uint64 `json:"xidIgnore,omitempty"`
	// XIDFatal lists XIDs after which the GPU stays unhealthy until the
	// agent restarts. Default is 48, 74, 79, 95, 119, 120, 140.
	XIDFatal []uint64 `json:"xidFatal,omitempty"`
	// XIDQuietPeriod is how long a GPU stays unhealthy after any other XID.
	// Default is 5m.
	XIDQuietPeriod metav1.Duration `json:"xidQuietPeriod"`
	// CDIDir is where the CDI spec is written. Default is /var/run/cdi.
	CDIDir string `json:"cdiDir"`
}

// Neuron configures the Neuron plugin.
type Neuron struct {
	// Mode is the one resource the node advertises: core
	// (aws.amazon.com/neuroncore, default) or device (aws.amazon.com/neuron).
	// Both at once would let the kubelet hand out a core twice.
	Mode string `json:"mode"`
}

// Allowed values, shared by validation and the flag usage strings.
func logFormats() []string  { return []string{"json", "text"} }
func logLevels() []string   { return []string{"debug", "info", "warn", "error"} }
func neuronModes() []string { return []string{"core", "device"} }

// Default returns the configuration used when nothing overrides it.
func Default() Config {
	return Config{
		Log:         Log{Format: "json", Level: "info"},
		HTTP:        HTTP{Address: "127.0.0.1:61680"},
		IMDS:        IMDS{Timeout: metav1.Duration{Duration: 5 * time.Second}},
		Kubernetes:  Kubernetes{QPS: 20, Burst: 40},
		PodIdentity: PodIdentity{Port: 80, MaxCacheEntries: 2000},
		StateDir:    "/var/lib/autonode",
		Network: Network{
			Enabled:   true,
			CNISocket: "/run/autonode/cni.sock",
			MTU:       9001,
			DNS:       NodeLocalDNS{Address: "169.254.20.10", ClusterDomain: "cluster.local"},
		},
		Health: Health{
			KmsgPath:          "/dev/kmsg",
			ConsolePath:       "/dev/ttyS0",
			HeartbeatInterval: metav1.Duration{Duration: 5 * time.Minute},
			RestartsPerHour:   3,
			ContainerdAddress: "/run/containerd/containerd.sock",
			KubeletHealthzURL: "http://127.0.0.1:10248/healthz",
		},
		DevicePlugins: DevicePlugins{
			Enabled:   true,
			Dir:       "/var/lib/kubelet/device-plugins/",
			SysfsRoot: "/sys",
			NVIDIA:    NVIDIA{XIDQuietPeriod: metav1.Duration{Duration: 5 * time.Minute}, CDIDir: "/var/run/cdi"},
			Neuron:    Neuron{Mode: "core"},
		},
		ShutdownTimeout: metav1.Duration{Duration: 30 * time.Second},
		Policy:          defaultPolicy(),
		Storage:         Storage{InstanceStore: DefaultInstanceStore(), CSI: DefaultCSI()},
	}
}

// LoadFile overlays the YAML file at path onto c. Unknown fields are errors,
// so that a misspelt key is not silently ignored.
func (c *Config) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config file: %w", err)
	}
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// YAML returns c in the config file's format.
func (c Config) YAML() ([]byte, error) {
	return yaml.Marshal(c)
}

// FieldError is a configuration value that failed validation.
type FieldError struct {
	Field string // the YAML path, e.g. log.format
	Flag  string // the flag that sets it; empty when only the file can
	Value string
	Want  string // what the field may be
}

func (e *FieldError) Error() string {
	flag := "--" + e.Flag
	if e.Flag == "" {
		flag = "config file only"
	}
	return fmt.Sprintf("%s (%s): %q: %s", e.Field, flag, e.Value, e.Want)
}

// Validate checks every field and returns all problems at once, each a
// *FieldError.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, flag, value, want string) {
		errs = append(errs, &FieldError{Field: field, Flag: flag, Value: value, Want: want})
	}
	oneOf := func(field, flag, value string, allowed []string) {
		if !slices.Contains(allowed, value) {
			bad(field, flag, value, "must be one of: "+strings.Join(allowed, ", "))
		}
	}
	positive := func(field, flag string, d metav1.Duration, maximum time.Duration) {
		if d.Duration <= 0 || d.Duration > maximum {
			bad(field, flag, d.Duration.String(), fmt.Sprintf("must be a duration above 0s and at most %s", maximum))
		}
	}

	oneOf("log.format", "log-format", c.Log.Format, logFormats())
	oneOf("log.level", "log-level", c.Log.Level, logLevels())
	if err := checkLoopback(c.HTTP.Address); err != nil {
		bad("http.address", "http-address", c.HTTP.Address, err.Error())
	}
	if c.IMDS.Endpoint != "" {
		if u, err := url.Parse(c.IMDS.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("imds.endpoint", "imds-endpoint", c.IMDS.Endpoint, "must be an absolute http:// or https:// URL, or empty for the default")
		}
	}
	positive("imds.timeout", "imds-timeout", c.IMDS.Timeout, time.Minute)
	if c.Kubernetes.Kubeconfig != "" {
		if _, err := clientcmd.BuildConfigFromFlags("", c.Kubernetes.Kubeconfig); err != nil {
			bad("kubernetes.kubeconfig", "kubeconfig", c.Kubernetes.Kubeconfig, "must be a readable, valid kubeconfig, or empty for in-cluster config: "+err.Error())
		}
	}
	if !(c.Kubernetes.QPS > 0 && c.Kubernetes.QPS <= 10000) { // also rejects NaN
		bad("kubernetes.qps", "kube-api-qps", strconv.FormatFloat(float64(c.Kubernetes.QPS), 'g', -1, 32), "must be above 0 and at most 10000")
	}
	if c.Kubernetes.Burst < 1 || float32(c.Kubernetes.Burst) < c.Kubernetes.QPS {
		bad("kubernetes.burst", "kube-api-burst", strconv.Itoa(c.Kubernetes.Burst), "must be at least 1 and at least kubernetes.qps")
	}
	positive("shutdownTimeout", "shutdown-timeout", c.ShutdownTimeout, 10*time.Minute)
	if e := c.PodIdentity.EKSAuthEndpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("podIdentity.eksAuthEndpoint", "eks-auth-endpoint", e, "must be an absolute http:// or https:// URL, or empty for the region's")
		}
	}
	if p := c.PodIdentity.Port; p < 1 || p > 65535 {
		bad("podIdentity.port", "", strconv.Itoa(p), "must be a port from 1 to 65535")
	}
	if n := c.PodIdentity.MaxCacheEntries; n < 1 || n > 1_000_000 {
		bad("podIdentity.maxCacheEntries", "", strconv.Itoa(n), "must be from 1 to 1000000")
	}
	for _, f := range []struct{ field, flag, value string }{
		{"stateDir", "state-dir", c.StateDir}, {"health.kmsgPath", "kmsg-path", c.Health.KmsgPath}, {"health.consolePath", "console-path", c.Health.ConsolePath},
	} {
		if !filepath.IsAbs(f.value) {
			bad(f.field, f.flag, f.value, "must be an absolute path")
		}
	}
	positive("health.heartbeatInterval", "", c.Health.HeartbeatInterval, time.Hour)
	if !filepath.IsAbs(c.Health.ContainerdAddress) {
		bad("health.containerdAddress", "", c.Health.ContainerdAddress, "must be an absolute socket path")
	}
	if u := c.Health.KubeletHealthzURL; u != "-" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			bad("health.kubeletHealthzURL", "", u, `must be an absolute http:// or https:// URL, or "-" for no check`)
		}
	}
	if n := c.Health.RestartsPerHour; n < 0 || n > 60 {
		bad("health.restartsPerHour", "", strconv.Itoa(n), "must be from 0 to 60")
	}
	if _, err := health.NewCatalogue(c.Health.SeverityOverrides); err != nil {
		bad("health.severityOverrides", "", fmt.Sprint(c.Health.SeverityOverrides), err.Error())
	}
	nw := c.Network
	if !filepath.IsAbs(nw.CNISocket) {
		bad("network.cniSocket", "cni-socket", nw.CNISocket, "must be an absolute path")
	}
	if e := nw.EC2Endpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("network.ec2Endpoint", "ec2-endpoint", e, "must be an absolute http:// or https:// URL, or empty for the region's")
		}
	}
	for _, f := range []struct {
		field string
		v     int
	}{{"network.warmENITarget", nw.WarmENITarget}, {"network.warmIPTarget", nw.WarmIPTarget}, {"network.minimumIPTarget", nw.MinimumIPTarget}, {"network.warmPrefixTarget", nw.WarmPrefixTarget}} {
		if f.v < 0 || f.v > 10000 {
			bad(f.field, "", strconv.Itoa(f.v), "must be from 0 to 10000")
		}
	}
	if nw.MTU < 576 || nw.MTU > 9001 {
		bad("network.mtu", "", strconv.Itoa(nw.MTU), "must be from 576 to 9001")
	}
	for _, cidr := range nw.SNATExcludedCIDRs {
		if p, err := netip.ParsePrefix(cidr); err != nil || !p.Addr().Is4() {
			bad("network.snatExcludedCIDRs", "", cidr, "must be IPv4 CIDR blocks")
		}
	}
	if a, err := netip.ParseAddr(nw.DNS.Address); err != nil || !a.Is4() {
		bad("network.dns.address", "", nw.DNS.Address, "must be an IPv4 address")
	}
	if nw.DNS.ClusterDomain == "" || strings.ContainsAny(nw.DNS.ClusterDomain, " /") {
		bad("network.dns.clusterDomain", "", nw.DNS.ClusterDomain, "must be a DNS domain such as cluster.local")
	}
	for _, a := range nw.DNS.ClusterDNS {
		if _, err := netip.ParseAddr(a); err != nil {
			bad("network.dns.clusterDNS", "", a, "must be IP addresses")
		}
	}
	dp := c.DevicePlugins
	for _, f := range []struct{ field, flag, value string }{
		{"devicePlugins.dir", "device-plugin-dir", dp.Dir},
		{"devicePlugins.sysfsRoot", "sysfs-root", dp.SysfsRoot},
		{"devicePlugins.nvidia.cdiDir", "", dp.NVIDIA.CDIDir},
	} {
		if !filepath.IsAbs(f.value) {
			bad(f.field, f.flag, f.value, "must be an absolute path")
		}
	}
	oneOf("devicePlugins.neuron.mode", "neuron-mode", dp.Neuron.Mode, neuronModes())
	positive("devicePlugins.nvidia.xidQuietPeriod", "", dp.NVIDIA.XIDQuietPeriod, 24*time.Hour)
	for _, x := range dp.NVIDIA.XIDFatal {
		if slices.Contains(dp.NVIDIA.XIDIgnore, x) {
			bad("devicePlugins.nvidia.xidFatal", "", strconv.FormatUint(x, 10), "must not also be in devicePlugins.nvidia.xidIgnore")
		}
	}
	validateStorage(c.Storage, bad)
	validateCSI(c.Storage.CSI, bad)
	c.Policy.validate(bad)
	return errors.Join(errs...)
}

// checkLoopback accepts host:port where host is a loopback IP or localhost:
// the status server exposes internals and must not listen off the node.
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("must be host:port")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return errors.New("port must be a number from 0 to 65535")
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return errors.New("host must be a loopback address (127.0.0.0/8, ::1 or localhost)")
	}
	return nil
}
