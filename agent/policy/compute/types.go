// Package compute turns Kubernetes NetworkPolicies into the desired policy-map entries of one local pod.
//
// It is the pure step of agent/policy, in the manner of cilium's pkg/policy: the policies that select the pod are
// resolved against the pods and namespaces the caller passes in, then distilled into a sorted, de-duplicated list of
// allow entries per direction. Nothing here touches the kernel, an informer or a clock; the same Input always gives
// the same Result. Entry is intentionally a plain Go struct, duplicated from (not shared with) the BPF map key, so
// that computing policy needs no BPF import; a small syncer owns the conversion and the diff into the maps.
//
// Semantics are those of networking.k8s.io/v1; docs/policy.md records the choices the API leaves open (named ports
// on ipBlock peers, except outside the CIDR, the local pod as its own peer).
package compute

import (
	"errors"
	"fmt"
	"net/netip"

	networkingv1 "k8s.io/api/networking/v1"
)

// ErrInvalidPolicy is the class of every error Compute returns: a policy the API server should have rejected
// (a malformed CIDR or selector, a port out of range). Test with errors.Is.
var ErrInvalidPolicy = errors.New("invalid network policy")

// Protocol is an IP protocol number, as the datapath sees it. ProtocolAny matches every protocol, ICMP included.
type Protocol uint8

// The protocols a NetworkPolicy can name, plus ProtocolAny for rules that list no ports.
const (
	ProtocolAny  Protocol = 0
	ProtocolTCP  Protocol = 6
	ProtocolUDP  Protocol = 17
	ProtocolSCTP Protocol = 132
)

// String returns the Kubernetes spelling ("TCP", "UDP", "SCTP") or "any".
func (p Protocol) String() string {
	switch p {
	case ProtocolAny:
		return "any"
	case ProtocolTCP:
		return "TCP"
	case ProtocolUDP:
		return "UDP"
	case ProtocolSCTP:
		return "SCTP"
	default:
		return fmt.Sprintf("proto-%d", uint8(p))
	}
}

// ParseProtocol maps a Kubernetes protocol name ("TCP", "UDP", "SCTP") to its number. The empty string is TCP,
// the API's default.
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "", "TCP":
		return ProtocolTCP, nil
	case "UDP":
		return ProtocolUDP, nil
	case "SCTP":
		return ProtocolSCTP, nil
	default:
		return 0, fmt.Errorf("protocol %q: %w", s, ErrInvalidPolicy)
	}
}

// ContainerPort is one named port of a pod's containers (corev1.ContainerPort with a name). Unnamed ports are
// never looked up and need not be passed.
type ContainerPort struct {
	Name     string
	Protocol Protocol
	Port     uint16
}

// Pod is what policy needs to know about a pod: where it lives, its labels, its address and its named ports.
// A pod without a valid IP can still be selected (and isolated) but is never a peer. Host-network pods should
// not be passed as peers: their IP is the node's.
type Pod struct {
	Namespace string
	Name      string
	Labels    map[string]string
	IP        netip.Addr
	Ports     []ContainerPort
}

// Input is everything Compute reads. Peers should hold every pod of the cluster that policies may select; the local
// pod is always considered a peer of itself, whether or not Peers lists it. A namespace missing from Namespaces has
// no labels.
type Input struct {
	Pod        Pod
	Policies   []*networkingv1.NetworkPolicy
	Namespaces map[string]map[string]string
	Peers      []Pod
}

// Entry allows traffic between the local pod and the addresses in CIDR, for Protocol (ProtocolAny: all) and the
// destination ports PortStart..PortEnd inclusive (0/0: all ports). For ingress CIDR is the source and the port is the
// local pod's; for egress CIDR is the destination and the port is the peer's.
type Entry struct {
	CIDR      netip.Prefix
	Protocol  Protocol
	PortStart uint16
	PortEnd   uint16
}

// AllPorts reports whether e matches every port.
func (e Entry) AllPorts() bool { return e.PortStart == 0 && e.PortEnd == 0 }

// String formats e as "10.0.0.0/24 TCP 80-90".
func (e Entry) String() string {
	if e.AllPorts() {
		return fmt.Sprintf("%s %s all", e.CIDR, e.Protocol)
	}
	if e.PortStart == e.PortEnd {
		return fmt.Sprintf("%s %s %d", e.CIDR, e.Protocol, e.PortStart)
	}
	return fmt.Sprintf("%s %s %d-%d", e.CIDR, e.Protocol, e.PortStart, e.PortEnd)
}

// Direction is the verdict for one direction. When Isolated is false all traffic is allowed and Entries is empty;
// when it is true only traffic matching some entry is allowed (none, if Entries is empty).
type Direction struct {
	Isolated bool
	Entries  []Entry
}

// Result is the desired policy state of one pod.
type Result struct {
	Ingress Direction
	Egress  Direction
}
