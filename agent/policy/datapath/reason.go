package datapath

import "fmt"

// Reason says why the programs allowed or dropped a packet. Values below ReasonNoRule allow. They are the enum in
// bpf/policy.c.
type Reason uint8

// Reasons.
const (
	ReasonPolicy       Reason = 1  // a rule of the pod's policy matched
	ReasonReply        Reason = 2  // a reply of a flow the policy allowed (conntrack)
	ReasonNode         Reason = 3  // the peer is an address of this node
	ReasonICMPError    Reason = 4  // an ICMP error about a tracked flow
	ReasonFragment     Reason = 5  // a later fragment of an allowed IPv4 datagram
	ReasonNotIP        Reason = 6  // not IPv4 or IPv6 (ARP)
	ReasonND           Reason = 7  // IPv6 neighbor discovery
	ReasonNoRule       Reason = 16 // the direction is isolated and no rule matched
	ReasonNoPod        Reason = 17 // the veth has programs but no pod state
	ReasonFragUnknown  Reason = 18 // a later fragment whose first fragment was not allowed or not seen
	ReasonMalformed    Reason = 19 // an unreadable IP header
	statEventsSent            = 24
	statEventsLimited         = 25
	statEventsRingFull        = 26
	statConntrackNew          = 27
	statCount                 = 32
)

// Allows reports whether packets with this reason pass.
func (r Reason) Allows() bool { return r < ReasonNoRule }

func (r Reason) String() string {
	switch r {
	case ReasonPolicy:
		return "policy"
	case ReasonReply:
		return "reply"
	case ReasonNode:
		return "node"
	case ReasonICMPError:
		return "icmp-error"
	case ReasonFragment:
		return "fragment"
	case ReasonNotIP:
		return "not-ip"
	case ReasonND:
		return "neighbor-discovery"
	case ReasonNoRule:
		return "no-rule"
	case ReasonNoPod:
		return "no-pod"
	case ReasonFragUnknown:
		return "unknown-fragment"
	case ReasonMalformed:
		return "malformed"
	}
	return fmt.Sprintf("reason-%d", uint8(r))
}

// reasons lists every reason, for metrics.
func reasons() []Reason {
	return []Reason{ReasonPolicy, ReasonReply, ReasonNode, ReasonICMPError, ReasonFragment, ReasonNotIP, ReasonND,
		ReasonNoRule, ReasonNoPod, ReasonFragUnknown, ReasonMalformed}
}
