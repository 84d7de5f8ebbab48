package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/autonode/autonode/agent/config"
	"github.com/autonode/autonode/agent/subsystem"
	"github.com/autonode/autonode/health"
	"github.com/autonode/autonode/health/console"
	"github.com/autonode/autonode/health/diagnostics"
	"github.com/autonode/autonode/health/journal"
	"github.com/autonode/autonode/health/kernel"
	"github.com/autonode/autonode/health/repair"
	"github.com/autonode/autonode/health/reporter"
	"github.com/autonode/autonode/health/runtime"
	"github.com/autonode/autonode/health/system"
)

// healthParts are the health reporter, which every subsystem reports to,
// and the monitors that feed it.
type healthParts struct {
	reporter *reporter.Reporter
	specs    []subsystem.Spec
	close    func()
}

// newHealth builds the reporter with its repair and console summary, and the
// kernel, journal, system, runtime and diagnostics subsystems.
func newHealth(cfg config.Config, client kubernetes.Interface, restConfig *rest.Config, nodeName func() string,
	logger *slog.Logger, reg prometheus.Registerer) (*healthParts, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	catalogue, err := health.NewCatalogue(cfg.Health.SeverityOverrides)
	if err != nil {
		return nil, err
	}
	// Restarts and reboots go through systemd over D-Bus, connected on
	// first use, so that an agent without D-Bus still starts.
	sd := repair.NewSystemd()
	repairer, err := repair.New(repair.Options{
		Restarter: sd, Rebooter: sd, Logger: logger,
		Restarts:  cfg.Health.RestartsPerHour,
		StatePath: filepath.Join(cfg.StateDir, "repair-budget.json"),
	})
	if err != nil {
		sd.Close()
		return nil, err
	}
	rep, err := reporter.New(reporter.Options{
		Client: client, NodeName: nodeName, Catalogue: catalogue,
		Logger: logger, Registerer: reg,
		HeartbeatInterval: cfg.Health.HeartbeatInterval.Duration,
		Console:           console.New(console.Options{Path: cfg.Health.ConsolePath, Logger: logger}),
		Repairer:          repairer,
	})
	if err != nil {
		sd.Close()
		return nil, err
	}
	parts := &healthParts{reporter: rep, close: sd.Close}
	fail := func(err error) (*healthParts, error) { sd.Close(); return nil, err }

	kmsg, err := kernel.New(kernel.Options{
		Reporter: rep, Logger: logger, Registerer: reg, Path: cfg.Health.KmsgPath,
		CursorPath: filepath.Join(cfg.StateDir, "kmsg-cursor.json"), StartAtEnd: true,
	})
	if err != nil {
		return fail(err)
	}
	units, err := journal.New(journal.Options{
		Reporter: rep, Logger: logger, Registerer: reg,
		CursorPath: filepath.Join(cfg.StateDir, "journal-cursor.json"), StartAtEnd: true,
	})
	if err != nil {
		return fail(err)
	}
	sys, err := system.New(system.Options{Reporter: rep, Logger: logger, Registerer: reg})
	if err != nil {
		return fail(err)
	}
	rt, err := runtime.New(runtime.Options{
		Reporter: rep, Logger: logger, Registerer: reg,
		ContainerdAddress: cfg.Health.ContainerdAddress, KubeletHealthzURL: cfg.Health.KubeletHealthzURL,
	})
	if err != nil {
		return fail(err)
	}
	diag, err := diagnostics.New(restConfig, diagnostics.Options{NodeNameFunc: nodeName, Logger: logger})
	if err != nil {
		return fail(err)
	}
	parts.specs = []subsystem.Spec{
		{Subsystem: rep, Requires: []string{"node"}},
		{Subsystem: kmsg, Condition: health.KernelReady},
		{Subsystem: units, Condition: health.ContainerRuntimeReady},
		{Subsystem: sys, Condition: health.KernelReady},
		{Subsystem: rt, Condition: health.ContainerRuntimeReady},
		// Best effort: a cluster without the NodeDiagnostic CRD still gets
		// its nodes untainted.
		{Subsystem: diag, Requires: []string{"node"}, Optional: true},
	}
	return parts, nil
}
