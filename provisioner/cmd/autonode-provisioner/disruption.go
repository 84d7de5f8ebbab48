package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/autonode/autonode/provisioner/controllers/provisioning"
	"github.com/autonode/autonode/provisioner/disruption"
	"github.com/autonode/autonode/provisioner/disruption/kube"
)

// defaultRepairTolerations is disruption.DefaultRepairPolicy as a flag.
const defaultRepairTolerations = "Ready=30m,KernelReady=30m,NetworkingReady=30m,StorageReady=30m,ContainerRuntimeReady=30m,AcceleratedHardwareReady=10m"

// disruptionOptions are the disruption controller's flags.
type disruptionOptions struct {
	interval                   time.Duration
	validationDelay            time.Duration
	minPriceImprovement        float64
	minPriceImprovementPercent float64
	oneToMany                  bool
	maxReplacements            int
	maxUnhealthyPercent        float64
	repairTolerations          string
}

func (d disruptionOptions) validate() error {
	if d.interval <= 0 {
		return fmt.Errorf("--disruption-interval must be positive, not %s", d.interval)
	}
	if d.maxUnhealthyPercent < 0 || d.maxUnhealthyPercent > 100 {
		return fmt.Errorf("--repair-max-unhealthy-percent %v is outside [0, 100]", d.maxUnhealthyPercent)
	}
	if d.maxReplacements < 1 {
		return fmt.Errorf("--consolidation-max-replacements must be at least 1, not %d", d.maxReplacements)
	}
	if _, err := parseTolerations(d.repairTolerations); err != nil {
		return err
	}
	return d.engineOptions().Validate()
}

// engineOptions converts the flags; validate has checked them.
func (d disruptionOptions) engineOptions() disruption.Options {
	repair := disruption.DefaultRepairPolicy()
	repair.Tolerations, _ = parseTolerations(d.repairTolerations)
	repair.MaxUnhealthyShare = d.maxUnhealthyPercent / 100
	o := disruption.Options{
		MinPriceImprovement:        d.minPriceImprovement,
		MinPriceImprovementPercent: d.minPriceImprovementPercent,
		// Zero would mean the engine's default; a flag of 0s asks for none.
		ValidationDelay: max(d.validationDelay, time.Nanosecond),
		OneToMany:       d.oneToMany,
		Repair:          &repair,
	}
	if d.oneToMany {
		o.MaxReplacements = d.maxReplacements
	}
	return o
}

// parseTolerations reads "Condition=duration,..." into repair tolerations:
// Ready is bad when False or Unknown, every other condition when False. A
// condition left out is not repaired for.
func parseTolerations(s string) ([]disruption.Toleration, error) {
	var out []disruption.Toleration
	seen := map[string]bool{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		cond, after, ok := strings.Cut(item, "=")
		d, err := time.ParseDuration(after)
		if !ok || cond == "" || err != nil || d <= 0 {
			return nil, fmt.Errorf("--repair-tolerations item %q: want Condition=duration with a positive duration", item)
		}
		if seen[cond] {
			return nil, fmt.Errorf("--repair-tolerations: condition %s given twice", cond)
		}
		seen[cond] = true
		statuses := []corev1.ConditionStatus{corev1.ConditionFalse}
		if cond == string(corev1.NodeReady) {
			statuses = append(statuses, corev1.ConditionUnknown)
		}
		out = append(out, disruption.Toleration{Condition: corev1.NodeConditionType(cond), Statuses: statuses, After: d})
	}
	return out, nil
}

// leaderOnly runs the disruption loop on the replica holding the lease:
// two deciding at once could each stay within a budget and break it
// together.
type leaderOnly struct{ *disruption.Runner }

func (leaderOnly) NeedLeaderElection() bool { return true }

func (l leaderOnly) Start(ctx context.Context) error { return l.Run(ctx) }

// addDisruption builds the disruption Runner over the manager's cache and
// the provisioning controller (which resolves pools and AMIs and creates
// replacement NodeClaims) and adds it to mgr.
func addDisruption(mgr manager.Manager, prov *provisioning.Provisioner, d disruptionOptions, logger *slog.Logger) error {
	engine, err := disruption.New(d.engineOptions())
	if err != nil {
		return fmt.Errorf("disruption: %w", err)
	}
	m, err := disruption.NewMetrics(metrics.Registry)
	if err != nil {
		return fmt.Errorf("disruption metrics: %w", err)
	}
	c := mgr.GetClient()
	return mgr.Add(leaderOnly{&disruption.Runner{
		Engine:   engine,
		Ledger:   disruption.NewLedger(),
		Source:   &kube.Source{Client: c, Resolver: prov, Logger: logger},
		Executor: &kube.Executor{Client: c, Launcher: prov},
		Recorder: kube.Recorder{Events: mgr.GetEventRecorder("autonode-disruption")},
		Metrics:  m,
		Logger:   logger,
		Interval: d.interval,
	}})
}
