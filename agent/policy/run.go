package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// Run adopts the pods attached before this run, starts the informers, programs every local pod once they have
// synced and keeps them programmed until ctx ends. Pinned rules stay in force throughout: a restarted engine
// replaces them pod by pod, never removing them first.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.queue.ShuttingDown() { // an earlier Run returned
		e.newQueue()
	}
	queue := e.queue
	e.v.resetCluster()
	e.mu.Unlock()
	defer queue.ShutDown()

	e.adopt()
	if err := e.reconcile(ctx); err != nil {
		return err
	}
	if err := e.refreshNodeAddresses(ctx, nil); err != nil {
		return err
	}

	factory := informers.NewSharedInformerFactoryWithOptions(e.opts.Client, 0, informers.WithTransform(stripObject))
	synced, err := e.register(factory)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	g.Go(func() error {
		if err := e.opts.Datapath.Run(ctx); err != nil && ctx.Err() == nil {
			return fmt.Errorf("policy datapath: %w", err)
		}
		return nil
	})
	g.Go(func() error { e.flows(ctx); return nil })
	g.Go(func() error {
		// The handlers' own sync, not the informers': a cache can be full before our handler has seen every
		// object in it, and computing from a partial view would open pods that a policy isolates.
		if !cache.WaitForCacheSync(ctx.Done(), synced...) {
			return nil // ctx ended
		}
		e.mu.Lock()
		e.synced, e.v.track = true, true
		all := e.v.all()
		e.mu.Unlock()
		e.log.Info("policy caches synced; programming every local pod", "pods", len(all))
		e.enqueue(all)
		return nil
	})
	for range e.opts.Workers {
		g.Go(func() error { e.worker(ctx, queue); return nil })
	}
	g.Go(func() error { return e.periodic(ctx) })
	<-ctx.Done()
	queue.ShutDown()
	err = g.Wait()
	e.mu.Lock()
	e.synced, e.v.track = false, false
	e.mu.Unlock()
	return err
}

// adopt records the pods attached before this run; their pinned rules stay until recomputed.
func (e *Engine) adopt() {
	if e.opts.Attachments == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.opts.Attachments() {
		if p.HostIf == "" || !p.IP.IsValid() || e.v.locals[p.HostIf] != nil {
			continue
		}
		e.v.attach(&local{HostIf: p.HostIf, Namespace: p.Namespace, Name: p.Name, UID: types.UID(p.UID), IP: p.IP})
	}
}

// reconcile removes pins of pods no longer attached, and forgets local pods the CNI no longer knows.
func (e *Engine) reconcile(ctx context.Context) error {
	keep := map[string]bool{}
	var attached []Pod
	if e.opts.Attachments != nil {
		attached = e.opts.Attachments()
	}
	for _, p := range attached {
		keep[p.HostIf] = true
	}
	e.mu.Lock()
	var stale []string
	for i := range e.v.locals {
		if e.opts.Attachments != nil && !keep[i] {
			stale = append(stale, i)
		}
		keep[i] = true
	}
	e.mu.Unlock()
	var errs []error
	for _, i := range stale {
		e.log.Info("forgetting a pod the CNI no longer has", "link", i)
		errs = append(errs, e.Detach(ctx, i))
		delete(keep, i)
	}
	names := make([]string, 0, len(keep))
	for i := range keep {
		names = append(names, i)
	}
	slices.Sort(names)
	if err := e.opts.Datapath.Reconcile(ctx, names); err != nil {
		errs = append(errs, fmt.Errorf("reconciling policy pins: %w", err))
	}
	err := errors.Join(errs...)
	if err != nil {
		e.metrics.reconciles.WithLabelValues("error").Inc()
	} else {
		e.metrics.reconciles.WithLabelValues("ok").Inc()
	}
	return err
}

// refreshNodeAddresses hands the node's addresses to the datapath when they differ from last.
func (e *Engine) refreshNodeAddresses(ctx context.Context, last []netip.Addr) error {
	if e.opts.NodeAddresses == nil {
		return nil
	}
	addrs, err := e.opts.NodeAddresses(ctx)
	if err != nil {
		return fmt.Errorf("reading the node's addresses: %w", err)
	}
	if e.opts.NodeLocalDNS.IsValid() {
		// Node-local DNS is policed like the cluster DNS pods, not allowed like the node.
		addrs = slices.DeleteFunc(addrs, func(a netip.Addr) bool { return a == e.opts.NodeLocalDNS })
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	if last != nil && slices.Equal(addrs, last) {
		return nil
	}
	if err := e.opts.Datapath.SetNodeAddresses(ctx, addrs); err != nil {
		return fmt.Errorf("setting node addresses: %w", err)
	}
	e.metrics.nodeAddresses.Set(float64(len(addrs)))
	e.lastNodeAddrs = addrs
	return nil
}

// periodic re-reads the node's addresses and reconciles pins on their intervals.
func (e *Engine) periodic(ctx context.Context) error {
	addrs := time.NewTicker(e.opts.NodeAddressInterval)
	defer addrs.Stop()
	pins := time.NewTicker(e.opts.ReconcileInterval)
	defer pins.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-addrs.C:
			if err := e.refreshNodeAddresses(ctx, e.lastNodeAddrs); err != nil {
				e.log.Warn("refreshing node addresses", "err", err)
			}
		case <-pins.C:
			if err := e.reconcile(ctx); err != nil {
				e.log.Warn("reconciling policy pins", "err", err)
			}
		}
	}
}

// register adds the event handlers that keep the view and enqueue affected pods.
func (e *Engine) register(f informers.SharedInformerFactory) ([]cache.InformerSynced, error) {
	handlers := []struct {
		inf cache.SharedIndexInformer
		set func(obj any, deleted bool) set
	}{
		{f.Networking().V1().NetworkPolicies().Informer(), func(obj any, deleted bool) set {
			pol, ok := obj.(*networkingv1.NetworkPolicy)
			if !ok {
				return nil
			}
			if deleted {
				delete(e.reported, pol.UID)
				return e.v.setPolicy(pol.Namespace, pol.Name, nil)
			}
			return e.v.setPolicy(pol.Namespace, pol.Name, pol)
		}},
		{f.Core().V1().Namespaces().Informer(), func(obj any, deleted bool) set {
			ns, ok := obj.(*corev1.Namespace)
			if !ok {
				return nil
			}
			return e.v.setNamespace(ns.Name, ns.Labels, deleted)
		}},
		{f.Core().V1().Pods().Informer(), func(obj any, deleted bool) set {
			pod, ok := obj.(*corev1.Pod)
			if !ok {
				return nil
			}
			key := podKey{pod.Namespace, pod.Name}
			if deleted {
				return e.v.setPod(key, nil)
			}
			return e.v.setPod(key, podInfoFrom(pod))
		}},
		{f.Core().V1().Services().Informer(), func(obj any, deleted bool) set {
			svc, ok := obj.(*corev1.Service)
			if !ok {
				return nil
			}
			if deleted {
				return e.v.setService(podKey{svc.Namespace, svc.Name}, nil)
			}
			return e.v.setService(podKey{svc.Namespace, svc.Name}, svc)
		}},
		{f.Discovery().V1().EndpointSlices().Informer(), func(obj any, deleted bool) set {
			es, ok := obj.(*discoveryv1.EndpointSlice)
			if !ok {
				return nil
			}
			if deleted {
				return e.v.setSlice(podKey{es.Namespace, es.Name}, nil)
			}
			return e.v.setSlice(podKey{es.Namespace, es.Name}, es)
		}},
	}
	var synced []cache.InformerSynced
	for _, h := range handlers {
		apply := func(obj any, deleted bool) {
			e.mu.Lock()
			affected := h.set(untomb(obj), deleted)
			e.mu.Unlock()
			e.enqueue(affected)
		}
		reg, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { apply(obj, false) },
			UpdateFunc: func(_, obj any) { apply(obj, false) },
			DeleteFunc: func(obj any) { apply(obj, true) },
		})
		if err != nil {
			return nil, fmt.Errorf("policy informer handler: %w", err)
		}
		synced = append(synced, reg.HasSynced)
	}
	return synced, nil
}
