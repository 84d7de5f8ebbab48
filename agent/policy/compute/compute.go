package compute

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// allAddresses is what a rule with no from/to allows: every IPv4 and every IPv6 address.
func allAddresses() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
}

type direction int

const (
	ingress direction = iota
	egress
)

func (d direction) String() string {
	if d == ingress {
		return "ingress"
	}
	return "egress"
}

// Compute resolves every policy that selects in.Pod and returns the pod's desired entries per direction.
// It fails, naming the policy and rule, on the first malformed field; the caller should then keep the last good
// Result rather than open or close the pod.
func Compute(in Input) (Result, error) {
	c := compiler{in: in, peers: candidates(in)}
	var res Result
	for _, d := range []direction{ingress, egress} {
		dir, err := c.direction(d)
		if err != nil {
			return Result{}, err
		}
		if d == ingress {
			res.Ingress = dir
		} else {
			res.Egress = dir
		}
	}
	return res, nil
}

// candidates is every pod that can be a peer: in.Peers with an IP, plus the local pod unless listed.
func candidates(in Input) []*Pod {
	var out []*Pod
	self := false
	for i := range in.Peers {
		p := &in.Peers[i]
		if p.Namespace == in.Pod.Namespace && p.Name == in.Pod.Name {
			self = true
		}
		if p.IP.IsValid() {
			out = append(out, p)
		}
	}
	if !self && in.Pod.IP.IsValid() {
		out = append(out, &in.Pod)
	}
	return out
}

type compiler struct {
	in    Input
	peers []*Pod
}

func (c *compiler) direction(d direction) (Direction, error) {
	var dir Direction
	for _, pol := range c.in.Policies {
		if pol == nil || pol.Namespace != c.in.Pod.Namespace {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&pol.Spec.PodSelector)
		if err != nil {
			return Direction{}, fmt.Errorf("policy %s/%s: podSelector: %w: %w", pol.Namespace, pol.Name, ErrInvalidPolicy, err)
		}
		if !sel.Matches(labels.Set(c.in.Pod.Labels)) || !hasType(pol, d) {
			continue
		}
		dir.Isolated = true
		n := len(pol.Spec.Ingress)
		if d == egress {
			n = len(pol.Spec.Egress)
		}
		for i := range n {
			var peers []networkingv1.NetworkPolicyPeer
			var ports []networkingv1.NetworkPolicyPort
			if d == ingress {
				peers, ports = pol.Spec.Ingress[i].From, pol.Spec.Ingress[i].Ports
			} else {
				peers, ports = pol.Spec.Egress[i].To, pol.Spec.Egress[i].Ports
			}
			if dir.Entries, err = c.rule(dir.Entries, d, pol.Namespace, peers, ports); err != nil {
				return Direction{}, fmt.Errorf("policy %s/%s: %s rule %d: %w", pol.Namespace, pol.Name, d, i, err)
			}
		}
	}
	dir.Entries = Normalize(dir.Entries)
	return dir, nil
}

// hasType applies the API's defaulting of policyTypes: when empty, every policy affects ingress, and a policy with
// egress rules affects egress too.
func hasType(pol *networkingv1.NetworkPolicy, d direction) bool {
	want := networkingv1.PolicyTypeIngress
	if d == egress {
		want = networkingv1.PolicyTypeEgress
	}
	if len(pol.Spec.PolicyTypes) == 0 {
		return d == ingress || len(pol.Spec.Egress) > 0
	}
	return slices.Contains(pol.Spec.PolicyTypes, want)
}

// target is one resolved peer: its addresses and, for a selected pod, the pod.
type target struct {
	prefixes []netip.Prefix
	pod      *Pod
}

// portSpec is one resolved NetworkPolicyPort; name is set for a named port.
type portSpec struct {
	proto      Protocol
	start, end uint16
	name       string
}

func (c *compiler) rule(out []Entry, d direction, ns string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) ([]Entry, error) {
	targets, err := c.targets(ns, peers)
	if err != nil {
		return nil, err
	}
	specs, err := portSpecs(ports)
	if err != nil {
		return nil, err
	}
	for _, t := range targets {
		for _, s := range specs {
			if s.name == "" {
				for _, p := range t.prefixes {
					out = append(out, Entry{CIDR: p, Protocol: s.proto, PortStart: s.start, PortEnd: s.end})
				}
				continue
			}
			// A named port is resolved on the destination pod.
			switch {
			case d == ingress:
				for _, port := range namedPorts(&c.in.Pod, s) {
					for _, p := range t.prefixes {
						out = append(out, Entry{CIDR: p, Protocol: s.proto, PortStart: port, PortEnd: port})
					}
				}
			case t.pod != nil:
				for _, port := range namedPorts(t.pod, s) {
					out = append(out, Entry{CIDR: hostPrefix(t.pod.IP), Protocol: s.proto, PortStart: port, PortEnd: port})
				}
			default:
				// Egress to an ipBlock (or to everything) by name: only known pods inside the block resolve it.
				for _, pod := range c.peers {
					if !containsAny(t.prefixes, pod.IP) {
						continue
					}
					for _, port := range namedPorts(pod, s) {
						out = append(out, Entry{CIDR: hostPrefix(pod.IP), Protocol: s.proto, PortStart: port, PortEnd: port})
					}
				}
			}
		}
	}
	return out, nil
}

func (c *compiler) targets(ns string, peers []networkingv1.NetworkPolicyPeer) ([]target, error) {
	if len(peers) == 0 {
		return []target{{prefixes: allAddresses()}}, nil
	}
	var out []target
	for i, peer := range peers {
		if peer.IPBlock != nil {
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				return nil, fmt.Errorf("peer %d: ipBlock with a selector: %w", i, ErrInvalidPolicy)
			}
			pfx, err := ipBlock(peer.IPBlock)
			if err != nil {
				return nil, fmt.Errorf("peer %d: %w", i, err)
			}
			out = append(out, target{prefixes: pfx})
			continue
		}
		if peer.PodSelector == nil && peer.NamespaceSelector == nil {
			return nil, fmt.Errorf("peer %d: no selector and no ipBlock: %w", i, ErrInvalidPolicy)
		}
		podSel, nsSel := labels.Everything(), labels.Selector(nil)
		var err error
		if peer.PodSelector != nil {
			if podSel, err = metav1.LabelSelectorAsSelector(peer.PodSelector); err != nil {
				return nil, fmt.Errorf("peer %d: podSelector: %w: %w", i, ErrInvalidPolicy, err)
			}
		}
		if peer.NamespaceSelector != nil {
			if nsSel, err = metav1.LabelSelectorAsSelector(peer.NamespaceSelector); err != nil {
				return nil, fmt.Errorf("peer %d: namespaceSelector: %w: %w", i, ErrInvalidPolicy, err)
			}
		}
		for _, pod := range c.peers {
			if nsSel == nil && pod.Namespace != ns {
				continue // podSelector alone: the policy's own namespace
			}
			if nsSel != nil && !nsSel.Matches(labels.Set(c.in.Namespaces[pod.Namespace])) {
				continue
			}
			if podSel.Matches(labels.Set(pod.Labels)) {
				out = append(out, target{prefixes: []netip.Prefix{hostPrefix(pod.IP)}, pod: pod})
			}
		}
	}
	return out, nil
}

func ipBlock(b *networkingv1.IPBlock) ([]netip.Prefix, error) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return nil, fmt.Errorf("ipBlock cidr %q: %w: %w", b.CIDR, ErrInvalidPolicy, err)
	}
	excepts := make([]netip.Prefix, 0, len(b.Except))
	for _, s := range b.Except {
		e, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("ipBlock except %q: %w: %w", s, ErrInvalidPolicy, err)
		}
		excepts = append(excepts, e)
	}
	return Subtract(cidr, excepts), nil
}

func portSpecs(ports []networkingv1.NetworkPolicyPort) ([]portSpec, error) {
	if len(ports) == 0 {
		return []portSpec{{proto: ProtocolAny}}, nil
	}
	out := make([]portSpec, 0, len(ports))
	for i, p := range ports {
		var s portSpec
		var err error
		proto := ""
		if p.Protocol != nil {
			proto = string(*p.Protocol)
		}
		if s.proto, err = ParseProtocol(proto); err != nil {
			return nil, fmt.Errorf("port %d: %w", i, err)
		}
		switch {
		case p.Port == nil:
			// every port of the protocol; endPort without port is invalid and ignored
		case p.Port.Type == intstr.String:
			if p.Port.StrVal == "" {
				return nil, fmt.Errorf("port %d: empty port name: %w", i, ErrInvalidPolicy)
			}
			s.name = p.Port.StrVal // endPort is invalid with a named port and ignored
		default:
			if p.Port.IntVal < 1 || p.Port.IntVal > 65535 {
				return nil, fmt.Errorf("port %d: port %d out of range: %w", i, p.Port.IntVal, ErrInvalidPolicy)
			}
			s.start, s.end = uint16(p.Port.IntVal), uint16(p.Port.IntVal)
			if p.EndPort != nil {
				if *p.EndPort < p.Port.IntVal || *p.EndPort > 65535 {
					return nil, fmt.Errorf("port %d: endPort %d not in %d..65535: %w", i, *p.EndPort, p.Port.IntVal, ErrInvalidPolicy)
				}
				s.end = uint16(*p.EndPort)
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// namedPorts returns the numbers of pod's ports with s's name and protocol.
func namedPorts(pod *Pod, s portSpec) []uint16 {
	var out []uint16
	for _, cp := range pod.Ports {
		if cp.Name == s.name && cp.Protocol == s.proto && cp.Port != 0 {
			out = append(out, cp.Port)
		}
	}
	return out
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

func containsAny(ps []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

// Normalize sorts entries, drops duplicates and entries another one for the same CIDR covers, and merges
// overlapping or adjacent port ranges of the same CIDR and protocol. It returns a new slice; the input is not changed.
// Entries of different CIDRs are never merged, even where one prefix contains another.
func Normalize(entries []Entry) []Entry {
	if len(entries) == 0 {
		return nil
	}
	es := slices.Clone(entries)
	for i := range es {
		es[i].CIDR = es[i].CIDR.Masked()
	}
	slices.SortFunc(es, compareEntries)
	var out []Entry
	for start := 0; start < len(es); {
		end := start + 1
		for end < len(es) && es[end].CIDR == es[start].CIDR {
			end++
		}
		out = appendCIDR(out, es[start:end])
		start = end
	}
	return out
}

// appendCIDR appends the normalised entries of one CIDR (sorted by protocol, then ports).
func appendCIDR(out []Entry, es []Entry) []Entry {
	// Sorting puts ProtocolAny first, and 0/0 first within a protocol.
	if es[0].Protocol == ProtocolAny && es[0].AllPorts() {
		return append(out, es[0])
	}
	for i := 0; i < len(es); {
		j := i + 1
		for j < len(es) && es[j].Protocol == es[i].Protocol {
			j++
		}
		group := es[i:j]
		if group[0].AllPorts() {
			out = append(out, group[0])
		} else {
			cur := group[0]
			for _, e := range group[1:] {
				if int(e.PortStart) <= int(cur.PortEnd)+1 {
					cur.PortEnd = max(cur.PortEnd, e.PortEnd)
					continue
				}
				out = append(out, cur)
				cur = e
			}
			out = append(out, cur)
		}
		i = j
	}
	return out
}

func compareEntries(a, b Entry) int {
	if c := a.CIDR.Addr().Compare(b.CIDR.Addr()); c != 0 {
		return c
	}
	return cmp.Or(
		cmp.Compare(a.CIDR.Bits(), b.CIDR.Bits()),
		cmp.Compare(a.Protocol, b.Protocol),
		cmp.Compare(a.PortStart, b.PortStart),
		cmp.Compare(a.PortEnd, b.PortEnd),
	)
}
