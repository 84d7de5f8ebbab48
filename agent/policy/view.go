package policy

import (
	"maps"
	"net/netip"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/autonode/autonode/agent/policy/compute"
)

// podKey names a pod.
type podKey struct{ Namespace, Name string }

func (k podKey) String() string { return k.Namespace + "/" + k.Name }

// podInfo is what the engine keeps of a pod: the informer's transform has already dropped everything else, and
// Labels is shared with the cached object, not copied.
type podInfo struct {
	Namespace, Name string
	UID             types.UID
	Labels          map[string]string
	NodeName        string
	IP              netip.Addr
	Ports           []compute.ContainerPort
	// Peerless pods never appear as peers: host-network pods (their IP is the node's) and pods that have
	// finished (their IP may already be someone else's).
	Peerless bool
}

func (p *podInfo) key() podKey { return podKey{p.Namespace, p.Name} }

// peerEqual reports whether a and b look the same to other pods' policies.
func peerEqual(a, b *podInfo) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.IP == b.IP && a.Peerless == b.Peerless && maps.Equal(a.Labels, b.Labels) && slices.Equal(a.Ports, b.Ports)
}

// policyInfo is a NetworkPolicy with its selectors parsed once.
type policyInfo struct {
	pol *networkingv1.NetworkPolicy
	// podSel is nil when the podSelector does not parse: the policy may then select any pod of its namespace.
	podSel labels.Selector
	// peers are the selector peers of every rule, both directions; a peer that does not parse is left out,
	// since Compute fails (and the pod is denied) anyway.
	peers []peerSel
	// nsPeers is whether some peer has a namespaceSelector, so namespace labels matter.
	nsPeers bool
	// byAddress is whether some egress rule names a port and allows an ipBlock or everything: Compute then
	// resolves the name on every known pod inside the block, so any pod's change may matter.
	byAddress bool
}

type peerSel struct {
	pod labels.Selector
	ns  labels.Selector // nil: the policy's own namespace
}

func newPolicyInfo(pol *networkingv1.NetworkPolicy) *policyInfo {
	pi := &policyInfo{pol: pol}
	if sel, err := metav1.LabelSelectorAsSelector(&pol.Spec.PodSelector); err == nil {
		pi.podSel = sel
	}
	addPeers := func(peers []networkingv1.NetworkPolicyPeer) {
		for _, p := range peers {
			if p.IPBlock != nil || (p.PodSelector == nil && p.NamespaceSelector == nil) {
				continue
			}
			ps := peerSel{pod: labels.Everything()}
			if p.PodSelector != nil {
				s, err := metav1.LabelSelectorAsSelector(p.PodSelector)
				if err != nil {
					continue
				}
				ps.pod = s
			}
			if p.NamespaceSelector != nil {
				s, err := metav1.LabelSelectorAsSelector(p.NamespaceSelector)
				if err != nil {
					continue
				}
				ps.ns = s
				pi.nsPeers = true
			}
			pi.peers = append(pi.peers, ps)
		}
	}
	for _, r := range pol.Spec.Ingress {
		addPeers(r.From)
	}
	for _, r := range pol.Spec.Egress {
		addPeers(r.To)
		named := slices.ContainsFunc(r.Ports, func(p networkingv1.NetworkPolicyPort) bool {
			return p.Port != nil && p.Port.Type == intstr.String
		})
		byAddr := len(r.To) == 0 || slices.ContainsFunc(r.To, func(p networkingv1.NetworkPolicyPeer) bool { return p.IPBlock != nil })
		if named && byAddr {
			pi.byAddress = true
		}
	}
	return pi
}

// selects reports whether the policy may select a pod with these labels; an unparsable selector may select any.
func (pi *policyInfo) selects(podLabels map[string]string) bool {
	return pi.podSel == nil || pi.podSel.Matches(labels.Set(podLabels))
}

// hasType applies the API's defaulting of policyTypes, as compute does: with none listed, every policy is
// Ingress and a policy with egress rules is Egress too.
func (pi *policyInfo) hasType(t networkingv1.PolicyType) bool {
	if len(pi.pol.Spec.PolicyTypes) == 0 {
		return t == networkingv1.PolicyTypeIngress || len(pi.pol.Spec.Egress) > 0
	}
	return slices.Contains(pi.pol.Spec.PolicyTypes, t)
}

// matchesPeer reports whether pod (whose namespace has nsLabels) is selected by some peer of the policy.
func (pi *policyInfo) matchesPeer(pod *podInfo, nsLabels map[string]string) bool {
	for _, ps := range pi.peers {
		if ps.ns == nil && pod.Namespace != pi.pol.Namespace {
			continue
		}
		if ps.ns != nil && !ps.ns.Matches(labels.Set(nsLabels)) {
			continue
		}
		if ps.pod.Matches(labels.Set(pod.Labels)) {
			return true
		}
	}
	return false
}

// local is a pod attached on this node: what CNI ADD said about it, and what was last programmed.
type local struct {
	HostIf    string
	Namespace string
	Name      string
	UID       types.UID
	IP        netip.Addr
	// fetched is the pod read from the apiserver at ADD when the informer had not seen it yet; the cache wins
	// once it has the pod.
	fetched *podInfo
	// egress is the last computed egress (before the Service and DNS expansion), to find the pods a Service's
	// endpoints matter to.
	egress compute.Direction
	// ingressPolicies and egressPolicies name the policies that isolate the pod, for flow attribution.
	ingressPolicies, egressPolicies []string
	// programmed is whether the datapath holds rules computed from synced caches.
	programmed bool
}

func (l *local) key() podKey { return podKey{l.Namespace, l.Name} }

// view is the engine's picture of the cluster, fed by the informers, and of the pods attached on this node.
// Its methods compute which local pods a change affects. It is not safe for concurrent use: the engine
// guards it.
type view struct {
	policies   map[string]map[string]*policyInfo // namespace -> name -> policy
	namespaces map[string]map[string]string      // namespace -> labels
	pods       map[podKey]*podInfo
	services   map[podKey]*serviceInfo
	slices     map[podKey]*sliceInfo // by slice name
	// endpoints indexes the slices by endpoint address.
	endpoints map[netip.Addr]map[podKey]*sliceInfo

	locals map[string]*local // by host interface
	byPod  map[podKey]map[string]*local

	// peers is the snapshot of every peer pod that Compute reads; nil after a change, rebuilt when needed.
	// Like namespaces, it is replaced, never changed in place, so Compute may read it outside the lock.
	peers []compute.Pod
	// track turns on the computation of affected pods. It is off while the informers fill the caches, when
	// every local pod is recomputed anyway once they have synced.
	track bool
}

func newView() *view {
	return &view{
		policies:   map[string]map[string]*policyInfo{},
		namespaces: map[string]map[string]string{},
		pods:       map[podKey]*podInfo{},
		services:   map[podKey]*serviceInfo{},
		slices:     map[podKey]*sliceInfo{},
		endpoints:  map[netip.Addr]map[podKey]*sliceInfo{},
		locals:     map[string]*local{},
		byPod:      map[podKey]map[string]*local{},
	}
}

// resetCluster forgets everything the informers told, keeping the local pods: a new run's informers list the
// cluster afresh, and what was deleted meanwhile must not linger.
func (v *view) resetCluster() {
	fresh := newView()
	fresh.locals, fresh.byPod = v.locals, v.byPod
	*v = *fresh
}

// set is a set of host interfaces whose pods need their rules recomputed.
type set map[string]struct{}

func (s set) add(ifs ...string) {
	for _, i := range ifs {
		s[i] = struct{}{}
	}
}

// sorted returns the members in order, for tests and logs.
func (s set) sorted() []string { return slices.Sorted(maps.Keys(s)) }

// localsIn returns the local pods of namespace ns.
func (v *view) localsIn(ns string, fn func(*local)) {
	for _, l := range v.locals {
		if l.Namespace == ns {
			fn(l)
		}
	}
}

// podOf returns what is known about a local pod: the cache's copy, else the one fetched at ADD.
func (v *view) podOf(l *local) *podInfo {
	if p := v.pods[l.key()]; p != nil && (l.UID == "" || p.UID == l.UID) {
		return p
	}
	return l.fetched
}

// selectedBy adds to out the local pods that pi may select.
func (v *view) selectedBy(pi *policyInfo, out set) {
	if !v.track {
		return
	}
	v.localsIn(pi.pol.Namespace, func(l *local) {
		p := v.podOf(l)
		if p == nil || pi.selects(p.Labels) {
			out.add(l.HostIf)
		}
	})
}

// setPolicy stores (or, with pol nil, deletes) a policy and returns the local pods it affects: those that the
// old or the new version selects.
func (v *view) setPolicy(ns, name string, pol *networkingv1.NetworkPolicy) set {
	out := set{}
	if old := v.policies[ns][name]; old != nil {
		v.selectedBy(old, out)
	}
	if pol == nil {
		delete(v.policies[ns], name)
		if len(v.policies[ns]) == 0 {
			delete(v.policies, ns)
		}
		return out
	}
	pi := newPolicyInfo(pol)
	if v.policies[ns] == nil {
		v.policies[ns] = map[string]*policyInfo{}
	}
	v.policies[ns][name] = pi
	v.selectedBy(pi, out)
	return out
}

// setNamespace stores (or, with nsLabels nil, deletes) a namespace's labels and returns the local pods
// selected by policies whose namespaceSelectors match the old or the new labels.
func (v *view) setNamespace(name string, nsLabels map[string]string, deleted bool) set {
	old, had := v.namespaces[name]
	out := set{}
	if had == !deleted && maps.Equal(old, nsLabels) {
		return out
	}
	// Copy on write: Compute reads the map outside the engine's lock.
	ns := maps.Clone(v.namespaces)
	if deleted {
		delete(ns, name)
	} else {
		ns[name] = nsLabels
	}
	v.namespaces = ns
	v.peers = nil
	if !v.track {
		return out
	}
	for _, byName := range v.policies {
		for _, pi := range byName {
			if !pi.nsPeers {
				continue
			}
			for _, ps := range pi.peers {
				if ps.ns != nil && (ps.ns.Matches(labels.Set(old)) || ps.ns.Matches(labels.Set(nsLabels))) {
					v.selectedBy(pi, out)
					break
				}
			}
		}
	}
	return out
}

// setPod stores (or, with pod nil, deletes) a pod and returns the local pods whose rules may change: the pod
// itself when local, and the pods selected by policies for which the old or the new pod is a peer.
func (v *view) setPod(key podKey, pod *podInfo) set {
	old := v.pods[key]
	if pod == nil {
		delete(v.pods, key)
	} else {
		v.pods[key] = pod
	}
	out := set{}
	for _, l := range v.byPod[key] {
		if !v.track {
			break
		}
		if old == nil || pod == nil || !maps.Equal(old.Labels, pod.Labels) || !slices.Equal(old.Ports, pod.Ports) || old.UID != pod.UID {
			out.add(l.HostIf)
		}
	}
	if peerEqual(v.asPeer(old), v.asPeer(pod)) {
		return out
	}
	v.peers = nil
	v.peerChanged(v.asPeer(old), v.asPeer(pod), out)
	return out
}

// peerChanged adds to out the local pods whose rules may change when a peer goes from old to new (either nil).
func (v *view) peerChanged(old, pod *podInfo, out set) {
	if !v.track {
		return
	}
	for _, byName := range v.policies {
		for _, pi := range byName {
			if pi.byAddress || (old != nil && pi.matchesPeer(old, v.namespaces[old.Namespace])) ||
				(pod != nil && pi.matchesPeer(pod, v.namespaces[pod.Namespace])) {
				v.selectedBy(pi, out)
			}
		}
	}
}

// asPeer returns p as other pods' policies see it, nil when it is no peer: local pods get the address their
// CNI ADD gave them, which the pod's status shows only later.
func (v *view) asPeer(p *podInfo) *podInfo {
	if p == nil || p.Peerless {
		return nil
	}
	if !p.IP.IsValid() {
		for _, l := range v.byPod[p.key()] {
			if l.UID == "" || l.UID == p.UID {
				q := *p
				q.IP = l.IP
				return &q
			}
		}
		return nil
	}
	return p
}

// attach records a local pod and returns the other local pods whose rules its address may change.
func (v *view) attach(l *local) set {
	oldPeer := v.asPeer(v.pods[l.key()])
	if prev := v.locals[l.HostIf]; prev != nil {
		v.unlink(prev)
	}
	v.locals[l.HostIf] = l
	if v.byPod[l.key()] == nil {
		v.byPod[l.key()] = map[string]*local{}
	}
	v.byPod[l.key()][l.HostIf] = l
	out := set{}
	newPeer := v.asPeer(v.podOf(l))
	if !peerEqual(oldPeer, newPeer) {
		v.peers = nil
		v.peerChanged(oldPeer, newPeer, out)
	}
	delete(out, l.HostIf)
	return out
}

// detach forgets a local pod and returns the other local pods whose rules mentioned it.
func (v *view) detach(hostIf string) (*local, set) {
	out := set{}
	l := v.locals[hostIf]
	if l == nil {
		return nil, out
	}
	oldPeer := v.asPeer(v.podOf(l))
	v.unlink(l)
	if newPeer := v.asPeer(v.pods[l.key()]); !peerEqual(oldPeer, newPeer) {
		v.peers = nil
		v.peerChanged(oldPeer, newPeer, out)
	}
	return l, out
}

func (v *view) unlink(l *local) {
	delete(v.locals, l.HostIf)
	delete(v.byPod[l.key()], l.HostIf)
	if len(v.byPod[l.key()]) == 0 {
		delete(v.byPod, l.key())
	}
}

// peerSnapshot returns every peer pod, rebuilt only after a change.
func (v *view) peerSnapshot() []compute.Pod {
	if v.peers != nil {
		return v.peers
	}
	peers := make([]compute.Pod, 0, len(v.pods)+1)
	for _, p := range v.pods {
		if q := v.asPeer(p); q != nil {
			peers = append(peers, compute.Pod{Namespace: q.Namespace, Name: q.Name, Labels: q.Labels, IP: q.IP, Ports: q.Ports})
		}
	}
	// Local pods the informer has not delivered yet, known from the apiserver read at ADD.
	for _, l := range v.locals {
		if v.pods[l.key()] == nil && l.fetched != nil {
			if q := v.asPeer(l.fetched); q != nil {
				peers = append(peers, compute.Pod{Namespace: q.Namespace, Name: q.Name, Labels: q.Labels, IP: q.IP, Ports: q.Ports})
			}
		}
	}
	v.peers = peers
	return peers
}

// policiesIn returns the policies of namespace ns.
func (v *view) policiesIn(ns string) []*policyInfo {
	return slices.Collect(maps.Values(v.policies[ns]))
}

// all returns every local pod.
func (v *view) all() set {
	out := set{}
	for i := range v.locals {
		out.add(i)
	}
	return out
}
