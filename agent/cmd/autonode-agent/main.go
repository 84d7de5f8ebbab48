// Command autonode-agent is the node daemon: it reads the instance identity,
// connects to the cluster, runs every subsystem under one supervisor, and
// reports its state to systemd, to its status server and to its Node.
//
// This file is the only place where the agent is wired together.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/autonode/autonode/agent/config"
	"github.com/autonode/autonode/agent/identity"
	"github.com/autonode/autonode/agent/identity/eksauth"
	"github.com/autonode/autonode/agent/instance"
	"github.com/autonode/autonode/agent/kubenode"
	"github.com/autonode/autonode/agent/sdnotify"
	"github.com/autonode/autonode/agent/statusserver"
	"github.com/autonode/autonode/agent/subsystem"
	"github.com/autonode/autonode/deviceplugins"
	"github.com/autonode/autonode/deviceplugins/efa"
	"github.com/autonode/autonode/deviceplugins/neuron"
	"github.com/autonode/autonode/deviceplugins/nvidia"
	"github.com/autonode/autonode/health"
	"k8s.io/klog/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	var exit exitCodeError
	switch {
	case errors.Is(err, config.ErrHelp):
	case errors.As(err, &exit):
		fmt.Fprintln(os.Stderr, "autonode-agent:", err)
		os.Exit(exit.code)
	case err != nil:
		fmt.Fprintln(os.Stderr, "autonode-agent:", err)
		os.Exit(1)
	}
}

// exitCodeError asks main for an exit status other than 1: a Bottlerocket
// settings generator that exits 2 is skipped instead of failing the boot.
type exitCodeError struct {
	code int
	err  error
}

func (e exitCodeError) Error() string { return e.err.Error() }
func (e exitCodeError) Unwrap() error { return e.err }

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		if sub, ok := subcommands()[args[0]]; ok {
			return sub.run(ctx, args[1:], stdout, stderr)
		}
	}
	cmd, err := config.Parse("autonode-agent", args, getenv, stderr, commandHelp()...)
	if err != nil {
		return err
	}
	cfg := cmd.Config
	if cmd.PrintConfig {
		out, err := cfg.YAML()
		if err != nil {
			return fmt.Errorf("printing the configuration: %w", err)
		}
		_, err = stdout.Write(out)
		return err
	}
	logger := newLogger(cfg.Log, stderr)
	// Libraries that log through klog (mount-utils, client-go) join the
	// agent's structured log.
	klog.SetSlogLogger(logger)
	logger.Info("autonode-agent starting", "version", version)

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	notifier := sdnotify.Notifier{Logger: logger}
	notifier.Status("reading instance identity")

	id, err := instance.Fetch(ctx, instance.NewClient(cfg.IMDS.Endpoint), instance.Options{Logger: logger, Timeout: cfg.IMDS.Timeout.Duration})
	if err != nil {
		if ctx.Err() != nil {
			logger.Info("stopped before the instance identity was read")
			notifier.Stopping()
			return nil
		}
		return err
	}
	logger = logger.With("instance", id.InstanceID)

	restConfig, err := kubeRESTConfig(cfg.Kubernetes)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)

	// The subsystems, in start order. Later subsystems append here.
	var supervisor *subsystem.Supervisor
	node := kubenode.New(kubenode.Options{
		Client:     client,
		ProviderID: id.ProviderID(),
		InstanceID: id.InstanceID,
		Hostname:   id.Hostname,
		Version:    version,
		AllReady:   func() error { return supervisor.Ready() },
		Logger:     logger,
	})
	// Every subsystem reports health signals to this one reporter, which
	// turns them into the Node's conditions and events.
	healthParts, err := newHealth(cfg, client, restConfig, node.NodeName, logger, registry)
	if err != nil {
		return err
	}
	defer healthParts.close()
	reporter := healthParts.reporter
	specs := append([]subsystem.Spec{{Subsystem: node}}, healthParts.specs...)

	// The node's own AWS credentials and region, for EC2 and EKS Auth: on
	// EC2 the instance role, served by the same IMDS as the identity.
	awsOpts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(id.Region)}
	if cfg.IMDS.Endpoint != "" {
		awsOpts = append(awsOpts, awsconfig.WithEC2IMDSEndpoint(cfg.IMDS.Endpoint))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsOpts...)
	if err != nil {
		return fmt.Errorf("AWS configuration: %w", err)
	}
	if cfg.Network.Enabled {
		network, closeNetwork, err := newNetwork(ctx, cfg, id, awsCfg, client, logger, reporter, registry)
		if err != nil {
			return err
		}
		defer closeNetwork()
		specs = append(specs, network...)
	}
	if cfg.PodIdentity.ClusterName != "" {
		spec, err := podIdentity(ctx, cfg, id, awsCfg, logger, registry)
		if err != nil {
			return err
		}
		specs = append(specs, spec)
	}
	if cfg.DevicePlugins.Enabled {
		plugins, err := devicePlugins(cfg.DevicePlugins, logger, reporter, registry)
		if err != nil {
			return err
		}
		specs = append(specs, plugins...)
	}
	// Only verifies what `storage setup` did before the kubelet started.
	specs = append(specs, instanceStoreVerifier(cfg, logger, reporter)...)
	if cfg.Storage.CSI.Enabled {
		csiSpecs, err := newCSI(cfg, id, awsCfg, version, logger, registry)
		if err != nil {
			return err
		}
		specs = append(specs, csiSpecs...)
	}
	supervisor, err = subsystem.New(subsystem.Options{
		Logger:          logger,
		Registerer:      registry,
		Health:          reporter,
		ShutdownTimeout: cfg.ShutdownTimeout.Duration,
	}, specs...)
	if err != nil {
		return err
	}
	server, err := statusserver.Listen(cfg.HTTP.Address, supervisor, registry, logger)
	if err != nil {
		return err
	}

	// The supervisor and the status server run until SIGTERM; either failing
	// stops the other, and the agent exits non-zero for systemd to restart.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return supervisor.Run(gctx) })
	g.Go(func() error { return server.Run(gctx) })
	// Status takes the supervisor's lock: if that wedges, pings stop and
	// systemd restarts the agent.
	g.Go(func() error { notifier.RunWatchdog(gctx, func() bool { supervisor.Status(); return true }); return nil })
	g.Go(func() error {
		notifier.Status("waiting for subsystems: " + oneLine(supervisor.Ready()))
		if supervisor.WaitReady(gctx) == nil {
			logger.Info("agent ready")
			notifier.Ready()
			notifier.Status("ready")
		}
		return nil
	})

	<-gctx.Done()
	logger.Info("shutting down", "timeout", cfg.ShutdownTimeout.Duration)
	notifier.Stopping()
	if err := g.Wait(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("stopped cleanly")
	return nil
}

// podIdentity builds the Pod Identity endpoint. It signs EKS Auth calls with
// the node's own credentials, from the SDK's chain: on EC2 the instance role
// through the same IMDS the agent reads its identity from.
func podIdentity(ctx context.Context, cfg config.Config, id instance.Identity, awsCfg aws.Config, logger *slog.Logger, reg prometheus.Registerer) (subsystem.Spec, error) {
	client, err := eksauth.New(ctx, eksauth.Options{Region: id.Region, Endpoint: cfg.PodIdentity.EKSAuthEndpoint, Credentials: awsCfg.Credentials})
	if err != nil {
		return subsystem.Spec{}, fmt.Errorf("pod identity: %w", err)
	}
	server, err := identity.New(identity.Options{
		ClusterName: cfg.PodIdentity.ClusterName,
		EKSAuth:     client,
		Port:        cfg.PodIdentity.Port,
		Cache:       identity.CacheOptions{MaxEntries: cfg.PodIdentity.MaxCacheEntries},
		Logger:      logger,
		Registerer:  reg,
	})
	if err != nil {
		return subsystem.Spec{}, fmt.Errorf("pod identity: %w", err)
	}
	return subsystem.Spec{Subsystem: server}, nil
}

// devicePlugins returns a supervised plugin for each kind of accelerator
// present on this node: none on most nodes.
func devicePlugins(cfg config.DevicePlugins, logger *slog.Logger, reporter health.Reporter, reg prometheus.Registerer) ([]subsystem.Spec, error) {
	var backends []deviceplugins.Backend
	gpus, err := nvidia.SysfsGPUs(cfg.SysfsRoot)
	if err != nil {
		return nil, fmt.Errorf("looking for NVIDIA GPUs: %w", err)
	}
	if len(gpus) > 0 {
		b, err := nvidia.New(nvidia.Options{
			Logger:   logger,
			NVML:     nvml.New(),
			Reporter: reporter,
			// The sysfs count stands in for the instance type's until the
			// agent reads DescribeInstanceTypes.
			ExpectedGPUs: len(gpus),
			SysfsRoot:    cfg.SysfsRoot,
			XIDPolicy:    nvidia.XIDPolicy{Ignore: cfg.NVIDIA.XIDIgnore, Fatal: cfg.NVIDIA.XIDFatal, QuietPeriod: cfg.NVIDIA.XIDQuietPeriod.Duration},
			CDI:          nvidia.CDIOptions{Logger: logger, Dir: cfg.NVIDIA.CDIDir},
		})
		if err != nil {
			return nil, err
		}
		backends = append(backends, b)
	}
	if present, err := neuron.Present(cfg.SysfsRoot); err != nil {
		return nil, err
	} else if present {
		b, err := neuron.New(neuron.Options{Logger: logger, SysfsRoot: cfg.SysfsRoot, Mode: neuron.Mode(cfg.Neuron.Mode), Registerer: reg})
		if err != nil {
			return nil, err
		}
		backends = append(backends, b)
	}
	if present, err := efa.Present(cfg.SysfsRoot); err != nil {
		return nil, err
	} else if present {
		backends = append(backends, efa.New(efa.Options{Logger: logger, SysfsRoot: cfg.SysfsRoot}))
	}

	var specs []subsystem.Spec
	for _, b := range backends {
		plugin := deviceplugins.NewPlugin(b, deviceplugins.Options{PluginDir: cfg.Dir, Health: reporter, Logger: logger})
		specs = append(specs, subsystem.Spec{Subsystem: plugin, Condition: health.AcceleratedHardwareReady})
	}
	return specs, nil
}

func newLogger(cfg config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func kubeRESTConfig(cfg config.Kubernetes) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	rc.QPS = cfg.QPS
	rc.Burst = cfg.Burst
	rc.UserAgent = "autonode-agent/" + version
	return rc, nil
}

func oneLine(err error) string {
	if err == nil {
		return "none"
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}
