// Command autonode-provisioner is the cluster-side companion: it watches
// pods that kube-scheduler cannot place, plans the cheapest nodes for them,
// launches and registers those nodes, consolidates, rolls and repairs them
// (provisioner/disruption), and terminates them again. This file
// is the only place where it is wired together.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/pricing"
	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/cloud"
	"github.com/autonode/autonode/provisioner/controllers/claimutil"
	"github.com/autonode/autonode/provisioner/controllers/garbagecollection"
	"github.com/autonode/autonode/provisioner/controllers/lifecycle"
	"github.com/autonode/autonode/provisioner/controllers/provisioning"
	"github.com/autonode/autonode/provisioner/controllers/termination"
	"github.com/autonode/autonode/sandbox/catalog"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// client-go (reflectors, the event broadcaster) logs through klog; make
	// it JSON on stderr like the rest. Set here, before anything runs,
	// because klog's logger may not change under running goroutines.
	klog.SetLogger(logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, nil)))
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	switch {
	case errors.Is(err, errHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "autonode-provisioner:", err)
		os.Exit(1)
	}
}

// run parses the settings, builds every part and runs them until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	o, err := parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	logger.InfoContext(ctx, "starting autonode-provisioner", "version", version, "cluster", o.clusterName)

	restConfig, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %q: %w", o.kubeconfig, err)
	}
	// client-go's default of 5 queries per second throttles a scheduling
	// round that creates tens of NodeClaims.
	restConfig.QPS, restConfig.Burst = 50, 100
	// controller-runtime's own components (caches, leader election) log
	// through its global logger; route it to ours.
	crlog.SetLogger(logr.FromSlogHandler(logger.Handler()))
	provider, err := newCloud(ctx, o, logger)
	if err != nil {
		return err
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := v1.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := manager.New(restConfig, manager.Options{
		Scheme:                  scheme,
		Logger:                  logr.FromSlogHandler(logger.Handler()),
		Metrics:                 metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:  o.healthAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "autonode-provisioner",
		LeaderElectionNamespace: o.leaderNamespace,
		// controller-runtime refuses a controller name seen before in the
		// process; run may be called more than once in tests.
		Controller: config.Controller{SkipNameValidation: ptr(true)},
	})
	if err != nil {
		return fmt.Errorf("controller manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := claimutil.SetupIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	recorder := mgr.GetEventRecorder("autonode-provisioner")
	c := mgr.GetClient()

	// Instance types and prices, refreshed in the background on every
	// replica, so a new leader plans at once.
	if err := mgr.Add(manager.RunnableFunc(provider.Run)); err != nil {
		return err
	}
	prov := provisioning.New(c, provider, recorder, provisioning.Options{
		BatchIdle: o.batchIdle, BatchMax: o.batchMax, Logger: logger.With("controller", "provisioning"),
	})
	if err := prov.Register(mgr); err != nil {
		return fmt.Errorf("provisioning controller: %w", err)
	}
	life := lifecycle.New(c, mgr.GetAPIReader(), provider, recorder, lifecycle.Options{
		RegistrationTTL: o.registrationTTL, Logger: logger.With("controller", "nodeclaim-lifecycle"),
	})
	if err := life.Register(mgr); err != nil {
		return fmt.Errorf("nodeclaim lifecycle controller: %w", err)
	}
	term := termination.New(c, provider, recorder, termination.Options{
		VolumeDetachTimeout: o.volumeDetachTimeout, Logger: logger.With("controller", "termination"),
	})
	if err := term.Register(mgr); err != nil {
		return fmt.Errorf("termination controller: %w", err)
	}
	gc := garbagecollection.New(c, provider, recorder, garbagecollection.Options{
		Interval: o.gcInterval, LaunchGrace: o.gcLaunchGrace, Logger: logger.With("controller", "garbage-collection"),
	})
	if err := mgr.Add(gc); err != nil {
		return err
	}
	if err := addDisruption(mgr, prov, o.disruption, logger.With("controller", "disruption")); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// newCloud builds the EC2 provider: the SDK's default credential chain,
// the region and endpoint asked for, and the price source chosen.
func newCloud(ctx context.Context, o options, logger *slog.Logger) (*cloud.Provider, error) {
	var loadOpts []func(*awsconfig.LoadOptions) error
	if o.region != "" {
		loadOpts = append(loadOpts, awsconfig.WithRegion(o.region))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, errors.New("no AWS region: set --region or AWS_REGION")
	}
	client := ec2.NewFromConfig(awsCfg, func(eo *ec2.Options) {
		if o.ec2Endpoint != "" {
			eo.BaseEndpoint = aws.String(o.ec2Endpoint)
		}
	})
	var prices cloud.PriceSource
	switch {
	case o.sandboxPrices:
		static := cloud.StaticPrices{}
		for _, it := range catalog.Default() {
			static[it.Name] = it.PriceUSDHour
		}
		prices = static
	case o.priceFile != "":
		if prices, err = cloud.LoadPriceFile(o.priceFile); err != nil {
			return nil, err
		}
	default:
		// The Price List API answers from us-east-1 for every region.
		pc := pricing.NewFromConfig(awsCfg, func(po *pricing.Options) { po.Region = "us-east-1" })
		prices = cloud.PricingAPI{Client: pc, Region: awsCfg.Region}
	}
	cluster := cloud.Cluster{Name: o.clusterName, Endpoint: o.clusterEndpoint, DNSIP: o.clusterDNSIP}
	if o.clusterCAFile != "" {
		if cluster.CA, err = os.ReadFile(o.clusterCAFile); err != nil {
			return nil, fmt.Errorf("cluster CA: %w", err)
		}
	}
	return cloud.New(cloud.Options{
		EC2: client, Prices: prices, Cluster: cluster, AMIOwner: o.amiOwner,
		Logger: logger.With("component", "cloud"),
	})
}

func ptr[T any](v T) *T { return &v }
