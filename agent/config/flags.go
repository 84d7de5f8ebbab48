package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EnvPrefix starts the environment variable that mirrors each flag:
// --log-format is also AUTONODE_LOG_FORMAT.
const EnvPrefix = "AUTONODE_"

// option binds one flag, and its environment variable, to a Config field.
type option struct {
	flag  string
	usage string
	bind  func(c *Config) flag.Value
}

func options() []option {
	return []option{
		{"log-format", "Log `format`: " + strings.Join(logFormats(), " or ") + ".",
			func(c *Config) flag.Value { return (*stringValue)(&c.Log.Format) }},
		{"log-level", "Lowest `level` logged: " + strings.Join(logLevels(), ", ") + ".",
			func(c *Config) flag.Value { return (*stringValue)(&c.Log.Level) }},
		{"http-address", "Loopback `host:port` of the status server (/healthz, /readyz, /metrics).",
			func(c *Config) flag.Value { return (*stringValue)(&c.HTTP.Address) }},
		{"imds-endpoint", "Instance metadata service `URL`; empty uses the AWS SDK default.",
			func(c *Config) flag.Value { return (*stringValue)(&c.IMDS.Endpoint) }},
		{"imds-timeout", "Per-request `timeout` of the instance metadata service; failures are retried with backoff.",
			func(c *Config) flag.Value { return (*durationValue)(&c.IMDS.Timeout) }},
		{"kubeconfig", "Kubeconfig `path`; empty uses the in-cluster configuration.",
			func(c *Config) flag.Value { return (*stringValue)(&c.Kubernetes.Kubeconfig) }},
		{"kube-api-qps", "Sustained `requests` per second to the kube-apiserver.",
			func(c *Config) flag.Value { return (*float32Value)(&c.Kubernetes.QPS) }},
		{"kube-api-burst", "Burst of `requests` allowed above kube-api-qps.",
			func(c *Config) flag.Value { return (*intValue)(&c.Kubernetes.Burst) }},
		{"device-plugins", "Serve the NVIDIA, Neuron and EFA device plugins whose hardware is present (`true` or false).",
			func(c *Config) flag.Value { return (*boolValue)(&c.DevicePlugins.Enabled) }},
		{"device-plugin-dir", "The kubelet's device-plugin `folder`, where kubelet.sock is.",
			func(c *Config) flag.Value { return (*stringValue)(&c.DevicePlugins.Dir) }},
		{"sysfs-root", "Where sysfs is mounted (`path`); device plugins read their hardware there.",
			func(c *Config) flag.Value { return (*stringValue)(&c.DevicePlugins.SysfsRoot) }},
		{"neuron-mode", "The one Neuron `resource` this node advertises: " + strings.Join(neuronModes(), " (aws.amazon.com/neuroncore) or ") + " (aws.amazon.com/neuron).",
			func(c *Config) flag.Value { return (*stringValue)(&c.DevicePlugins.Neuron.Mode) }},
		{"cluster-name", "EKS cluster `name` for Pod Identity; empty turns the Pod Identity endpoint off.",
			func(c *Config) flag.Value { return (*stringValue)(&c.PodIdentity.ClusterName) }},
		{"eks-auth-endpoint", "EKS Auth API `URL`; empty uses https://eks-auth.<region>.api.aws.",
			func(c *Config) flag.Value { return (*stringValue)(&c.PodIdentity.EKSAuthEndpoint) }},
		{"state-dir", "`Folder` for what survives a restart: monitor cursors, the repair budget, the IPAM checkpoint.",
			func(c *Config) flag.Value { return (*stringValue)(&c.StateDir) }},
		{"kmsg-path", "Kernel log `device` the kernel monitor reads.",
			func(c *Config) flag.Value { return (*stringValue)(&c.Health.KmsgPath) }},
		{"console-path", "Serial console `path` for the health summary written while the apiserver is out of reach.",
			func(c *Config) flag.Value { return (*stringValue)(&c.Health.ConsolePath) }},
		{"network", "Run pod networking: IPAM, the CNI backend and the datapath (`true` or false).",
			func(c *Config) flag.Value { return (*boolValue)(&c.Network.Enabled) }},
		{"cni-socket", "Unix socket `path` where autonode-cni reaches the agent.",
			func(c *Config) flag.Value { return (*stringValue)(&c.Network.CNISocket) }},
		{"ec2-endpoint", "EC2 API `URL`; empty uses the region's.",
			func(c *Config) flag.Value { return (*stringValue)(&c.Network.EC2Endpoint) }},
		{"network-policy", "Enforce NetworkPolicy with eBPF on every pod's veth (`true` or false); needs --network.",
			func(c *Config) flag.Value { return (*boolValue)(&c.Policy.Enabled) }},
		{"policy-strict", "Deny pods that start before the policy caches have synced (`true` or false).",
			func(c *Config) flag.Value { return (*boolValue)(&c.Policy.Strict) }},
		{"csi", "Serve the EBS CSI node service and register it with the kubelet (`true` or false).",
			func(c *Config) flag.Value { return (*boolValue)(&c.Storage.CSI.Enabled) }},
		{"csi-driver-name", "CSI driver `name` of the EBS node service, as PersistentVolumes and the controller spell it.",
			func(c *Config) flag.Value { return (*stringValue)(&c.Storage.CSI.DriverName) }},
		{"shutdown-timeout", "How long (a `duration`) subsystems get to stop after SIGTERM before the agent exits anyway.",
			func(c *Config) flag.Value { return (*durationValue)(&c.ShutdownTimeout) }},
	}
}

// envName returns the environment variable that mirrors a flag.
func envName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Command is the result of parsing the agent's command line.
type Command struct {
	Config      Config
	PrintConfig bool
}

// CommandHelp names a one-shot subcommand in the daemon's usage text.
type CommandHelp struct {
	Name, Summary string
}

// ErrHelp is returned by Parse when --help was asked for; usage was printed.
var ErrHelp = flag.ErrHelp

// Parse builds the effective configuration from defaults, the config file
// (--config or AUTONODE_CONFIG), environment variables and flags, in rising
// precedence, and validates it. Usage goes to out on --help or a bad flag.
func Parse(name string, args []string, getenv func(string) string, out io.Writer, commands ...CommandHelp) (Command, error) {
	opts := options()
	defaults := Default()

	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	raw := make(map[string]*rawValue, len(opts))
	for _, o := range opts {
		rv := &rawValue{}
		if b, ok := o.bind(&defaults).(interface{ IsBoolFlag() bool }); ok {
			rv.isBool = b.IsBoolFlag()
		}
		raw[o.flag] = rv
		def := o.bind(&defaults).String()
		fs.Var(rv, o.flag, fmt.Sprintf("%s [env %s]", o.usage, envName(o.flag)))
		fs.Lookup(o.flag).DefValue = def
	}
	configPath := fs.String("config", "", "YAML config file `path` (see docs/configuration.md). [env "+EnvPrefix+"CONFIG]")
	printConfig := fs.Bool("print-config", false, "Print the effective configuration as YAML and exit.")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: %s [flags]\n\n", name)
		fmt.Fprintf(out, "%s runs on every node and gives it pod networking, network policy, storage,\n", name)
		fmt.Fprintf(out, "Pod Identity, device plugins and health monitoring. Precedence, highest first:\n")
		fmt.Fprintf(out, "flags, environment variables, the config file, defaults.\n\n")
		if len(commands) > 0 {
			fmt.Fprintf(out, "Commands (NAME --help for each):\n")
			for _, c := range commands {
				fmt.Fprintf(out, "  %-12s %s\n", c.Name, c.Summary)
			}
			fmt.Fprintln(out)
		}
		fmt.Fprintf(out, "Flags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Command{}, err
	}
	if fs.NArg() > 0 {
		return Command{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}

	cfg := Default()
	if *configPath == "" {
		*configPath = getenv(EnvPrefix + "CONFIG")
	}
	if *configPath != "" {
		if err := cfg.LoadFile(*configPath); err != nil {
			return Command{}, err
		}
	}
	for _, o := range opts {
		if v := getenv(envName(o.flag)); v != "" {
			if err := o.bind(&cfg).Set(v); err != nil {
				return Command{}, fmt.Errorf("environment variable %s: %q: %w", envName(o.flag), v, err)
			}
		}
		if rv := raw[o.flag]; rv.set {
			if err := o.bind(&cfg).Set(rv.value); err != nil {
				return Command{}, fmt.Errorf("flag --%s: %q: %w", o.flag, rv.value, err)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return Command{}, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return Command{Config: cfg, PrintConfig: *printConfig}, nil
}

// rawValue records a flag's text so that it can be applied after the config
// file and environment, whatever order they arrive in.
type rawValue struct {
	value  string
	set    bool
	isBool bool
}

func (r *rawValue) String() string     { return r.value }
func (r *rawValue) Set(s string) error { r.value, r.set = s, true; return nil }
func (r *rawValue) IsBoolFlag() bool   { return r.isBool }

type stringValue string

func (v *stringValue) String() string     { return string(*v) }
func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }

type boolValue bool

func (v *boolValue) String() string { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("not true or false")
	}
	*v = boolValue(b)
	return nil
}

// IsBoolFlag lets --device-plugins stand alone for true.
func (v *boolValue) IsBoolFlag() bool { return true }

type intValue int

func (v *intValue) String() string { return strconv.Itoa(int(*v)) }
func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not a whole number")
	}
	*v = intValue(n)
	return nil
}

type float32Value float32

func (v *float32Value) String() string { return strconv.FormatFloat(float64(*v), 'g', -1, 32) }
func (v *float32Value) Set(s string) error {
	f, err := strconv.ParseFloat(s, 32)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return errors.New("not a finite number")
	}
	*v = float32Value(f)
	return nil
}

type durationValue metav1.Duration

func (v *durationValue) String() string { return v.Duration.String() }
func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration such as 30s or 2m")
	}
	v.Duration = d
	return nil
}
