// Package garbagecollection reconciles EC2 with the NodeClaims: every
// Interval it terminates the cluster's instances that no NodeClaim owns
// (once they are older than LaunchGrace, so a launch whose claim status is
// still being written is not mistaken for one), and deletes NodeClaims
// whose instance is gone, whose termination then removes their Node.
package garbagecollection

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/cloud"
	"github.com/autonode/autonode/provisioner/controllers/claimutil"
)

// CloudProvider is what garbage collection needs from the cloud;
// *cloud.Provider satisfies it.
type CloudProvider interface {
	List(ctx context.Context) ([]*cloud.Instance, error)
	Get(ctx context.Context, id string) (*cloud.Instance, error)
	Terminate(ctx context.Context, id string) error
}

// ReasonInstanceGone is the Event on a NodeClaim deleted because its
// instance no longer exists.
const ReasonInstanceGone = "InstanceGone"

// Options configures a Collector.
type Options struct {
	// Interval between passes. Default 1m.
	Interval time.Duration
	// LaunchGrace is how old an instance without a NodeClaim must be
	// before it is terminated. Default 1m.
	LaunchGrace time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger. Default discards.
	Logger *slog.Logger
}

// Collector is the garbage collector; a manager.Runnable on the leader.
type Collector struct {
	client   client.Client
	cloud    CloudProvider
	recorder events.EventRecorder
	opts     Options
}

// New returns a Collector that lists NodeClaims through c.
func New(c client.Client, cp CloudProvider, recorder events.EventRecorder, opts Options) *Collector {
	opts.Interval = cmp.Or(opts.Interval, time.Minute)
	opts.LaunchGrace = cmp.Or(opts.LaunchGrace, time.Minute)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Collector{client: c, cloud: cp, recorder: recorder, opts: opts}
}

// Start collects every Interval until ctx ends; a failed pass is logged.
func (g *Collector) Start(ctx context.Context) error {
	t := time.NewTicker(g.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := g.Collect(ctx); err != nil && ctx.Err() == nil {
			g.opts.Logger.ErrorContext(ctx, "garbage collection pass failed", "err", err)
		}
	}
}

// Collect runs one pass.
func (g *Collector) Collect(ctx context.Context) error {
	instances, err := g.cloud.List(ctx)
	if err != nil {
		return err
	}
	var claims v1.NodeClaimList
	if err := g.client.List(ctx, &claims); err != nil {
		return fmt.Errorf("listing nodeclaims: %w", err)
	}
	byName := make(map[string]*v1.NodeClaim, len(claims.Items))
	for i := range claims.Items {
		byName[claims.Items[i].Name] = &claims.Items[i]
	}
	live := map[string]bool{}
	var errs []error
	for _, inst := range instances {
		live[inst.ProviderID()] = true
		if inst.State == "shutting-down" {
			continue
		}
		claim := byName[inst.NodeClaim()]
		owned := claim != nil && (claim.Status.ProviderID == "" || claim.Status.ProviderID == inst.ProviderID())
		if owned || g.opts.Now().Sub(inst.LaunchTime) < g.opts.LaunchGrace {
			continue
		}
		err := g.cloud.Terminate(ctx, inst.ID)
		if err != nil && !errors.Is(err, cloud.ErrInstanceNotFound) {
			errs = append(errs, err)
			continue
		}
		g.opts.Logger.InfoContext(ctx, "terminated instance without a nodeclaim", "instance", inst.ID, "nodeclaim", inst.NodeClaim())
	}
	for i := range claims.Items {
		c := &claims.Items[i]
		if c.DeletionTimestamp != nil || c.Status.ProviderID == "" || live[c.Status.ProviderID] || !claimutil.IsTrue(c, v1.ConditionLaunched) {
			continue
		}
		// Listed instances exclude terminated ones; ask once more, by id,
		// before acting on an absence.
		_, id, err := cloud.ParseProviderID(c.Status.ProviderID)
		if err != nil {
			continue
		}
		if _, err := g.cloud.Get(ctx, id); !errors.Is(err, cloud.ErrInstanceNotFound) {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		g.recorder.Eventf(c, nil, corev1.EventTypeWarning, ReasonInstanceGone, "GarbageCollect", "Instance %s no longer exists; deleting the nodeclaim", id)
		g.opts.Logger.InfoContext(ctx, "deleting nodeclaim whose instance is gone", "nodeclaim", c.Name, "instance", id)
		if err := g.client.Delete(ctx, c); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("deleting nodeclaim %s: %w", c.Name, err))
		}
	}
	return errors.Join(errs...)
}
