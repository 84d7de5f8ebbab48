// Package datapath enforces one node's NetworkPolicy in the kernel: BPF programs on each pod's host-side veth, a
// per-pod rule map, a connection tracker and a ring buffer of flow events, all pinned in a BPF filesystem so that
// enforcement outlives the agent.
//
// The engine (agent/policy) computes each pod's allow entries with agent/policy/compute and hands them to Program;
// this package turns them into map entries, swaps them in atomically and attaches the programs. Nothing here
// watches the API server.
//
// Interfaces are looked up, attached to and (for Check) pretended on in the network namespace of the calling
// thread: call Open, Program, Remove, Reconcile and Check from the namespace that holds the host veths.
//
// Directions are the pod's: packets FROM the pod arrive on the host veth's ingress hook and are checked against the
// pod's Egress rules; packets TO the pod leave through the host veth's egress hook and are checked against its
// Ingress rules.
//
// Pin layout under Config.PinRoot (default /sys/fs/bpf/autonode/policy); change it only together with a migration
// in Open, since a restarted agent adopts whatever it finds there:
//
//	<root>/maps/ap_rules     LPM trie: every pod's rules, keyed {ifindex, direction, version, prefix or port block}
//	<root>/maps/ap_pods      hash {ifindex} -> pod record: cookie, rules version, names, IP, isolation
//	<root>/maps/ap_ct        LRU hash, connection tracker (Config.ConntrackSize entries)
//	<root>/maps/ap_frags     LRU hash, first-fragment ids of allowed datagrams
//	<root>/maps/ap_nodes     hash, node addresses (always allowed)
//	<root>/maps/ap_config    array[1], settings the programs read (event rate, EmitAllows)
//	<root>/maps/ap_events    ring buffer of flow events
//	<root>/maps/ap_stats     per-CPU array of counters
//	<root>/maps/ap_ratelimit per-CPU array, the events token bucket
//	<root>/links/<hostIf>_from_pod, <hostIf>_to_pod   TCX links (none with the clsact fallback, which lives in the qdisc)
//
// bpffs refuses dots in names, hence the underscores. Per-pod state is entries in these maps, never maps of its
// own, so the number of maps is fixed and a pod's footprint is its entries and two pins.
package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/autonode/autonode/agent/policy/compute"
)

// DefaultPinRoot is where the datapath pins its maps and links unless Config.PinRoot says otherwise.
const DefaultPinRoot = "/sys/fs/bpf/autonode/policy"

// DefaultConntrackSize is the default capacity of the connection tracker, in flows.
const DefaultConntrackSize = 512 * 1024

// DefaultEventsPerSecond is the default per-CPU rate of flow events; DefaultEventBurst is the bucket size.
const (
	DefaultEventsPerSecond = 1000
	DefaultEventBurst      = 2000
)

// MaxPrefixes bounds the entries (address prefixes plus port blocks) of one pod direction. Beyond it Program fails
// with ErrUnsupported, and the engine denies.
const MaxPrefixes = 1 << 16

// ErrUnsupported is the class of errors for rules the datapath cannot express. Program leaves the pod's previous
// rules in place when it returns one; the caller must then deny the pod (Program with an isolated, empty direction)
// rather than let traffic through. Test with errors.Is.
var ErrUnsupported = errors.New("not expressible in the datapath")

// ErrNotFound means no pod is programmed on the named host veth.
var ErrNotFound = errors.New("pod not programmed")

// AttachMode picks how programs are attached to a veth.
type AttachMode int

const (
	// AttachAuto uses TCX and falls back to a clsact qdisc filter where the kernel lacks TCX.
	AttachAuto AttachMode = iota
	// AttachTCX uses TCX links only (kernel 6.6 and later).
	AttachTCX
	// AttachTC uses clsact qdisc filters only.
	AttachTC
)

// Config configures Open.
type Config struct {
	// PinRoot is the directory in a BPF filesystem holding the maps and links. Default is DefaultPinRoot.
	PinRoot string
	// ConntrackSize is the connection tracker's capacity in flows. Default is DefaultConntrackSize. Changing it for
	// an existing PinRoot makes Open fail, naming the map: delete its pin to resize (tracked flows are lost).
	ConntrackSize int
	// EmitAllows sends allow verdicts to the ring buffer as well; denials always go there.
	EmitAllows bool
	// EventsPerSecond and EventBurst size the per-CPU token bucket that limits flow events. Defaults are
	// DefaultEventsPerSecond and DefaultEventBurst.
	EventsPerSecond, EventBurst int
	// Attach picks TCX or clsact. Default is AttachAuto.
	Attach AttachMode
	// GCInterval is how often Run sweeps the connection tracker. Default is 30s.
	GCInterval time.Duration
	// Logger receives the datapath's logs. Default is slog.Default().
	Logger *slog.Logger
	// ReadOnly opens what an agent pinned without changing anything: no link update, no settings, no cleanup.
	// Dump, Check, Events and Collectors work; Program, Remove, Reconcile, SetNodeAddresses and Run fail. For the
	// `policy dump` and `policy check` commands, with or without a running agent. ConntrackSize is taken from the
	// pinned map.
	ReadOnly bool
}

// Direction is a pod's traffic direction.
type Direction uint8

// Directions, numbered as the BPF programs number them.
const (
	// Ingress is traffic to the pod, checked on the host veth's egress hook.
	Ingress Direction = 0
	// Egress is traffic from the pod, checked on the host veth's ingress hook.
	Egress Direction = 1
)

func (d Direction) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return fmt.Sprintf("direction-%d", uint8(d))
}

// PodRules is the desired policy state of one pod on one host veth.
type PodRules struct {
	// HostIf is the host-side veth: the key of everything the datapath keeps per pod.
	HostIf string
	// Namespace and Name identify the pod in dumps and events.
	Namespace, Name string
	// IP is the pod's address, used by Check to craft packets.
	IP netip.Addr
	// Ingress and Egress are compute's result for the pod.
	Ingress, Egress compute.Direction
}

// Flow is one packet Check evaluates, seen from the pod: in Ingress the peer sends to the pod's Port, in Egress
// the pod sends to the peer's Port.
type Flow struct {
	Peer netip.Addr
	// Protocol is the IP protocol number (compute.ProtocolTCP, UDP, SCTP, or 1 for ICMP). For ICMP, Port is unused
	// and an echo request is sent.
	Protocol compute.Protocol
	Port     uint16
}

// ProtocolICMP is the IPv4 ICMP protocol number, for Flow.Protocol.
const ProtocolICMP compute.Protocol = 1

// Verdict is what the programs decided about a packet, and why.
type Verdict struct {
	Allowed bool
	Reason  Reason
}

func (v Verdict) String() string {
	if v.Allowed {
		return "allow (" + v.Reason.String() + ")"
	}
	return "deny (" + v.Reason.String() + ")"
}

// Event is one flow verdict reported through the ring buffer.
type Event struct {
	// Time is when the program decided, on the kernel's monotonic clock converted to wall time.
	Time time.Time
	// HostIf, Namespace and Name identify the pod, when it is still programmed.
	HostIf, Namespace, Name string
	Ifindex                 int
	Direction               Direction
	Verdict                 Verdict
	// Protocol is the IP protocol; Src and Dst carry ports for TCP, UDP and SCTP, and the ICMP echo id otherwise.
	Protocol uint8
	Src, Dst netip.AddrPort
}
