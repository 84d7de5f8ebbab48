// Package policytest holds what the policy tests share: a reference evaluator of NetworkPolicy written straight
// from the networking.k8s.io/v1 documentation, and a generator of random but valid clusters and flows. compute's
// differential test checks compiled entries against the evaluator; datapath's checks the BPF programs against it.
//
// The evaluator answers "is this one flow allowed?" by walking the policies, and deliberately shares no code with
// the compiler (it does not even use apimachinery's selector parsing), so that the tests compare two independent
// readings. It imports compute only for its input and output types.
package policytest

import (
	"fmt"
	"net/netip"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/autonode/autonode/agent/policy/compute"
)

// Flow is one connection attempt, seen from the local pod.
type Flow struct {
	Egress bool             // false: peer -> local pod; true: local pod -> peer
	Peer   netip.Addr       // the other end
	Proto  compute.Protocol // IP protocol number (1 for ICMP)
	Port   uint16           // destination port (the local pod's for ingress, the peer's for egress)
}

// Allowed reports whether the policies in in allow f.
func Allowed(in compute.Input, f Flow) bool {
	pods := slices.Clone(in.Peers)
	if !slices.ContainsFunc(pods, func(p compute.Pod) bool { return p.Namespace == in.Pod.Namespace && p.Name == in.Pod.Name }) {
		pods = append(pods, in.Pod)
	}
	var atPeer []compute.Pod // the pods that own the peer address
	for _, p := range pods {
		if p.IP.IsValid() && p.IP == f.Peer {
			atPeer = append(atPeer, p)
		}
	}

	isolated := false
	for _, pol := range in.Policies {
		// "podSelector selects the pods to which this NetworkPolicy object applies", in the policy's namespace.
		if pol.Namespace != in.Pod.Namespace || !selectorMatches(&pol.Spec.PodSelector, in.Pod.Labels) {
			continue
		}
		if !policyAffects(pol, f.Egress) {
			continue
		}
		isolated = true
		if f.Egress {
			for _, r := range pol.Spec.Egress {
				if peersMatch(in, pol.Namespace, r.To, f.Peer, atPeer) && portsMatch(r.Ports, f, in.Pod, atPeer) {
					return true
				}
			}
		} else {
			for _, r := range pol.Spec.Ingress {
				if peersMatch(in, pol.Namespace, r.From, f.Peer, atPeer) && portsMatch(r.Ports, f, in.Pod, atPeer) {
					return true
				}
			}
		}
	}
	// "By default, pods are non-isolated; they accept traffic from any source."
	return !isolated
}

// policyAffects: "If this field is not specified, it will default based on the existence of ingress or egress
// rules; policies that contain an egress section are assumed to affect egress, and all policies (whether or not they
// contain an ingress section) are assumed to affect ingress."
func policyAffects(pol *networkingv1.NetworkPolicy, egress bool) bool {
	if len(pol.Spec.PolicyTypes) == 0 {
		if egress {
			return len(pol.Spec.Egress) > 0
		}
		return true
	}
	for _, t := range pol.Spec.PolicyTypes {
		if (egress && t == networkingv1.PolicyTypeEgress) || (!egress && t == networkingv1.PolicyTypeIngress) {
			return true
		}
	}
	return false
}

// peersMatch: "If this field is empty or missing, this rule matches all sources (traffic not restricted by
// source). If this field is present and contains at least one item, this rule allows traffic only if the traffic
// matches at least one item in the from list."
func peersMatch(in compute.Input, policyNS string, peers []networkingv1.NetworkPolicyPeer, addr netip.Addr, atPeer []compute.Pod) bool {
	if len(peers) == 0 {
		return true
	}
	for _, peer := range peers {
		if peer.IPBlock != nil {
			cidr := netip.MustParsePrefix(peer.IPBlock.CIDR)
			if !cidr.Masked().Contains(addr) {
				continue
			}
			excluded := false
			for _, e := range peer.IPBlock.Except {
				if netip.MustParsePrefix(e).Masked().Contains(addr) {
					excluded = true
				}
			}
			if !excluded {
				return true
			}
			continue
		}
		for _, p := range atPeer {
			// namespaceSelector absent: "the policy's own namespace"; present: namespaces whose labels match.
			nsOK := p.Namespace == policyNS
			if peer.NamespaceSelector != nil {
				nsOK = selectorMatches(peer.NamespaceSelector, in.Namespaces[p.Namespace])
			}
			// podSelector absent: all pods in the selected namespaces.
			podOK := peer.PodSelector == nil || selectorMatches(peer.PodSelector, p.Labels)
			if nsOK && podOK {
				return true
			}
		}
	}
	return false
}

// portsMatch: "If this field is empty or missing, this rule matches all ports... If this field is present and
// contains at least one item, then this rule allows traffic only if the traffic matches at least one port in the
// list." A named port is looked up on the destination pod.
func portsMatch(ports []networkingv1.NetworkPolicyPort, f Flow, local compute.Pod, atPeer []compute.Pod) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		proto := "TCP" // "If not specified, this field defaults to TCP."
		if p.Protocol != nil {
			proto = string(*p.Protocol)
		}
		if protoNumber(proto) != f.Proto {
			continue
		}
		if p.Port == nil { // "If this field is not provided, this matches all port names and numbers."
			return true
		}
		if p.Port.StrVal != "" {
			dest := []compute.Pod{local}
			if f.Egress {
				dest = atPeer
			}
			for _, d := range dest {
				for _, cp := range d.Ports {
					if cp.Name == p.Port.StrVal && cp.Protocol == f.Proto && cp.Port == f.Port {
						return true
					}
				}
			}
			continue
		}
		lo, hi := int(p.Port.IntVal), int(p.Port.IntVal)
		if p.EndPort != nil { // "the policy should allow communication on all ports between port and endPort, inclusive"
			hi = int(*p.EndPort)
		}
		if int(f.Port) >= lo && int(f.Port) <= hi {
			return true
		}
	}
	return false
}

func protoNumber(name string) compute.Protocol {
	switch name {
	case "TCP":
		return 6
	case "UDP":
		return 17
	case "SCTP":
		return 132
	}
	return 255 // never a flow's protocol
}

// selectorMatches implements metav1.LabelSelector: "The requirements are ANDed. An empty label selector matches
// all objects."
func selectorMatches(s *metav1.LabelSelector, l map[string]string) bool {
	for k, v := range s.MatchLabels {
		if got, ok := l[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		v, ok := l[r.Key]
		switch r.Operator {
		case metav1.LabelSelectorOpIn:
			if !ok || !slices.Contains(r.Values, v) {
				return false
			}
		case metav1.LabelSelectorOpNotIn:
			if ok && slices.Contains(r.Values, v) {
				return false
			}
		case metav1.LabelSelectorOpExists:
			if !ok {
				return false
			}
		case metav1.LabelSelectorOpDoesNotExist:
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// Lookup answers f from compiled entries, the way a datapath would: an unisolated direction allows everything,
// otherwise some entry must contain the peer address, protocol and destination port. All entries are allows (excepts
// are carved out at compile time), so any match is the verdict and no longest-prefix ordering is needed.
func Lookup(res compute.Result, f Flow) bool {
	dir := res.Ingress
	if f.Egress {
		dir = res.Egress
	}
	if !dir.Isolated {
		return true
	}
	for _, e := range dir.Entries {
		if !e.CIDR.Contains(f.Peer) {
			continue
		}
		if e.Protocol != compute.ProtocolAny && e.Protocol != f.Proto {
			continue
		}
		if (e.PortStart == 0 && e.PortEnd == 0) || (f.Port >= e.PortStart && f.Port <= e.PortEnd) {
			return true
		}
	}
	return false
}

func (f Flow) String() string {
	dir := "ingress from"
	if f.Egress {
		dir = "egress to"
	}
	return fmt.Sprintf("%s %s %s/%d", dir, f.Peer, f.Proto, f.Port)
}
