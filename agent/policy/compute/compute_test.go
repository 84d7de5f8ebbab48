package compute

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Builders for the table tests: short on purpose, so that each case reads like its YAML.

func policy(name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name}, Spec: spec}
}

func sel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	for i := 0; i+1 < len(kv); i += 2 {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func block(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func tcp(port int32) networkingv1.NetworkPolicyPort {
	p := intstr.FromInt32(port)
	return networkingv1.NetworkPolicyPort{Port: &p}
}

func portRange(port, end int32) networkingv1.NetworkPolicyPort {
	p := tcp(port)
	p.EndPort = &end
	return p
}

func named(name string, proto corev1.Protocol) networkingv1.NetworkPolicyPort {
	p := intstr.FromString(name)
	return networkingv1.NetworkPolicyPort{Port: &p, Protocol: &proto}
}

func protoOnly(proto corev1.Protocol) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: &proto}
}

func ingressRule(from []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) []networkingv1.NetworkPolicyIngressRule {
	return []networkingv1.NetworkPolicyIngressRule{{From: from, Ports: ports}}
}

func egressRule(to []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) []networkingv1.NetworkPolicyEgressRule {
	return []networkingv1.NetworkPolicyEgressRule{{To: to, Ports: ports}}
}

func peers(p ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer { return p }

// cluster is the fixture every table case runs against: the local pod "web" in namespace "app", two more pods in
// "app", one in "db" and one in "other".
func cluster(policies ...*networkingv1.NetworkPolicy) Input {
	return Input{
		Pod: Pod{Namespace: "app", Name: "web", Labels: map[string]string{"app": "web"}, IP: netip.MustParseAddr("10.0.0.1"),
			Ports: []ContainerPort{{"http", ProtocolTCP, 8080}, {"dns", ProtocolTCP, 53}, {"dns", ProtocolUDP, 53}}},
		Policies:   policies,
		Namespaces: map[string]map[string]string{"app": {"team": "a"}, "db": {"team": "a", "tier": "data"}, "other": {"team": "b"}},
		Peers: []Pod{
			{Namespace: "app", Name: "api", Labels: map[string]string{"app": "api"}, IP: netip.MustParseAddr("10.0.0.2"),
				Ports: []ContainerPort{{"http", ProtocolTCP, 9000}}},
			{Namespace: "app", Name: "job", Labels: map[string]string{"app": "job"}, IP: netip.MustParseAddr("10.0.0.3")},
			{Namespace: "db", Name: "pg", Labels: map[string]string{"app": "pg"}, IP: netip.MustParseAddr("10.0.1.1"),
				Ports: []ContainerPort{{"http", ProtocolTCP, 5432}}},
			{Namespace: "other", Name: "x", Labels: map[string]string{"app": "api"}, IP: netip.MustParseAddr("10.0.2.1")},
		},
	}
}

func strs(d Direction) []string {
	if !d.Isolated {
		return nil // allow all
	}
	out := []string{}
	for _, e := range d.Entries {
		out = append(out, e.String())
	}
	return out
}

func TestCompute(t *testing.T) {
	all := []string{"0.0.0.0/0 any all", "::/0 any all"}
	tests := []struct {
		name            string
		policies        []*networkingv1.NetworkPolicy
		ingress, egress []string // nil: not isolated; empty: isolated, nothing allowed
	}{
		{name: "no policy: allow all"},
		{
			name:     "policy in another namespace is ignored",
			policies: []*networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "deny"}}},
		},
		{
			name:     "podSelector not matching the pod",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "api")})},
		},
		{
			name:     "empty podSelector, no rules: default deny ingress only",
			policies: []*networkingv1.NetworkPolicy{policy("deny", networkingv1.NetworkPolicySpec{})},
			ingress:  []string{},
		},
		{
			name:     "egress rules imply Egress when policyTypes is empty",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{Egress: egressRule(nil, tcp(53))})},
			ingress:  []string{},
			egress:   []string{"0.0.0.0/0 TCP 53", "::/0 TCP 53"},
		},
		{
			name: "policyTypes Egress only ignores ingress rules",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Ingress:     ingressRule(nil),
			})},
			egress: []string{},
		},
		{
			name: "empty rule allows everything",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
				Ingress:     ingressRule(nil), Egress: egressRule(nil),
			})},
			ingress: all, egress: all,
		},
		{
			name:     "empty podSelector peer: every pod of the policy's namespace, the pod itself included",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(networkingv1.NetworkPolicyPeer{PodSelector: sel()}))})},
			ingress:  []string{"10.0.0.1/32 any all", "10.0.0.2/32 any all", "10.0.0.3/32 any all"},
		},
		{
			name:     "empty namespaceSelector peer: every pod",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(networkingv1.NetworkPolicyPeer{NamespaceSelector: sel()}), tcp(80))})},
			ingress:  []string{"10.0.0.1/32 TCP 80", "10.0.0.2/32 TCP 80", "10.0.0.3/32 TCP 80", "10.0.1.1/32 TCP 80", "10.0.2.1/32 TCP 80"},
		},
		{
			name: "podSelector AND namespaceSelector in one peer",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(
				networkingv1.NetworkPolicyPeer{PodSelector: sel("app", "api"), NamespaceSelector: sel("team", "b")}))})},
			ingress: []string{"10.0.2.1/32 any all"},
		},
		{
			name: "podSelector OR namespaceSelector as two peers",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(
				networkingv1.NetworkPolicyPeer{PodSelector: sel("app", "api")}, networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("tier", "data")}))})},
			ingress: []string{"10.0.0.2/32 any all", "10.0.1.1/32 any all"},
		},
		{
			name: "overlapping ipBlocks: one block fills another's except",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(
				block("10.0.0.0/24", "10.0.0.0/26"), block("10.0.0.0/25")), tcp(443))})},
			ingress: []string{"10.0.0.0/25 TCP 443", "10.0.0.64/26 TCP 443", "10.0.0.128/25 TCP 443"},
		},
		{
			name:     "except outside the CIDR removes nothing",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(block("10.0.0.0/24", "192.168.0.0/16", "fd00::/8")))})},
			ingress:  []string{"10.0.0.0/24 any all"},
		},
		{
			name:     "except equal to the CIDR removes all of it",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(block("10.0.0.0/24", "10.0.0.0/24")))})},
			ingress:  []string{},
		},
		{
			name:     "ipBlock with except carves the minimal cover",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(block("10.0.0.0/29", "10.0.0.5/32")))})},
			ingress:  []string{"10.0.0.0/30 any all", "10.0.0.4/32 any all", "10.0.0.6/31 any all"},
		},
		{
			name:     "named port no pod has matches nothing",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{Ingress: ingressRule(nil, named("grpc", corev1.ProtocolTCP))})},
			ingress:  []string{},
		},
		{
			name:     "ingress named port resolves on the local pod, protocol included",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(block("10.0.0.0/24")), named("dns", corev1.ProtocolUDP), named("http", corev1.ProtocolTCP))})},
			ingress:  []string{"10.0.0.0/24 TCP 8080", "10.0.0.0/24 UDP 53"},
		},
		{
			name: "egress named port resolves on each peer pod",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress:      egressRule(peers(networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("team", "a")}), named("http", corev1.ProtocolTCP)),
			})},
			egress: []string{"10.0.0.1/32 TCP 8080", "10.0.0.2/32 TCP 9000", "10.0.1.1/32 TCP 5432"},
		},
		{
			name: "egress named port on an ipBlock resolves only for known pods inside it",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress:      egressRule(peers(block("10.0.0.0/16", "10.0.0.0/24"), block("8.8.8.0/24")), named("http", corev1.ProtocolTCP)),
			})},
			egress: []string{"10.0.1.1/32 TCP 5432"},
		},
		{
			name: "endPort ranges merge with adjacent and overlapping ports",
			policies: []*networkingv1.NetworkPolicy{
				policy("a", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(block("10.0.0.0/24")), portRange(8000, 8010), tcp(8011), tcp(8020))}),
				policy("b", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(block("10.0.0.0/24")), portRange(8005, 8007), portRange(8019, 8030))}),
			},
			ingress: []string{"10.0.0.0/24 TCP 8000-8011", "10.0.0.0/24 TCP 8019-8030"},
		},
		{
			name:     "protocol without port: all ports of that protocol",
			policies: []*networkingv1.NetworkPolicy{policy("p", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(block("10.0.0.0/24")), protoOnly(corev1.ProtocolUDP), tcp(80), protoOnly(corev1.ProtocolSCTP))})},
			ingress:  []string{"10.0.0.0/24 TCP 80", "10.0.0.0/24 UDP all", "10.0.0.0/24 SCTP all"},
		},
		{
			name: "union of policies; an all-protocol entry absorbs the rest of its CIDR",
			policies: []*networkingv1.NetworkPolicy{
				policy("a", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(block("10.0.0.2/32")), tcp(80))}),
				policy("b", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(networkingv1.NetworkPolicyPeer{PodSelector: sel("app", "api")}))}),
				policy("c", networkingv1.NetworkPolicySpec{Ingress: ingressRule(peers(block("10.0.0.3/32")), tcp(80))}),
			},
			ingress: []string{"10.0.0.2/32 any all", "10.0.0.3/32 TCP 80"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Compute(cluster(tt.policies...))
			if err != nil {
				t.Fatalf("Compute: %v", err)
			}
			if got := strs(res.Ingress); !slices.Equal(got, tt.ingress) || (got == nil) != (tt.ingress == nil) {
				t.Errorf("ingress = %q, want %q", got, tt.ingress)
			}
			if got := strs(res.Egress); !slices.Equal(got, tt.egress) || (got == nil) != (tt.egress == nil) {
				t.Errorf("egress = %q, want %q", got, tt.egress)
			}
		})
	}
}

func TestComputeInvalid(t *testing.T) {
	bad := intstr.FromInt32(0)
	sctpx := corev1.Protocol("ICMP")
	end := int32(10)
	tests := []struct {
		name string
		rule []networkingv1.NetworkPolicyIngressRule
	}{
		{"bad cidr", ingressRule(peers(block("10.0.0.0/33")))},
		{"bad except", ingressRule(peers(block("10.0.0.0/8", "nope")))},
		{"ipBlock with selector", ingressRule(peers(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}, PodSelector: sel()}))},
		{"empty peer", ingressRule(peers(networkingv1.NetworkPolicyPeer{}))},
		{"bad selector", ingressRule(peers(networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}}))},
		{"port zero", ingressRule(nil, networkingv1.NetworkPolicyPort{Port: &bad})},
		{"unknown protocol", ingressRule(nil, networkingv1.NetworkPolicyPort{Protocol: &sctpx})},
		{"endPort below port", ingressRule(nil, portRange(80, end))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compute(cluster(policy("broken", networkingv1.NetworkPolicySpec{Ingress: tt.rule})))
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("err = %v, want ErrInvalidPolicy", err)
			}
			t.Log(err)
		})
	}
}

func TestNormalize(t *testing.T) {
	e := func(cidr string, proto Protocol, start, end uint16) Entry {
		return Entry{CIDR: netip.MustParsePrefix(cidr), Protocol: proto, PortStart: start, PortEnd: end}
	}
	tests := []struct {
		name     string
		in, want []Entry
	}{
		{name: "empty"},
		{name: "duplicates", in: []Entry{e("10.0.0.0/8", 6, 80, 80), e("10.0.0.0/8", 6, 80, 80)}, want: []Entry{e("10.0.0.0/8", 6, 80, 80)}},
		{name: "host bits masked", in: []Entry{e("10.1.2.3/8", 6, 80, 80), e("10.0.0.0/8", 6, 80, 80)}, want: []Entry{e("10.0.0.0/8", 6, 80, 80)}},
		{name: "nested range", in: []Entry{e("10.0.0.0/8", 6, 80, 90), e("10.0.0.0/8", 6, 81, 82)}, want: []Entry{e("10.0.0.0/8", 6, 80, 90)}},
		{name: "adjacent ranges", in: []Entry{e("10.0.0.0/8", 6, 91, 95), e("10.0.0.0/8", 6, 80, 90)}, want: []Entry{e("10.0.0.0/8", 6, 80, 95)}},
		{name: "gap kept", in: []Entry{e("10.0.0.0/8", 6, 92, 95), e("10.0.0.0/8", 6, 80, 90)}, want: []Entry{e("10.0.0.0/8", 6, 80, 90), e("10.0.0.0/8", 6, 92, 95)}},
		{name: "top port", in: []Entry{e("10.0.0.0/8", 6, 65535, 65535), e("10.0.0.0/8", 6, 65000, 65535)}, want: []Entry{e("10.0.0.0/8", 6, 65000, 65535)}},
		{name: "all ports absorb ranges", in: []Entry{e("10.0.0.0/8", 17, 53, 53), e("10.0.0.0/8", 17, 0, 0), e("10.0.0.0/8", 6, 53, 53)}, want: []Entry{e("10.0.0.0/8", 6, 53, 53), e("10.0.0.0/8", 17, 0, 0)}},
		{name: "any protocol absorbs all", in: []Entry{e("10.0.0.0/8", 17, 53, 53), e("10.0.0.0/8", 0, 0, 0)}, want: []Entry{e("10.0.0.0/8", 0, 0, 0)}},
		{name: "different CIDRs kept apart", in: []Entry{e("10.0.0.0/16", 6, 80, 80), e("10.0.0.0/8", 6, 80, 80), e("::/0", 6, 80, 80)}, want: []Entry{e("10.0.0.0/8", 6, 80, 80), e("10.0.0.0/16", 6, 80, 80), e("::/0", 6, 80, 80)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.in)
			if got := Normalize(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("Normalize = %v, want %v", got, tt.want)
			}
			if !slices.Equal(in, tt.in) {
				t.Errorf("Normalize changed its input")
			}
		})
	}
}
