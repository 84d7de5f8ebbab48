package policy

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/autonode/autonode/agent/policy/compute"
)

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func lbl(kv ...string) map[string]string { return sel(kv...).MatchLabels }

// netpol builds a policy selecting podSel whose one ingress rule allows from peers (nil: no ingress rule).
func netpol(ns, name string, podSel *metav1.LabelSelector, peers ...networkingv1.NetworkPolicyPeer) *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name), ResourceVersion: "1"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *podSel}}
	if len(peers) > 0 {
		p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: peers}}
	}
	return p
}

func pinfo(ns, name, ip string, l map[string]string) *podInfo {
	p := &podInfo{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Labels: l}
	if ip != "" {
		p.IP = netip.MustParseAddr(ip)
	}
	return p
}

// testView has three local pods: a (ns1 app=web), b (ns1 app=db), c (ns2 app=web), and a remote peer r.
func testView(t *testing.T) *view {
	t.Helper()
	v := newView()
	v.setNamespace("ns1", lbl("team", "one"), false)
	v.setNamespace("ns2", lbl("team", "two"), false)
	for _, p := range []*podInfo{
		pinfo("ns1", "a", "", lbl("app", "web")), pinfo("ns1", "b", "", lbl("app", "db")),
		pinfo("ns2", "c", "", lbl("app", "web")), pinfo("ns3", "r", "10.9.0.1", lbl("app", "client")),
	} {
		v.setPod(p.key(), p)
	}
	for i, name := range []string{"a", "b", "c"} {
		ns := "ns1"
		if name == "c" {
			ns = "ns2"
		}
		v.attach(&local{HostIf: "if-" + name, Namespace: ns, Name: name, UID: types.UID("uid-" + name), IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})})
	}
	v.track = true
	return v
}

func TestAffected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before func(v *view)
		change func(v *view) set
		want   []string
	}{
		{"policy selecting web in ns1", nil,
			func(v *view) set { return v.setPolicy("ns1", "p", netpol("ns1", "p", sel("app", "web"))) }, []string{"if-a"}},
		{"empty podSelector selects the whole namespace", nil,
			func(v *view) set { return v.setPolicy("ns1", "p", netpol("ns1", "p", sel())) }, []string{"if-a", "if-b"}},
		{"selector change affects old and new pods",
			func(v *view) { v.setPolicy("ns1", "p", netpol("ns1", "p", sel("app", "web"))) },
			func(v *view) set { return v.setPolicy("ns1", "p", netpol("ns1", "p", sel("app", "db"))) }, []string{"if-a", "if-b"}},
		{"delete affects what it selected",
			func(v *view) { v.setPolicy("ns2", "p", netpol("ns2", "p", sel())) },
			func(v *view) set { return v.setPolicy("ns2", "p", nil) }, []string{"if-c"}},
		{"invalid podSelector may select every pod of its namespace", nil,
			func(v *view) set {
				bad := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Bogus"}}}
				return v.setPolicy("ns1", "p", netpol("ns1", "p", bad))
			}, []string{"if-a", "if-b"}},
		{"namespace relabel reaches policies whose namespaceSelector matched",
			func(v *view) {
				v.setPolicy("ns1", "p", netpol("ns1", "p", sel("app", "db"), networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("team", "two")}))
				v.setPolicy("ns2", "q", netpol("ns2", "q", sel(), networkingv1.NetworkPolicyPeer{PodSelector: sel()}))
			},
			func(v *view) set { return v.setNamespace("ns2", lbl("team", "three"), false) }, []string{"if-b"}},
		{"namespace relabel reaches policies whose namespaceSelector now matches",
			func(v *view) {
				v.setPolicy("ns1", "p", netpol("ns1", "p", sel("app", "web"), networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("team", "new")}))
			},
			func(v *view) set { return v.setNamespace("ns3", lbl("team", "new"), false) }, []string{"if-a"}},
		{"namespace without label change affects nothing",
			func(v *view) {
				v.setPolicy("ns1", "p", netpol("ns1", "p", sel(), networkingv1.NetworkPolicyPeer{NamespaceSelector: sel()}))
			},
			func(v *view) set { return v.setNamespace("ns1", lbl("team", "one"), false) }, nil},
		{"new peer pod reaches policies that select it",
			func(v *view) {
				v.setPolicy("ns1", "p", netpol("ns1", "p", sel("app", "web"),
					networkingv1.NetworkPolicyPeer{NamespaceSelector: sel(), PodSelector: sel("app", "client")}))
				v.setPolicy("ns1", "q", netpol("ns1", "q", sel("app", "db"), networkingv1.NetworkPolicyPeer{PodSelector: sel("app", "client")}))
			},
			func(v *view) set {
				p := pinfo("ns3", "new", "10.9.0.2", lbl("app", "client"))
				return v.setPod(p.key(), p)
			}, []string{"if-a"}}, // q's podSelector alone looks in ns1 only
		{"peer relabel reaches the policy it leaves",
			func(v *view) {
				v.setPolicy("ns2", "p", netpol("ns2", "p", sel(), networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("team", "")}))
				v.setPolicy("ns1", "q", netpol("ns1", "q", sel("app", "web"),
					networkingv1.NetworkPolicyPeer{NamespaceSelector: sel(), PodSelector: sel("app", "client")}))
			},
			func(v *view) set {
				p := pinfo("ns3", "r", "10.9.0.1", lbl("app", "other"))
				return v.setPod(p.key(), p)
			}, []string{"if-a"}},
		{"a status update that changes nothing peers see affects nothing",
			func(v *view) {
				v.setPolicy("ns1", "p", netpol("ns1", "p", sel(), networkingv1.NetworkPolicyPeer{NamespaceSelector: sel()}))
			},
			func(v *view) set {
				p := pinfo("ns3", "r", "10.9.0.1", lbl("app", "client"))
				p.NodeName = "elsewhere"
				return v.setPod(p.key(), p)
			}, nil},
		{"a pod without an address is no peer yet",
			func(v *view) {
				v.setPolicy("ns1", "p", netpol("ns1", "p", sel(), networkingv1.NetworkPolicyPeer{NamespaceSelector: sel()}))
			},
			func(v *view) set {
				p := pinfo("ns3", "pending", "", lbl("app", "client"))
				return v.setPod(p.key(), p)
			}, nil},
		{"a finished pod stops being a peer",
			func(v *view) {
				v.setPolicy("ns2", "p", netpol("ns2", "p", sel(), networkingv1.NetworkPolicyPeer{NamespaceSelector: sel()}))
			},
			func(v *view) set {
				p := pinfo("ns3", "r", "10.9.0.1", lbl("app", "client"))
				p.Peerless = true
				return v.setPod(p.key(), p)
			}, []string{"if-c"}},
		{"a local pod's relabel recomputes it, and policies it is a peer of",
			func(v *view) {
				v.setPolicy("ns2", "p", netpol("ns2", "p", sel(), networkingv1.NetworkPolicyPeer{NamespaceSelector: sel(), PodSelector: sel("app", "web")}))
			},
			func(v *view) set {
				p := pinfo("ns1", "a", "", lbl("app", "api"))
				return v.setPod(p.key(), p)
			}, []string{"if-a", "if-c"}},
		{"named port on an ipBlock: any peer change matters",
			func(v *view) {
				p := netpol("ns2", "p", sel())
				p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
				named := intstr.FromString("http")
				p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
					To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: &named}},
				}}
				v.setPolicy("ns2", "p", p)
			},
			func(v *view) set {
				p := pinfo("ns9", "x", "10.1.0.1", lbl())
				return v.setPod(p.key(), p)
			}, []string{"if-c"}},
		{"attach of a local pod reaches policies that select it as a peer",
			func(v *view) {
				v.setPolicy("ns2", "p", netpol("ns2", "p", sel(), networkingv1.NetworkPolicyPeer{NamespaceSelector: sel(), PodSelector: sel("app", "new")}))
				p := pinfo("ns1", "d", "", lbl("app", "new"))
				v.setPod(p.key(), p)
			},
			func(v *view) set {
				return v.attach(&local{HostIf: "if-d", Namespace: "ns1", Name: "d", UID: "uid-d", IP: netip.MustParseAddr("10.0.0.4")})
			}, []string{"if-c"}},
		{"detach of a local pod reaches policies that selected it as a peer",
			func(v *view) {
				v.setPolicy("ns2", "p", netpol("ns2", "p", sel(), networkingv1.NetworkPolicyPeer{NamespaceSelector: sel(), PodSelector: sel("app", "db")}))
			},
			func(v *view) set { _, s := v.detach("if-b"); return s }, []string{"if-c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := testView(t)
			if tc.before != nil {
				tc.before(v)
			}
			got := tc.change(v).sorted()
			if !slices.Equal(got, tc.want) {
				t.Errorf("affected %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTrackOff(t *testing.T) {
	v := testView(t)
	v.track = false
	if got := v.setPolicy("ns1", "p", netpol("ns1", "p", sel())); len(got) != 0 {
		t.Errorf("while filling the caches, affected = %v; want none", got.sorted())
	}
	if v.policies["ns1"]["p"] == nil {
		t.Error("the policy was not stored")
	}
}

func TestPeerSnapshot(t *testing.T) {
	v := testView(t)
	peers := v.peerSnapshot()
	got := map[string]netip.Addr{}
	for _, p := range peers {
		got[p.Namespace+"/"+p.Name] = p.IP
	}
	// Local pods are peers with the address their ADD gave them, before their status shows it.
	want := map[string]string{"ns1/a": "10.0.0.1", "ns1/b": "10.0.0.2", "ns2/c": "10.0.0.3", "ns3/r": "10.9.0.1"}
	if len(got) != len(want) {
		t.Fatalf("peers %v, want %v", got, want)
	}
	for k, ip := range want {
		if got[k] != netip.MustParseAddr(ip) {
			t.Errorf("peer %s has %s, want %s", k, got[k], ip)
		}
	}
	if &v.peerSnapshot()[0] != &peers[0] {
		t.Error("snapshot rebuilt without a change")
	}
	p := pinfo("ns3", "r", "10.9.0.9", lbl("app", "client"))
	v.setPod(p.key(), p)
	if v.peers != nil {
		t.Error("snapshot kept after a peer changed address")
	}
}

func entry(cidr string, proto compute.Protocol, start, end uint16) compute.Entry {
	return compute.Entry{CIDR: netip.MustParsePrefix(cidr), Protocol: proto, PortStart: start, PortEnd: end}
}

func protoPtr(p corev1.Protocol) *corev1.Protocol { return &p }
func i32(v int32) *int32                          { return &v }
func strPtr(s string) *string                     { return &s }

func slice(ns, name, svc string, addrs []string, ports ...discoveryv1.EndpointPort) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: ports,
	}
	for _, a := range addrs {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
	}
	return es
}

func service(ns, name, clusterIP string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: clusterIP, ClusterIPs: []string{clusterIP}, Ports: ports}}
}

func TestExpandEgress(t *testing.T) {
	dnsAddr := netip.MustParseAddr("169.254.20.10")
	x := expansion{dnsAddr: dnsAddr, dnsService: podKey{"kube-system", "kube-dns"}}
	setup := func(v *view) {
		// web: port "http" (80) targets 8080 on two pods; a second Service names the same pods' 9090.
		v.setService(podKey{"ns1", "web"}, service("ns1", "web", "172.20.0.10",
			corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http")},
			corev1.ServicePort{Name: "metrics", Protocol: corev1.ProtocolTCP, Port: 9000, TargetPort: intstr.FromInt(9090)}))
		v.setSlice(podKey{"ns1", "web-abc"}, slice("ns1", "web-abc", "web", []string{"10.1.0.1", "10.1.0.2"},
			discoveryv1.EndpointPort{Name: strPtr("http"), Protocol: protoPtr(corev1.ProtocolTCP), Port: i32(8080)},
			discoveryv1.EndpointPort{Name: strPtr("metrics"), Protocol: protoPtr(corev1.ProtocolTCP), Port: i32(9090)}))
		v.setService(podKey{"ns1", "headless"}, service("ns1", "headless", "None",
			corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}))
		v.setSlice(podKey{"ns1", "headless-x"}, slice("ns1", "headless-x", "headless", []string{"10.1.0.1"},
			discoveryv1.EndpointPort{Name: strPtr("http"), Protocol: protoPtr(corev1.ProtocolTCP), Port: i32(8080)}))
		v.setService(podKey{"kube-system", "kube-dns"}, service("kube-system", "kube-dns", "172.20.0.53",
			corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
			corev1.ServicePort{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53}))
		v.setSlice(podKey{"kube-system", "kube-dns-1"}, slice("kube-system", "kube-dns-1", "kube-dns", []string{"10.2.0.53"},
			discoveryv1.EndpointPort{Name: strPtr("dns"), Protocol: protoPtr(corev1.ProtocolUDP), Port: i32(53)},
			discoveryv1.EndpointPort{Name: strPtr("dns-tcp"), Protocol: protoPtr(corev1.ProtocolTCP), Port: i32(53)}))
	}
	tcp, udp := compute.ProtocolTCP, compute.ProtocolUDP
	for _, tc := range []struct {
		name string
		in   []compute.Entry
		want []compute.Entry // added to in
	}{
		{"pod on its target port gets the cluster IP on the service port",
			[]compute.Entry{entry("10.1.0.1/32", tcp, 8080, 8080)},
			[]compute.Entry{entry("172.20.0.10/32", tcp, 80, 80)}},
		{"another target port of the same pods maps to its own service port",
			[]compute.Entry{entry("10.1.0.2/32", tcp, 9000, 9100)},
			[]compute.Entry{entry("172.20.0.10/32", tcp, 9000, 9000)}},
		{"all ports of the pod: every service port",
			[]compute.Entry{entry("10.1.0.1/32", compute.ProtocolAny, 0, 0)},
			[]compute.Entry{entry("172.20.0.10/32", tcp, 80, 80), entry("172.20.0.10/32", tcp, 9000, 9000)}},
		{"a port the service does not target adds nothing",
			[]compute.Entry{entry("10.1.0.1/32", tcp, 443, 443)}, nil},
		{"the wrong protocol adds nothing",
			[]compute.Entry{entry("10.1.0.1/32", udp, 8080, 8080)}, nil},
		{"an ipBlock holding the pods counts too",
			[]compute.Entry{entry("10.1.0.0/24", tcp, 8080, 8080)},
			[]compute.Entry{entry("172.20.0.10/32", tcp, 80, 80)}},
		{"nothing is added where an entry already allows the cluster IP",
			[]compute.Entry{entry("0.0.0.0/0", compute.ProtocolAny, 0, 0)}, nil},
		{"DNS pods on UDP 53: cluster IP and node-local DNS on UDP 53",
			[]compute.Entry{entry("10.2.0.53/32", udp, 53, 53)},
			[]compute.Entry{entry("172.20.0.53/32", udp, 53, 53), entry("169.254.20.10/32", udp, 53, 53)}},
		{"DNS pods on both protocols",
			[]compute.Entry{entry("10.2.0.53/32", compute.ProtocolAny, 0, 0)},
			[]compute.Entry{entry("172.20.0.53/32", udp, 53, 53), entry("172.20.0.53/32", tcp, 53, 53),
				entry("169.254.20.10/32", udp, 53, 53), entry("169.254.20.10/32", tcp, 53, 53)}},
		{"DNS pods on another port: no node-local DNS",
			[]compute.Entry{entry("10.2.0.53/32", tcp, 80, 80)}, nil},
		{"an ipBlock of everything on port 53 also reaches node-local DNS (inside it already)",
			[]compute.Entry{entry("0.0.0.0/0", udp, 53, 53)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := testView(t)
			setup(v)
			got := v.expandEgress(compute.Direction{Isolated: true, Entries: compute.Normalize(tc.in)}, x)
			want := compute.Normalize(append(append([]compute.Entry{}, tc.in...), tc.want...))
			if !got.Isolated || !slices.Equal(got.Entries, want) {
				t.Errorf("expanded %v\nwant %v", got.Entries, want)
			}
		})
	}
	t.Run("not isolated stays open", func(t *testing.T) {
		v := testView(t)
		setup(v)
		if got := v.expandEgress(compute.Direction{}, x); got.Isolated || len(got.Entries) != 0 {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("slice changes reach pods allowing its endpoints", func(t *testing.T) {
		v := testView(t)
		setup(v)
		v.locals["if-a"].egress = compute.Direction{Isolated: true, Entries: []compute.Entry{entry("10.1.0.1/32", tcp, 8080, 8080)}}
		v.locals["if-b"].egress = compute.Direction{Isolated: true, Entries: []compute.Entry{entry("10.3.0.0/16", tcp, 0, 0)}}
		got := v.setSlice(podKey{"ns1", "web-abc"}, slice("ns1", "web-abc", "web", []string{"10.1.0.2", "10.3.0.9"})).sorted()
		if want := []string{"if-a", "if-b"}; !slices.Equal(got, want) {
			t.Errorf("affected %v, want %v", got, want)
		}
		got = v.setService(podKey{"ns1", "web"}, nil).sorted()
		if want := []string{"if-b"}; !slices.Equal(got, want) {
			t.Errorf("service delete affected %v, want %v", got, want)
		}
	})
}

func TestResetCluster(t *testing.T) {
	v := testView(t)
	v.setPolicy("ns1", "p", netpol("ns1", "p", sel()))
	v.resetCluster()
	if len(v.policies) != 0 || len(v.pods) != 0 || len(v.namespaces) != 0 || v.track {
		t.Errorf("cluster state survived: %d policies, %d pods, %d namespaces, track %v", len(v.policies), len(v.pods), len(v.namespaces), v.track)
	}
	if len(v.locals) != 3 || len(v.byPod) != 3 {
		t.Errorf("local pods lost: %d locals, %d by pod", len(v.locals), len(v.byPod))
	}
}
