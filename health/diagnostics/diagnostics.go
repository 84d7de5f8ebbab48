// Package diagnostics captures support bundles on request. A cluster-scoped
// NodeDiagnostic (autonode.dev/v1alpha1, see the v1alpha1 package) named
// after a Node asks that node's agent for a bundle: a tar.gz of the journal
// of kubelet, containerd and the agent (through libsystemd, or a note when
// journald is absent), a snapshot of the kernel log, the network
// configuration read over netlink (links, addresses, routes of every table,
// rules), the mount table, containerd's information and the agent's own
// state dumps, selected by category.
//
// The bundle is always written to disk first, under the support folder
// (/var/log/support), because a presigned PUT needs its Content-Length. With
// a URL destination it is then PUT there (up to 5 GiB) and removed; with the
// destination "node", or when the upload fails, it stays where the
// kubelet's log handler serves it, at
// /api/v1/nodes/<node>/proxy/logs/support/<file>. Only the newest few
// bundles are kept. Progress and errors go to the object's status: the
// Started and Succeeded conditions and a LogCapture entry in
// captureStatuses. Presigned URLs are never logged or written to status with
// their query, which holds the signature.
package diagnostics

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/autonode/autonode/agent/backoff"
	"github.com/autonode/autonode/health/diagnostics/v1alpha1"
)

// Diagnostics is the agent subsystem that serves NodeDiagnostics for its
// node. It watches only the object named after the node (a field selector
// on metadata.name) and reconciles it each time it changes, one capture at
// a time.
//
// It uses controller-runtime's client and cache, but not its manager: the
// manager pulls in the webhook server and its dependencies, which the agent
// does not otherwise need.
type Diagnostics struct {
	cfg    *rest.Config
	opts   Options
	scheme *runtime.Scheme
	ready  atomic.Bool
}

// New returns the subsystem; nothing is contacted until Run. cfg is the
// agent's apiserver config.
func New(cfg *rest.Config, opts Options) (*Diagnostics, error) {
	if cfg == nil {
		return nil, errors.New("diagnostics: no apiserver config")
	}
	if opts.NodeName == "" && opts.NodeNameFunc == nil {
		return nil, errors.New("diagnostics: no node name")
	}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("diagnostics: scheme: %w", err)
	}
	return &Diagnostics{cfg: cfg, opts: opts.withDefaults(), scheme: scheme}, nil
}

// Name implements subsystem.Subsystem.
func (d *Diagnostics) Name() string { return "diagnostics" }

// Ready reports nil once the NodeDiagnostic watch has synced.
func (d *Diagnostics) Ready() error {
	if !d.ready.Load() {
		return errors.New("waiting for the NodeDiagnostic watch to sync (is the CRD installed?)")
	}
	return nil
}

// Run watches this node's NodeDiagnostic and reconciles it on every change
// until ctx ends. A reconcile that fails (the status could not be written)
// is retried with backoff.
func (d *Diagnostics) Run(ctx context.Context) error {
	defer d.ready.Store(false)
	if d.opts.NodeName == "" {
		name := d.opts.NodeNameFunc()
		if name == "" {
			return errors.New("diagnostics: the Node's name is not known yet")
		}
		d.opts.NodeName = name
	}
	log := d.opts.Logger.With("node", d.opts.NodeName)
	c, err := client.New(d.cfg, client.Options{Scheme: d.scheme})
	if err != nil {
		return fmt.Errorf("diagnostics: apiserver client: %w", err)
	}
	informers, err := cache.New(d.cfg, cache.Options{
		Scheme: d.scheme,
		ByObject: map[client.Object]cache.ByObject{
			&v1alpha1.NodeDiagnostic{}: {Field: fields.OneTermEqualSelector("metadata.name", d.opts.NodeName)},
		},
	})
	if err != nil {
		return fmt.Errorf("diagnostics: cache: %w", err)
	}
	inf, err := informers.GetInformer(ctx, &v1alpha1.NodeDiagnostic{}, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("diagnostics: nodediagnostic informer: %w", err)
	}
	// Every event means the same thing, "look again", so one pending kick
	// folds any number of them.
	kicks := make(chan struct{}, 1)
	kick := func() {
		select {
		case kicks <- struct{}{}:
		default:
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { kick() },
		UpdateFunc: func(any, any) { kick() },
	}); err != nil {
		return fmt.Errorf("diagnostics: nodediagnostic informer: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cacheErr := make(chan error, 1)
	go func() { cacheErr <- informers.Start(ctx) }()
	if !informers.WaitForCacheSync(ctx) {
		cancel()
		if err := <-cacheErr; err != nil {
			return fmt.Errorf("diagnostics: nodediagnostic cache: %w", err)
		}
		return nil // ctx ended
	}
	d.ready.Store(true)
	log.InfoContext(ctx, "watching this node's NodeDiagnostic")

	rec := NewReconciler(c, c, d.opts)
	delays := backoff.New(d.opts.InitialBackoff, d.opts.MaxBackoff)
	kick()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-cacheErr:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("diagnostics: nodediagnostic cache stopped: %w", err)
		case <-kicks:
		}
		nd := &v1alpha1.NodeDiagnostic{}
		err := informers.Get(ctx, client.ObjectKey{Name: d.opts.NodeName}, nd)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err == nil {
			_, err = rec.Reconcile(ctx, nd)
		}
		if err == nil || ctx.Err() != nil {
			delays = backoff.New(d.opts.InitialBackoff, d.opts.MaxBackoff)
			continue
		}
		delay := delays.Step()
		log.ErrorContext(ctx, "reconciling NodeDiagnostic; retrying", "err", err, "backoff", delay)
		if backoff.Sleep(ctx, delay) != nil {
			return nil
		}
		kick()
	}
}
