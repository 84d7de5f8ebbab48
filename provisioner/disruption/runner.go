package disruption

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Source gives a fresh view of the cluster (from informer caches).
type Source interface {
	Cluster(ctx context.Context) (*Cluster, error)
}

// Executor carries out a command against the cluster. The provisioner's
// controllers implement it; the simulation harness has its own.
type Executor interface {
	// Taint puts TaintDisrupted on the candidates' Nodes (and the
	// Disrupting condition on their NodeClaims) so that nothing new lands
	// on them.
	Taint(ctx context.Context, cmd *Command) error
	// Untaint undoes Taint after a failure.
	Untaint(ctx context.Context, cmd *Command) error
	// Launch creates one NodeClaim per replacement (with the narrowed
	// requirements, and AnnotationNodePoolHash set) and returns their names.
	Launch(ctx context.Context, cmd *Command) ([]string, error)
	// WaitInitialized returns once every named NodeClaim is Initialized,
	// or with an error when one fails or ctx ends.
	WaitInitialized(ctx context.Context, nodeClaims []string) error
	// Delete deletes the candidates' NodeClaims. Their termination
	// finalizer drains the Nodes through the Eviction API, which enforces
	// PodDisruptionBudgets, waiting for PDBs and do-not-disrupt pods until
	// the NodeClaim's terminationGracePeriod (forceful commands only; see
	// DrainDeadline), then terminates the instances.
	Delete(ctx context.Context, cmd *Command) error
}

// Recorder publishes a decision, as Events on the candidates' NodeClaims
// and Nodes (reason DisruptionDecided, DisruptionFailed, ...).
type Recorder interface {
	Record(cmd *Command, eventReason, message string)
}

// Runner is the decision loop: decide, wait the validation delay and
// re-validate (consolidation), reserve the budgets, then execute in the
// background so that commands run concurrently within their budgets.
type Runner struct {
	Engine   *Engine
	Ledger   *Ledger
	Source   Source
	Executor Executor
	Recorder Recorder     // optional
	Metrics  *Metrics     // optional
	Clock    clock.Clock  // default clock.RealClock
	Logger   *slog.Logger // default discards
	// Interval between rounds. Default 10s.
	Interval time.Duration

	wg sync.WaitGroup
}

func (r *Runner) defaults() {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
}

// Run runs rounds until ctx ends, then waits for the commands in flight.
// Run it on the leader only (controller-runtime's manager does that for a
// RunnableFunc).
func (r *Runner) Run(ctx context.Context) error {
	r.defaults()
	interval := r.Interval
	if interval == 0 {
		interval = 10 * time.Second
	}
	defer r.wg.Wait()
	for {
		if _, err := r.Step(ctx); err != nil && ctx.Err() == nil {
			r.Logger.Error("disruption round", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.Clock.After(interval):
		}
	}
}

// Wait waits for the commands in flight.
func (r *Runner) Wait() { r.wg.Wait() }

func (r *Runner) snapshot(ctx context.Context) (*Cluster, error) {
	c, err := r.Source.Cluster(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster: %w", err)
	}
	r.Ledger.Overlay(c)
	return c, nil
}

// Step runs one round and returns the command it started, if any.
func (r *Runner) Step(ctx context.Context) (*Command, error) {
	r.defaults()
	c, err := r.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	start := r.Clock.Now()
	cmd, err := r.Engine.Decide(ctx, c, start)
	r.Metrics.ObserveDecide(r.Clock.Since(start), cmd)
	if err != nil || cmd == nil {
		return nil, err
	}
	if cmd.Consolidation() {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-r.Clock.After(r.Engine.Options().ValidationDelay):
		}
		if c, err = r.snapshot(ctx); err != nil {
			return nil, err
		}
		valid, err := r.Engine.Validate(ctx, c, cmd, r.Clock.Now())
		if errors.Is(err, ErrInvalidated) {
			r.Metrics.ObserveInvalidated(cmd)
			r.Logger.Info("disruption command invalidated", "decision", cmd.Decision().String(), "err", err)
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		cmd = valid
	}
	res, err := r.Ledger.Reserve(c, cmd, r.Clock.Now())
	if err != nil {
		r.Metrics.ObserveInvalidated(cmd)
		r.Logger.Info("disruption command over budget", "decision", cmd.Decision().String(), "err", err)
		return nil, nil
	}
	d := cmd.Decision()
	r.Logger.Info("disrupting", "decision", d.String())
	if r.Recorder != nil {
		r.Recorder.Record(cmd, "DisruptionDecided", d.String())
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.execute(ctx, cmd, res)
	}()
	return cmd, nil
}

// execute taints, launches and waits for the replacements, then deletes.
// On failure before the delete, it untaints and cancels the reservation.
func (r *Runner) execute(ctx context.Context, cmd *Command, res *Reservation) {
	start := r.Clock.Now()
	err := r.executeSteps(ctx, cmd)
	if err == nil {
		res.Release()
		r.Metrics.ObserveExecuted(cmd, r.Clock.Since(start))
		return
	}
	r.Metrics.ObserveFailed(cmd)
	r.Logger.Error("disruption command failed", "decision", cmd.Decision().String(), "err", err)
	if r.Recorder != nil {
		r.Recorder.Record(cmd, "DisruptionFailed", err.Error())
	}
	// Untaint with a context that outlives a cancelled run, so the nodes
	// go back into service.
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if uerr := r.Executor.Untaint(uctx, cmd); uerr != nil {
		r.Logger.Error("untainting after a failed disruption", "decision", cmd.Decision().String(), "err", uerr)
		res.Release() // still tainted: keep counting it until a snapshot catches up
		return
	}
	res.Cancel()
}

func (r *Runner) executeSteps(ctx context.Context, cmd *Command) error {
	if err := r.Executor.Taint(ctx, cmd); err != nil {
		return fmt.Errorf("tainting: %w", err)
	}
	if len(cmd.Replacements) > 0 {
		names, err := r.Executor.Launch(ctx, cmd)
		if err != nil {
			return fmt.Errorf("launching replacements: %w", err)
		}
		if err := r.Executor.WaitInitialized(ctx, names); err != nil {
			return fmt.Errorf("waiting for replacements %v: %w", names, err)
		}
	}
	if err := r.Executor.Delete(ctx, cmd); err != nil {
		return fmt.Errorf("deleting: %w", err)
	}
	return nil
}
