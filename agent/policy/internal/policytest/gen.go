package policytest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/autonode/autonode/agent/policy/compute"
)

// Gen draws random but valid clusters from small domains, so that selectors, ports and blocks collide often.
type Gen struct{ R *rand.Rand }

// NewGen returns a generator with a fixed seed, so that a failure reproduces.
func NewGen(seed1, seed2 uint64) Gen { return Gen{rand.New(rand.NewPCG(seed1, seed2))} }

// The domains are functions, not package variables, so that no test can change them for another.
func genNamespaces() []string { return []string{"ns-a", "ns-b", "ns-c", "ns-d"} } // ns-d never has labels
func genKeys() []string       { return []string{"app", "tier", "env"} }
func genValues() []string     { return []string{"x", "y", "z"} }
func genPortNames() []string  { return []string{"http", "dns", "metrics", "nope"} } // no pod has "nope"
func genPorts() []int32       { return []int32{53, 80, 443, 8080, 8081, 8082} }

func (g Gen) pick(n int) int        { return g.R.IntN(n) }
func (g Gen) chance(p float64) bool { return g.R.Float64() < p }

func (g Gen) labels() map[string]string {
	l := map[string]string{}
	for _, k := range genKeys() {
		if g.chance(0.5) {
			l[k] = genValues()[g.pick(len(genValues()))]
		}
	}
	return l
}

func (g Gen) selector() *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	if g.chance(0.3) {
		return s // empty: everything
	}
	for range g.pick(3) {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[genKeys()[g.pick(len(genKeys()))]] = genValues()[g.pick(len(genValues()))]
	}
	ops := []metav1.LabelSelectorOperator{metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn, metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist}
	for range g.pick(2) {
		r := metav1.LabelSelectorRequirement{Key: genKeys()[g.pick(len(genKeys()))], Operator: ops[g.pick(len(ops))]}
		if r.Operator == metav1.LabelSelectorOpIn || r.Operator == metav1.LabelSelectorOpNotIn {
			for range 1 + g.pick(2) {
				r.Values = append(r.Values, genValues()[g.pick(len(genValues()))])
			}
		}
		s.MatchExpressions = append(s.MatchExpressions, r)
	}
	return s
}

func (g Gen) protocol() compute.Protocol {
	return []compute.Protocol{compute.ProtocolTCP, compute.ProtocolTCP, compute.ProtocolUDP, compute.ProtocolSCTP}[g.pick(4)]
}

func (g Gen) podIP(i int) netip.Addr {
	if g.chance(0.1) {
		return netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(i + 1)})
	}
	return netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})
}

func (g Gen) pod(i int) compute.Pod {
	p := compute.Pod{Namespace: genNamespaces()[g.pick(3)], Name: fmt.Sprintf("pod-%d", i), Labels: g.labels(), IP: g.podIP(i)}
	if g.chance(0.1) {
		p.Namespace = "ns-d"
	}
	for range g.pick(4) {
		name := genPortNames()[g.pick(len(genPortNames())-1)]
		p.Ports = append(p.Ports, compute.ContainerPort{Name: name, Protocol: g.protocol(), Port: uint16(genPorts()[g.pick(len(genPorts()))])})
	}
	return p
}

func (g Gen) prefix(v6 bool) netip.Prefix {
	if v6 {
		bits := []int{0, 64, 120, 124, 126, 128}[g.pick(6)]
		return netip.PrefixFrom(netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(g.pick(32))}), bits).Masked()
	}
	bits := []int{0, 8, 16, 24, 26, 27, 28, 29, 30, 31, 32}[g.pick(11)]
	a := netip.AddrFrom4([4]byte{10, 0, byte(g.pick(2)), byte(g.pick(40))})
	if g.chance(0.1) {
		a = netip.AddrFrom4([4]byte{192, 168, 0, byte(g.pick(256))})
	}
	return netip.PrefixFrom(a, bits).Masked()
}

func (g Gen) ipBlock() *networkingv1.IPBlock {
	v6 := g.chance(0.15)
	cidr := g.prefix(v6)
	b := &networkingv1.IPBlock{CIDR: cidr.String()}
	for range g.pick(3) {
		e := g.prefix(v6)
		if g.chance(0.6) && cidr.Bits() < 128 && cidr.Bits() < cidr.Addr().BitLen() {
			// usually a strict subset of cidr, as the API requires; otherwise anything (outside, or containing it)
			bits := cidr.Bits() + 1 + g.pick(cidr.Addr().BitLen()-cidr.Bits())
			e = netip.PrefixFrom(RandomIn(g.R, cidr), bits).Masked()
		}
		b.Except = append(b.Except, e.String())
	}
	return b
}

func (g Gen) peer() networkingv1.NetworkPolicyPeer {
	switch g.pick(4) {
	case 0:
		return networkingv1.NetworkPolicyPeer{PodSelector: g.selector()}
	case 1:
		return networkingv1.NetworkPolicyPeer{NamespaceSelector: g.selector()}
	case 2:
		return networkingv1.NetworkPolicyPeer{PodSelector: g.selector(), NamespaceSelector: g.selector()}
	default:
		return networkingv1.NetworkPolicyPeer{IPBlock: g.ipBlock()}
	}
}

func (g Gen) port() networkingv1.NetworkPolicyPort {
	var p networkingv1.NetworkPolicyPort
	if g.chance(0.7) {
		proto := corev1.Protocol(g.protocol().String())
		p.Protocol = &proto
	}
	switch g.pick(5) {
	case 0: // all ports of the protocol
	case 1, 2:
		name := intstr.FromString(genPortNames()[g.pick(len(genPortNames()))])
		p.Port = &name
	default:
		n := genPorts()[g.pick(len(genPorts()))]
		num := intstr.FromInt32(n)
		p.Port = &num
		if g.chance(0.4) {
			end := n + int32(g.pick(4))
			p.EndPort = &end
		}
	}
	return p
}

func (g Gen) rule() ([]networkingv1.NetworkPolicyPeer, []networkingv1.NetworkPolicyPort) {
	var peers []networkingv1.NetworkPolicyPeer
	var ports []networkingv1.NetworkPolicyPort
	if g.chance(0.8) {
		for range 1 + g.pick(3) {
			peers = append(peers, g.peer())
		}
	}
	if g.chance(0.7) {
		for range 1 + g.pick(3) {
			ports = append(ports, g.port())
		}
	}
	return peers, ports
}

func (g Gen) policy(i int, localNS string) *networkingv1.NetworkPolicy {
	ns := localNS
	if g.chance(0.15) {
		ns = genNamespaces()[g.pick(len(genNamespaces()))]
	}
	pol := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("pol-%d", i)}}
	pol.Spec.PodSelector = *g.selector()
	switch g.pick(5) {
	case 0:
		pol.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 1:
		pol.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	case 2:
		pol.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	}
	for range g.pick(3) {
		from, ports := g.rule()
		pol.Spec.Ingress = append(pol.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: from, Ports: ports})
	}
	for range g.pick(3) {
		to, ports := g.rule()
		pol.Spec.Egress = append(pol.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: to, Ports: ports})
	}
	return pol
}

// Input draws a cluster: a local pod, peers, namespaces and policies.
func (g Gen) Input() compute.Input {
	in := compute.Input{Namespaces: map[string]map[string]string{}}
	for _, ns := range genNamespaces()[:3] {
		in.Namespaces[ns] = g.labels()
	}
	n := 1 + g.pick(10)
	for i := range n {
		in.Peers = append(in.Peers, g.pod(i))
	}
	local := g.pick(n)
	in.Pod = in.Peers[local]
	if g.chance(0.3) { // the local pod need not be listed among the peers
		in.Peers = append(in.Peers[:local], in.Peers[local+1:]...)
	}
	for i := range g.pick(5) {
		in.Policies = append(in.Policies, g.policy(i, in.Pod.Namespace))
	}
	return in
}

// Flow draws a flow of in's local pod: peers, the pod itself, random addresses of both families, TCP, UDP,
// SCTP and now and then ICMP.
func (g Gen) Flow(in compute.Input) Flow {
	f := Flow{Egress: g.chance(0.5), Proto: g.protocol()}
	switch g.pick(10) {
	case 0, 1, 2, 3:
		if len(in.Peers) > 0 {
			f.Peer = in.Peers[g.pick(len(in.Peers))].IP
		} else {
			f.Peer = in.Pod.IP
		}
	case 4:
		f.Peer = in.Pod.IP
	case 5, 6, 7:
		f.Peer = RandomIn(g.R, g.prefix(false))
	default:
		f.Peer = RandomIn(g.R, g.prefix(true))
	}
	switch g.pick(6) {
	case 0:
		f.Port = uint16(1 + g.pick(65535))
	case 1:
		f.Port = uint16(genPorts()[g.pick(len(genPorts()))] + int32(g.pick(5)) - 1)
	default:
		f.Port = uint16(genPorts()[g.pick(len(genPorts()))])
	}
	if g.chance(0.05) {
		f.Proto, f.Port = 1, 0 // ICMP
	}
	return f
}

// RandomIn returns a random address of p.
func RandomIn(r *rand.Rand, p netip.Prefix) netip.Addr {
	p = p.Masked()
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		if r.IntN(2) == 1 {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Dump formats in for a failure message.
func Dump(in compute.Input) string {
	s := fmt.Sprintf("pod %s/%s %v %s %v\nnamespaces %v\n", in.Pod.Namespace, in.Pod.Name, in.Pod.Labels, in.Pod.IP, in.Pod.Ports, in.Namespaces)
	for _, p := range in.Peers {
		s += fmt.Sprintf("peer %s/%s %v %s %v\n", p.Namespace, p.Name, p.Labels, p.IP, p.Ports)
	}
	for _, p := range in.Policies {
		s += fmt.Sprintf("policy %s/%s %+v\n", p.Namespace, p.Name, p.Spec)
	}
	return s
}
