// Package kubenode ties the agent to its own Node object. It finds the Node
// by spec.providerID (aws:///<zone>/<instance-id>), keeps the
// autonode.dev/agent-version annotation on it, and removes the startup taint
// autonode.dev/agent-not-ready once every enabled subsystem is ready. It is
// level-based: whatever happens to the Node, each reconcile converges it
// again, and an apiserver that is away is waited for, never fatal.
package kubenode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/autonode/autonode/agent/backoff"
	"github.com/autonode/autonode/agent/subsystem"
)

// The names this package maintains on the Node.
const (
	StartupTaintKey   = "autonode.dev/agent-not-ready"
	VersionAnnotation = "autonode.dev/agent-version"
)

// Options configures a Node subsystem.
type Options struct {
	Client kubernetes.Interface
	// ProviderID identifies the Node. InstanceID (Auto Mode names nodes after
	// the instance) and then Hostname (the private DNS name, the kubelet's
	// default) are tried as its name before listing all Nodes.
	ProviderID string
	InstanceID string
	Hostname   string
	// Version is written to the agent-version annotation.
	Version string
	// AllReady is the aggregate readiness of the agent's subsystems, this one
	// included; it gates removal of the startup taint.
	AllReady func() error
	Logger   *slog.Logger
	// PollInterval is how often readiness is checked for a change. Default 1s.
	PollInterval time.Duration
	// Resync re-runs the reconcile even without events. Default 5m.
	Resync time.Duration
	// InitialBackoff and MaxBackoff shape retries after API errors.
	// Defaults 500ms and 30s.
	InitialBackoff, MaxBackoff time.Duration
	// ListPageSize is the page size when listing Nodes to find ours. Default 500.
	ListPageSize int64
}

// Node is the subsystem that maintains the agent's Node object.
type Node struct {
	opts      Options
	readiness *subsystem.Readiness
	name      atomic.Pointer[string]
}

// New returns the subsystem; nothing is contacted until Run.
func New(opts Options) *Node {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.Resync <= 0 {
		opts.Resync = 5 * time.Minute
	}
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	if opts.ListPageSize <= 0 {
		opts.ListPageSize = 500
	}
	opts.Logger = opts.Logger.With("providerID", opts.ProviderID)
	return &Node{opts: opts, readiness: subsystem.NewReadiness("looking for the Node with providerID " + opts.ProviderID)}
}

// Name implements subsystem.Subsystem.
func (n *Node) Name() string { return "node" }

// NodeName is the name of our Node once found, or "" before.
func (n *Node) NodeName() string {
	if p := n.name.Load(); p != nil {
		return *p
	}
	return ""
}

// Ready is nil once the Node is found and annotated.
func (n *Node) Ready() error { return n.readiness.Ready() }

// Run finds the Node, then watches it and reconciles until ctx ends. When
// the Node goes away, or its name comes to belong to another instance, it
// looks for our Node again, under whatever name it registers.
func (n *Node) Run(ctx context.Context) error {
	for {
		name, err := n.find(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		n.name.Store(&name)
		err = n.watch(ctx, name)
		if !errors.Is(err, errNodeLost) {
			return err
		}
		n.readiness.SetNotReady(err)
		n.opts.Logger.Warn("lost own Node; looking for it again", "err", err)
	}
}

// errNodeLost means the watched Node no longer is ours.
var errNodeLost = errors.New("node lost")

// watch reconciles the Node called name on every change until ctx ends or
// the Node stops being ours (errNodeLost).
func (n *Node) watch(ctx context.Context, name string) error {
	log := n.opts.Logger.With("node", name)
	log.Info("found own Node")

	factory := informers.NewSharedInformerFactoryWithOptions(n.opts.Client, n.opts.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	nodes := factory.Core().V1().Nodes()
	trigger := make(chan struct{}, 1)
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}); err != nil {
		return fmt.Errorf("watching node %s: %w", name, err)
	}
	// Shutdown waits for the informer to stop, so the informer gets a context
	// of its own, cancelled first when watch returns.
	informerCtx, stopInformer := context.WithCancel(ctx)
	factory.Start(informerCtx.Done())
	defer factory.Shutdown()
	defer stopInformer()
	if !cache.WaitForCacheSync(ctx.Done(), nodes.Informer().HasSynced) {
		return ctx.Err()
	}

	ticker := time.NewTicker(n.opts.PollInterval)
	defer ticker.Stop()
	delays := n.backoff()
	var retry <-chan time.Time
	wasReady := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-trigger:
		case <-retry:
		case <-ticker.C:
			// Readiness has no events of its own; act when it flips.
			if ready := n.opts.AllReady() == nil; ready == wasReady {
				continue
			}
		}
		retry = nil
		wasReady = n.opts.AllReady() == nil
		node, err := nodes.Lister().Get(name)
		switch {
		case apierrors.IsNotFound(err):
			return fmt.Errorf("node %s was deleted: %w", name, errNodeLost)
		case err != nil:
		case node.Spec.ProviderID != n.opts.ProviderID:
			return fmt.Errorf("node %s now has providerID %q, want %q: %w", name, node.Spec.ProviderID, n.opts.ProviderID, errNodeLost)
		default:
			err = n.reconcile(ctx, node)
		}
		if err != nil {
			delay := delays.Step()
			log.Warn("reconciling node failed; retrying", "err", err, "backoff", delay)
			retry = time.After(delay)
			continue
		}
		delays = n.backoff()
	}
}

// reconcile converges node towards the desired state.
func (n *Node) reconcile(ctx context.Context, node *corev1.Node) error {
	log := n.opts.Logger.With("node", node.Name)
	if node.Annotations[VersionAnnotation] != n.opts.Version {
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{VersionAnnotation: n.opts.Version}}})
		if _, err := n.opts.Client.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("annotating node %s: %w", node.Name, err)
		}
		log.Info("annotated node", "annotation", VersionAnnotation, "version", n.opts.Version)
	}
	n.readiness.SetReady()

	if err := n.opts.AllReady(); err != nil {
		return nil // the taint stays until every subsystem is ready
	}
	kept := make([]corev1.Taint, 0, len(node.Spec.Taints))
	for _, t := range node.Spec.Taints {
		if t.Key != StartupTaintKey {
			kept = append(kept, t)
		}
	}
	if len(kept) == len(node.Spec.Taints) {
		return nil
	}
	// The test op makes the patch fail, rather than drop a taint that
	// someone else added meanwhile; the informer then brings the new list.
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": "/spec/taints", "value": node.Spec.Taints},
		{"op": "replace", "path": "/spec/taints", "value": kept},
	})
	if err != nil {
		return fmt.Errorf("building taint patch for node %s: %w", node.Name, err)
	}
	if _, err := n.opts.Client.CoreV1().Nodes().Patch(ctx, node.Name, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
		if apierrors.IsInvalid(err) {
			err = fmt.Errorf("taints changed since our last read; retrying on the fresh list: %w", err)
		}
		return fmt.Errorf("removing startup taint %s from node %s: %w", StartupTaintKey, node.Name, err)
	}
	log.Info("every subsystem ready; removed startup taint", "taint", StartupTaintKey)
	return nil
}

// find returns the name of the Node whose providerID is ours, waiting for
// it to register and for the apiserver to answer.
func (n *Node) find(ctx context.Context) (string, error) {
	delays := n.backoff()
	for attempt := 1; ; attempt++ {
		name, err := n.findOnce(ctx)
		if err == nil {
			return name, nil
		}
		n.readiness.SetNotReady(err)
		delay := delays.Step()
		n.opts.Logger.Warn("own Node not found yet; retrying", "attempt", attempt, "backoff", delay, "err", err)
		if err := backoff.Sleep(ctx, delay); err != nil {
			return "", err
		}
	}
}

var errNotRegistered = errors.New("no Node has our providerID yet")

func (n *Node) findOnce(ctx context.Context) (string, error) {
	nodes := n.opts.Client.CoreV1().Nodes()
	// The names a kubelet on EC2 registers under, tried before a List that
	// would cost the apiserver a read of every Node.
	for _, name := range []string{n.opts.InstanceID, n.opts.Hostname} {
		if name == "" {
			continue
		}
		node, err := nodes.Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil && node.Spec.ProviderID == n.opts.ProviderID:
			return node.Name, nil
		case err != nil && !apierrors.IsNotFound(err):
			return "", fmt.Errorf("getting node %s: %w", name, err)
		}
	}
	// Named otherwise: page through.
	opts := metav1.ListOptions{Limit: n.opts.ListPageSize}
	for {
		list, err := nodes.List(ctx, opts)
		if err != nil {
			return "", fmt.Errorf("listing nodes: %w", err)
		}
		for _, node := range list.Items {
			if node.Spec.ProviderID == n.opts.ProviderID {
				return node.Name, nil
			}
		}
		if list.Continue == "" {
			return "", errNotRegistered
		}
		opts.Continue = list.Continue
	}
}

func (n *Node) backoff() wait.Backoff {
	return backoff.New(n.opts.InitialBackoff, n.opts.MaxBackoff)
}
