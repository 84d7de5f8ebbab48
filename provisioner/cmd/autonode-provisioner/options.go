package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// envPrefix starts the environment variable that mirrors each flag:
// --cluster-name is AUTONODE_PROVISIONER_CLUSTER_NAME.
const envPrefix = "AUTONODE_PROVISIONER_"

// options are the provisioner's settings; parse fills them from flags,
// then their environment variables, then defaults.
type options struct {
	kubeconfig          string
	clusterName         string
	clusterEndpoint     string
	clusterCAFile       string
	clusterDNSIP        string
	region              string
	ec2Endpoint         string
	priceFile           string
	sandboxPrices       bool
	amiOwner            string
	batchIdle           time.Duration
	batchMax            time.Duration
	registrationTTL     time.Duration
	gcInterval          time.Duration
	gcLaunchGrace       time.Duration
	volumeDetachTimeout time.Duration
	disruption          disruptionOptions
	metricsAddr         string
	healthAddr          string
	leaderElect         bool
	leaderNamespace     string
	logLevel            string
}

// errHelp is returned when --help was asked for; usage has been printed.
var errHelp = errors.New("help requested")

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse reads args and the environment (through getenv); flags win over
// environment variables, which win over defaults.
func parse(args []string, getenv func(string) string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("autonode-provisioner", flag.ContinueOnError)
	fs.SetOutput(out)
	str := func(p *string, name, def, usage string) { fs.StringVar(p, name, def, usage+" [env "+envName(name)+"]") }
	dur := func(p *time.Duration, name string, def time.Duration, usage string) {
		fs.DurationVar(p, name, def, usage+" [env "+envName(name)+"]")
	}
	boolean := func(p *bool, name string, def bool, usage string) {
		fs.BoolVar(p, name, def, usage+" [env "+envName(name)+"]")
	}
	float := func(p *float64, name string, def float64, usage string) {
		fs.Float64Var(p, name, def, usage+" [env "+envName(name)+"]")
	}
	integer := func(p *int, name string, def int, usage string) {
		fs.IntVar(p, name, def, usage+" [env "+envName(name)+"]")
	}

	str(&o.kubeconfig, "kubeconfig", "", "kubeconfig `path`; empty: the in-cluster service account")
	str(&o.clusterName, "cluster-name", "", "cluster `name`: tags instances (autonode.dev/cluster) and goes into node user data (required)")
	str(&o.clusterEndpoint, "cluster-endpoint", "", "API server `URL` that new nodes join (required to launch)")
	str(&o.clusterCAFile, "cluster-ca-file", "", "PEM `file` of the cluster's certificate authority, for node user data (required to launch)")
	str(&o.clusterDNSIP, "cluster-dns-ip", "", "cluster DNS service `address` for node user data; empty: Bottlerocket derives it")
	str(&o.region, "region", "", "AWS `region` of the cluster; empty: AWS_REGION or the SDK's default chain")
	str(&o.ec2Endpoint, "ec2-endpoint", "", "EC2 endpoint `URL` override (the sandbox's emulator); empty: the region's")
	str(&o.priceFile, "price-file", "", "YAML or JSON `file` of on-demand prices (onDemand: {m5.large: 0.096}); empty: the AWS Price List API")
	boolean(&o.sandboxPrices, "sandbox-prices", false, "price on-demand types from the sandbox's built-in catalog instead of a file or the Price List API")
	str(&o.amiOwner, "ami-owner", "self", "`owner` of the autonode variant AMIs that NodeClass aliases resolve to")
	dur(&o.batchIdle, "batch-idle-duration", time.Second, "close a batch of pending pods once none has arrived for this `duration`")
	dur(&o.batchMax, "batch-max-duration", 10*time.Second, "close a batch of pending pods this `duration` after it opened, however busy")
	dur(&o.registrationTTL, "registration-ttl", 15*time.Minute, "delete a launched NodeClaim whose Node has not registered within this `duration`")
	dur(&o.gcInterval, "gc-interval", time.Minute, "`interval` at which orphan instances and NodeClaims without instances are collected")
	dur(&o.gcLaunchGrace, "gc-launch-grace", time.Minute, "`age` an instance without a NodeClaim must be before it is terminated")
	dur(&o.volumeDetachTimeout, "volume-detach-timeout", 5*time.Minute, "`duration` termination waits for a drained node's volumes to detach")
	d := &o.disruption
	dur(&d.interval, "disruption-interval", 10*time.Second, "`interval` between disruption rounds (consolidation, drift, expiry, repair)")
	dur(&d.validationDelay, "consolidation-validation-delay", 15*time.Second, "`duration` a consolidation waits before it is re-simulated and carried out")
	float(&d.minPriceImprovement, "consolidation-min-price-improvement", 0, "least `$/h` a consolidation must save")
	float(&d.minPriceImprovementPercent, "consolidation-min-price-improvement-percent", 0, "least share of the candidates' price, in `percent`, a consolidation must save")
	boolean(&d.oneToMany, "consolidation-one-to-many", false, "let single-node consolidation replace a node with several cheaper ones")
	integer(&d.maxReplacements, "consolidation-max-replacements", 3, "most `nodes` one node may be replaced with under --consolidation-one-to-many")
	float(&d.maxUnhealthyPercent, "repair-max-unhealthy-percent", 20, "stop repair in a nodepool while more than this `percent` of its nodes is unhealthy")
	str(&d.repairTolerations, "repair-tolerations", defaultRepairTolerations,
		"how long each Node condition may be bad before the node is replaced: `list` of Condition=duration (Ready when False or Unknown, others when False)")
	str(&o.metricsAddr, "metrics-bind-address", ":8080", "`address` of the Prometheus metrics endpoint; 0 turns it off")
	str(&o.healthAddr, "health-probe-bind-address", ":8081", "`address` of /healthz and /readyz; 0 turns them off")
	boolean(&o.leaderElect, "leader-elect", true, "run the controllers only in the replica that holds the lease")
	str(&o.leaderNamespace, "leader-election-namespace", "kube-system", "`namespace` of the leader-election Lease")
	str(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: autonode-provisioner [flags]\n\nTurns pods that kube-scheduler cannot place into EC2 instances (docs/provisioner.md).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	// Environment first, so that flags on the command line override it.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		return o, envErr
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return o, errHelp
	} else if err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, o.validate()
}

func (o options) validate() error {
	if o.clusterName == "" {
		return errors.New("--cluster-name is required")
	}
	if o.priceFile != "" && o.sandboxPrices {
		return errors.New("--price-file and --sandbox-prices are exclusive")
	}
	for name, d := range map[string]time.Duration{
		"batch-idle-duration": o.batchIdle, "batch-max-duration": o.batchMax, "registration-ttl": o.registrationTTL,
		"gc-interval": o.gcInterval, "gc-launch-grace": o.gcLaunchGrace, "volume-detach-timeout": o.volumeDetachTimeout,
	} {
		if d <= 0 {
			return fmt.Errorf("--%s must be positive, not %s", name, d)
		}
	}
	if err := o.disruption.validate(); err != nil {
		return err
	}
	if o.batchIdle > o.batchMax {
		return fmt.Errorf("--batch-idle-duration %s exceeds --batch-max-duration %s", o.batchIdle, o.batchMax)
	}
	switch o.logLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	return nil
}
