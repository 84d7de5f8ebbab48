package provisioning

import (
	"context"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/cloud"
	"github.com/autonode/autonode/provisioner/controllers/claimutil"
	"github.com/autonode/autonode/provisioner/disruption"
	"github.com/autonode/autonode/provisioner/scheduling"
)

// Cluster is one round's view of the cluster, resolved into the
// scheduler's Input, plus the objects the round acts on.
type Cluster struct {
	Input scheduling.Input
	// NodePools by name, for the NodeClaims made from the result.
	NodePools map[string]*v1.NodePool
}

// classTypes caches, for one round, each NodeClass's launchable types.
type classTypes map[string][]*cloud.InstanceType

// BuildInput resolves the cluster around pods into the scheduler's Input:
// registered Nodes with their pods and free capacity, NodeClaims still in
// flight, NodePools with their instance types and remaining limits,
// DaemonSets, the volume topology of pods and namespace labels. The
// disruption controller calls it to simulate where pods would go.
func (p *Provisioner) BuildInput(ctx context.Context, pods []*corev1.Pod) (*Cluster, error) {
	in := scheduling.Input{Pods: pods}
	types := classTypes{}

	var claims v1.NodeClaimList
	if err := p.client.List(ctx, &claims); err != nil {
		return nil, fmt.Errorf("listing nodeclaims: %w", err)
	}
	daemonSets, err := daemonSetPods(ctx, p.client)
	if err != nil {
		return nil, err
	}
	in.DaemonSets = daemonSets

	pools, err := p.nodePools(ctx, claims.Items, types)
	if err != nil {
		return nil, err
	}
	in.NodePools = pools.scheduling
	if in.Nodes, err = p.existingNodes(ctx, claims.Items, types, daemonSets); err != nil {
		return nil, err
	}
	in.Pods = unbound(pods, in.Nodes)
	if in.VolumeRequirements, err = p.volumeRequirements(ctx, pods); err != nil {
		return nil, err
	}
	var namespaces corev1.NamespaceList
	if err := p.client.List(ctx, &namespaces); err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	in.NamespaceLabels = make(map[string]map[string]string, len(namespaces.Items))
	for _, ns := range namespaces.Items {
		in.NamespaceLabels[ns.Name] = ns.Labels
	}
	return &Cluster{Input: in, NodePools: pools.api}, nil
}

// unbound leaves out the pods listed unbound that a node now counts among
// its own. The pending pods were listed before the nodes' pods;
// kube-scheduler may bind one in between (typically the moment a new Node
// initializes), and a pod counted both on its node and as pending would be
// planned a second node. Pods the caller passes bound stay.
func unbound(pods []*corev1.Pod, nodes []scheduling.ExistingNode) []*corev1.Pod {
	bound := map[types.UID]bool{}
	for i := range nodes {
		for _, pod := range nodes[i].Pods {
			bound[pod.UID] = true
		}
	}
	if len(bound) == 0 {
		return pods
	}
	return slices.DeleteFunc(slices.Clone(pods), func(pod *corev1.Pod) bool { return pod.Spec.NodeName == "" && bound[pod.UID] })
}

// daemonSetPods returns every DaemonSet's pod template as a pod.
func daemonSetPods(ctx context.Context, r client.Reader) ([]*corev1.Pod, error) {
	var list appsv1.DaemonSetList
	if err := r.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("listing daemonsets: %w", err)
	}
	out := make([]*corev1.Pod, 0, len(list.Items))
	for i := range list.Items {
		ds := &list.Items[i]
		pod := &corev1.Pod{ObjectMeta: *ds.Spec.Template.ObjectMeta.DeepCopy(), Spec: *ds.Spec.Template.Spec.DeepCopy()}
		pod.Namespace, pod.Name = ds.Namespace, ds.Name
		out = append(out, pod)
	}
	return out, nil
}

type resolvedPools struct {
	api        map[string]*v1.NodePool
	scheduling []scheduling.NodePool
}

// nodePools resolves every NodePool that can launch: its NodeClass exists
// and resolves. A pool that cannot is logged and left out, so one broken
// pool does not stop the others.
func (p *Provisioner) nodePools(ctx context.Context, claims []v1.NodeClaim, types classTypes) (resolvedPools, error) {
	var list v1.NodePoolList
	if err := p.client.List(ctx, &list); err != nil {
		return resolvedPools{}, fmt.Errorf("listing nodepools: %w", err)
	}
	out := resolvedPools{api: map[string]*v1.NodePool{}}
	for i := range list.Items {
		pool := &list.Items[i]
		if pool.DeletionTimestamp != nil {
			continue
		}
		sp, err := p.schedulingPool(ctx, pool, claims, types)
		if err != nil {
			p.opts.Logger.WarnContext(ctx, "nodepool cannot launch", "nodepool", pool.Name, "err", err)
			continue
		}
		out.api[pool.Name] = pool
		out.scheduling = append(out.scheduling, sp)
	}
	return out, nil
}

// schedulingPool resolves one pool for the scheduler: requirements,
// labels, taints, weight, its NodeClass's instance types and the limits
// its claims leave.
func (p *Provisioner) schedulingPool(ctx context.Context, pool *v1.NodePool, claims []v1.NodeClaim, types classTypes) (scheduling.NodePool, error) {
	its, err := p.classTypes(ctx, types, pool.Spec.Template.Spec.NodeClassRef.Name)
	if err != nil {
		return scheduling.NodePool{}, err
	}
	sp := scheduling.NodePool{
		Name:          pool.Name,
		Requirements:  Requirements(pool.Spec.Template.Spec.Requirements),
		Labels:        pool.Spec.Template.ObjectMeta.Labels,
		Taints:        pool.Spec.Template.Spec.Taints,
		StartupTaints: startupTaints(pool.Spec.Template.Spec.StartupTaints),
		InstanceTypes: InstanceTypes(its),
	}
	if pool.Spec.Weight != nil {
		sp.Weight = *pool.Spec.Weight
	}
	if pool.Spec.Limits != nil {
		left := remaining(pool, claims, its)
		sp.Limits = &left
	}
	return sp, nil
}

// SchedulingPools resolves pools as the scheduler sees them (instance types
// with current offerings and prices, limits left), by name. Pools that
// cannot launch are left out and logged. The disruption controller uses it
// to plan replacements.
func (p *Provisioner) SchedulingPools(ctx context.Context, pools []*v1.NodePool) (map[string]scheduling.NodePool, error) {
	var claims v1.NodeClaimList
	if err := p.client.List(ctx, &claims); err != nil {
		return nil, fmt.Errorf("listing nodeclaims: %w", err)
	}
	types := classTypes{}
	out := make(map[string]scheduling.NodePool, len(pools))
	for _, pool := range pools {
		sp, err := p.schedulingPool(ctx, pool, claims.Items, types)
		if err != nil {
			p.opts.Logger.WarnContext(ctx, "nodepool cannot launch", "nodepool", pool.Name, "err", err)
			continue
		}
		out[pool.Name] = sp
	}
	return out, nil
}

// AMIs resolves every NodeClass's images now: NodeClass name ->
// architecture -> image id. A class that does not resolve is logged and
// left out. Drift detection compares them with the claims' status.imageID.
func (p *Provisioner) AMIs(ctx context.Context) (map[string]map[string]string, error) {
	var classes v1.NodeClassList
	if err := p.client.List(ctx, &classes); err != nil {
		return nil, fmt.Errorf("listing nodeclasses: %w", err)
	}
	out := make(map[string]map[string]string, len(classes.Items))
	for i := range classes.Items {
		nc := &classes.Items[i]
		rc, err := p.cloud.ResolveNodeClass(ctx, nc)
		if err != nil {
			p.opts.Logger.WarnContext(ctx, "nodeclass does not resolve", "nodeclass", nc.Name, "err", err)
			continue
		}
		byArch := make(map[string]string, len(rc.AMIs))
		for arch, ami := range rc.AMIs {
			byArch[arch] = ami.ID
		}
		out[nc.Name] = byArch
	}
	return out, nil
}

// startupTaints returns a pool's startup taints with the agent's readiness
// taint among them: the node agent removes it once every subsystem is
// ready, and that removal is what Initialized waits for.
func startupTaints(ts []corev1.Taint) []corev1.Taint {
	if slices.ContainsFunc(ts, func(t corev1.Taint) bool { return t.Key == v1.StartupTaintAgentNotReady }) {
		return ts
	}
	return append(slices.Clone(ts), corev1.Taint{Key: v1.StartupTaintAgentNotReady, Effect: corev1.TaintEffectNoSchedule})
}

// classTypes returns a NodeClass's launchable instance types, resolving the
// class once per round.
func (p *Provisioner) classTypes(ctx context.Context, cache classTypes, name string) ([]*cloud.InstanceType, error) {
	if its, ok := cache[name]; ok {
		return its, nil
	}
	var nc v1.NodeClass
	if err := p.client.Get(ctx, client.ObjectKey{Name: name}, &nc); err != nil {
		return nil, fmt.Errorf("nodeclass %s: %w", name, err)
	}
	rc, err := p.cloud.ResolveNodeClass(ctx, &nc)
	if err != nil {
		return nil, fmt.Errorf("resolving nodeclass %s: %w", name, err)
	}
	its, err := p.cloud.InstanceTypes(ctx, rc)
	if err != nil {
		return nil, fmt.Errorf("instance types of nodeclass %s: %w", name, err)
	}
	cache[name] = its
	return its, nil
}

// remaining is what a pool may still add: its limits minus the capacity of
// its NodeClaims (the launched type's, or for a claim not launched yet the
// largest of the types it allows, so limits hold whatever EC2 picks).
func remaining(pool *v1.NodePool, claims []v1.NodeClaim, its []*cloud.InstanceType) scheduling.Resources {
	left := scheduling.NoLimits()
	limits := modelled(pool.Spec.Limits)
	for res := range scheduling.NumResources {
		if _, ok := pool.Spec.Limits[res.ResourceName()]; ok {
			left[res] = limits[res]
		}
	}
	for i := range claims {
		c := &claims[i]
		if c.Labels[v1.LabelNodePool] != pool.Name {
			continue
		}
		used := modelled(c.Status.Capacity)
		if len(c.Status.Capacity) == 0 {
			for _, it := range allowedTypes(c, its) {
				used = maxResources(used, modelled(it.Capacity))
			}
		}
		for res := range scheduling.NumResources {
			if left[res] != scheduling.Unlimited {
				left[res] -= used[res]
			}
		}
	}
	return left
}

// allowedTypes returns the types a claim's instance-type requirement allows
// (all of them when it has none).
func allowedTypes(c *v1.NodeClaim, its []*cloud.InstanceType) []*cloud.InstanceType {
	for _, r := range c.Spec.Requirements {
		if r.Key == corev1.LabelInstanceTypeStable && r.Operator == corev1.NodeSelectorOpIn {
			var out []*cloud.InstanceType
			for _, it := range its {
				if slices.Contains(r.Values, it.Name) {
					out = append(out, it)
				}
			}
			return out
		}
	}
	return its
}

func maxResources(a, b scheduling.Resources) scheduling.Resources {
	for i := range a {
		a[i] = max(a[i], b[i])
	}
	return a
}

func minResources(a, b scheduling.Resources) scheduling.Resources {
	for i := range a {
		a[i] = min(a[i], b[i])
	}
	return a
}

// existingNodes lists the Nodes pods may still go on (not cordoned, not
// being deleted or drained) and the NodeClaims still in flight (no Node
// yet), with what their pods, or for in-flight claims their DaemonSets,
// already take.
func (p *Provisioner) existingNodes(ctx context.Context, claims []v1.NodeClaim, types classTypes, daemonSets []*corev1.Pod) ([]scheduling.ExistingNode, error) {
	var nodes corev1.NodeList
	if err := p.client.List(ctx, &nodes); err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	byProviderID := map[string]*v1.NodeClaim{}
	for i := range claims {
		if id := claims[i].Status.ProviderID; id != "" {
			byProviderID[id] = &claims[i]
		}
	}
	registered := map[string]bool{}
	var out []scheduling.ExistingNode
	for i := range nodes.Items {
		n := &nodes.Items[i]
		claim := byProviderID[n.Spec.ProviderID]
		if claim != nil {
			registered[claim.Name] = true
		}
		if n.DeletionTimestamp != nil || n.Spec.Unschedulable || hasTaint(n.Spec.Taints, disruption.TaintDisrupted) ||
			(claim != nil && claim.DeletionTimestamp != nil) {
			continue
		}
		pods, err := claimutil.PodsOn(ctx, p.client, n.Name)
		if err != nil {
			return nil, err
		}
		en := scheduling.ExistingNode{Name: n.Name, Labels: n.Labels, Taints: n.Spec.Taints, Allocatable: modelled(n.Status.Allocatable)}
		if claim != nil && !claimutil.Initialized(claim) {
			// Until the node initializes, plan with what it will offer
			// rather than what it reports so far, and without the taints
			// that go away by themselves.
			en.Allocatable = maxResources(en.Allocatable, modelled(claim.Status.Allocatable))
			en.Taints = slices.DeleteFunc(slices.Clone(n.Spec.Taints), func(t corev1.Taint) bool {
				return claimutil.IsEphemeralTaint(t) ||
					slices.ContainsFunc(claim.Spec.StartupTaints, func(s corev1.Taint) bool { return s.MatchTaint(&t) })
			})
		}
		for _, pod := range pods {
			if claimutil.IsTerminal(pod) {
				continue
			}
			en.Pods = append(en.Pods, pod)
			req, err := scheduling.PodRequests(pod)
			if err != nil {
				req = modelledPodRequests(pod)
			}
			en.Requested = en.Requested.Add(req)
		}
		out = append(out, en)
	}
	for i := range claims {
		c := &claims[i]
		if registered[c.Name] || c.DeletionTimestamp != nil {
			continue
		}
		en, err := p.inFlight(ctx, c, types, daemonSets)
		if err != nil {
			p.opts.Logger.WarnContext(ctx, "in-flight nodeclaim left out of planning", "nodeclaim", c.Name, "err", err)
			continue
		}
		out = append(out, en)
	}
	return out, nil
}

// inFlight models a NodeClaim without a Node: its labels (with one value
// per requirement that allows only one), its taints, the capacity of its
// launched type or the least of the types it allows, less the DaemonSets
// that will run on it.
func (p *Provisioner) inFlight(ctx context.Context, c *v1.NodeClaim, types classTypes, daemonSets []*corev1.Pod) (scheduling.ExistingNode, error) {
	labels := map[string]string{corev1.LabelHostname: c.Name}
	for _, r := range c.Spec.Requirements {
		if r.Operator == corev1.NodeSelectorOpIn && len(r.Values) == 1 {
			labels[r.Key] = r.Values[0]
		}
	}
	for k, v := range c.Labels {
		labels[k] = v
	}
	en := scheduling.ExistingNode{Name: c.Name, Labels: labels, Taints: c.Spec.Taints, InFlight: true}
	if len(c.Status.Allocatable) > 0 {
		en.Allocatable = modelled(c.Status.Allocatable)
	} else {
		its, err := p.classTypes(ctx, types, c.Spec.NodeClassRef.Name)
		if err != nil {
			return en, err
		}
		allowed := allowedTypes(c, its)
		if len(allowed) == 0 {
			return en, fmt.Errorf("no instance type of nodeclass %s is allowed", c.Spec.NodeClassRef.Name)
		}
		en.Allocatable = modelled(allowed[0].Allocatable)
		for _, it := range allowed[1:] {
			en.Allocatable = minResources(en.Allocatable, modelled(it.Allocatable))
		}
	}
	en.Requested = daemonOverhead(daemonSets, labels, c.Spec.Taints)
	return en, nil
}

// modelledPodRequests sums a pod's container requests in the modelled
// dimensions, for pods that also request something the scheduler does not
// model (they still take room on their node).
func modelledPodRequests(pod *corev1.Pod) scheduling.Resources {
	var r scheduling.Resources
	for _, c := range pod.Spec.Containers {
		r = r.Add(modelled(c.Resources.Requests))
	}
	r[scheduling.Pods]++
	return r
}

func hasTaint(ts []corev1.Taint, key string) bool {
	return slices.ContainsFunc(ts, func(t corev1.Taint) bool { return t.Key == key })
}

// daemonOverhead sums the requests of the DaemonSets that would run on a
// node with these labels and taints. A label the node does not know yet
// (an in-flight claim may not have its zone) counts as matching, so the
// estimate errs on the side of more overhead.
func daemonOverhead(daemonSets []*corev1.Pod, labels map[string]string, taints []corev1.Taint) scheduling.Resources {
	var total scheduling.Resources
	for _, d := range daemonSets {
		if !tolerates(d.Spec.Tolerations, taints) || !selects(d, labels) {
			continue
		}
		req, err := scheduling.PodRequests(d)
		if err != nil {
			req = modelledPodRequests(d)
		}
		total = total.Add(req)
	}
	return total
}

func tolerates(tols []corev1.Toleration, taints []corev1.Taint) bool {
	for i := range taints {
		t := &taints[i]
		if t.Effect == corev1.TaintEffectPreferNoSchedule {
			continue
		}
		if !slices.ContainsFunc(tols, func(tol corev1.Toleration) bool { return tol.ToleratesTaint(klog.Background(), t, false) }) {
			return false
		}
	}
	return true
}

func selects(d *corev1.Pod, labels map[string]string) bool {
	for k, v := range d.Spec.NodeSelector {
		if have, ok := labels[k]; ok && have != v {
			return false
		}
	}
	a := d.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return true
	}
	for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		if termMatches(term, labels) {
			return true
		}
	}
	return false
}

func termMatches(term corev1.NodeSelectorTerm, labels map[string]string) bool {
	for _, e := range term.MatchExpressions {
		v, ok := labels[e.Key]
		if !ok {
			continue // unknown yet: assume it matches
		}
		if !scheduling.LabelMatches(e.Operator, e.Values, v, true) {
			return false
		}
	}
	return true
}

// volumeRequirements resolves, per pod, the node requirements its volumes
// add: the node affinity of bound PersistentVolumes (their zones), and for
// claims still waiting for their first consumer, the allowedTopologies of
// their StorageClass.
func (p *Provisioner) volumeRequirements(ctx context.Context, pods []*corev1.Pod) (map[types.UID][]scheduling.Requirement, error) {
	out := map[types.UID][]scheduling.Requirement{}
	for _, pod := range pods {
		var reqs []scheduling.Requirement
		for _, vol := range pod.Spec.Volumes {
			claimName := ""
			switch {
			case vol.PersistentVolumeClaim != nil:
				claimName = vol.PersistentVolumeClaim.ClaimName
			case vol.Ephemeral != nil:
				claimName = pod.Name + "-" + vol.Name // the generic ephemeral volume's claim
			default:
				continue
			}
			r, err := p.claimRequirements(ctx, pod.Namespace, claimName)
			if err != nil {
				return nil, fmt.Errorf("pod %s/%s volume %s: %w", pod.Namespace, pod.Name, vol.Name, err)
			}
			reqs = append(reqs, r...)
		}
		if len(reqs) > 0 {
			out[pod.UID] = reqs
		}
	}
	return out, nil
}

func (p *Provisioner) claimRequirements(ctx context.Context, namespace, name string) ([]scheduling.Requirement, error) {
	var pvc corev1.PersistentVolumeClaim
	if err := p.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &pvc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil // not made yet; kube-scheduler waits for it too
		}
		return nil, fmt.Errorf("persistentvolumeclaim %s/%s: %w", namespace, name, err)
	}
	if pvc.Spec.VolumeName != "" {
		var pv corev1.PersistentVolume
		if err := p.client.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, &pv); err != nil {
			return nil, fmt.Errorf("persistentvolume %s: %w", pvc.Spec.VolumeName, err)
		}
		if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
			return nil, nil
		}
		return termsRequirements(pv.Spec.NodeAffinity.Required.NodeSelectorTerms), nil
	}
	className := ""
	if pvc.Spec.StorageClassName != nil {
		className = *pvc.Spec.StorageClassName
	}
	var sc *storagev1.StorageClass
	if className != "" {
		sc = &storagev1.StorageClass{}
		if err := p.client.Get(ctx, client.ObjectKey{Name: className}, sc); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, nil
			}
			return nil, fmt.Errorf("storageclass %s: %w", className, err)
		}
	}
	if sc == nil || sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
		return nil, nil
	}
	var terms []corev1.NodeSelectorTerm
	for _, t := range sc.AllowedTopologies {
		var term corev1.NodeSelectorTerm
		for _, e := range t.MatchLabelExpressions {
			term.MatchExpressions = append(term.MatchExpressions, corev1.NodeSelectorRequirement{Key: e.Key, Operator: corev1.NodeSelectorOpIn, Values: e.Values})
		}
		terms = append(terms, term)
	}
	return termsRequirements(terms), nil
}

// termsRequirements turns node selector terms (ORed) into requirements
// (ANDed): one term converts as it is; several that each name only In on
// one and the same key become one In over the union of their values.
// Anything else cannot be expressed as requirements and adds none.
func termsRequirements(terms []corev1.NodeSelectorTerm) []scheduling.Requirement {
	switch len(terms) {
	case 0:
		return nil
	case 1:
		var out []scheduling.Requirement
		for _, e := range terms[0].MatchExpressions {
			out = append(out, scheduling.Requirement{Key: e.Key, Operator: e.Operator, Values: e.Values})
		}
		return out
	}
	union := scheduling.Requirement{Operator: corev1.NodeSelectorOpIn}
	for _, t := range terms {
		if len(t.MatchExpressions) != 1 || t.MatchExpressions[0].Operator != corev1.NodeSelectorOpIn ||
			(union.Key != "" && union.Key != t.MatchExpressions[0].Key) {
			return nil
		}
		union.Key = t.MatchExpressions[0].Key
		for _, v := range t.MatchExpressions[0].Values {
			if !slices.Contains(union.Values, v) {
				union.Values = append(union.Values, v)
			}
		}
	}
	return []scheduling.Requirement{union}
}
