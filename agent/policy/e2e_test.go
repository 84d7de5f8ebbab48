package policy_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/autonode/autonode/agent/network/datapath/datapathtest"
)

func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func selector(kv ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: labels(kv...)}
}

func tcpPort(p intstr.IntOrString) networkingv1.NetworkPolicyPort {
	proto := corev1.ProtocolTCP
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p}
}

// TestPrivilegedTraffic drives real packets between netns pods wired by the CNI server, with policies from a real
// kube-apiserver enforced by the BPF datapath: default deny, allow by pod and by named port, egress with replies,
// changes and deletes, node-to-pod under deny, and a Service reached through a DNAT rule standing in for kube-proxy.
func TestPrivilegedTraffic(t *testing.T) {
	n := newNode(t)
	n.namespace("shop", labels("team", "shop"))
	n.namespace("other", labels("team", "other"))
	web := n.addPod("shop", "web", labels("app", "web"), corev1.ContainerPort{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP})
	client := n.addPod("shop", "client", labels("app", "client"))
	stranger := n.addPod("other", "stranger", labels("app", "client"))
	serve(t, web.ns, 8080)
	serve(t, web.ns, 9090)
	serve(t, client.ns, 7070)
	webHTTP, webOther := netip.AddrPortFrom(web.ip, 8080), netip.AddrPortFrom(web.ip, 9090)

	// No policy selects anything: all open.
	expectFlow(t, "no policy", client.ns, webHTTP, true)
	expectFlow(t, "no policy, other namespace", stranger.ns, webOther, true)

	// Default deny ingress for web.
	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *selector("app", "web"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	n.apply(deny)
	expectFlow(t, "default deny", client.ns, webHTTP, false)
	// The drop came back through the ring buffer as a flow event, attributed to the isolating policy.
	eventually(t, "a deny event counted for shop/web and policy web", func() bool {
		return counterValue(n, "autonode_policy_flow_verdicts_total", map[string]string{"verdict": "deny", "direction": "ingress", "pod": "shop/web", "policy": "web"}) > 0
	})
	expectFlow(t, "node to pod under default deny", n.net.NS, webHTTP, true)

	// Allow clients of this namespace, on the named port only.
	allow := deny.DeepCopy()
	allow.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
		From:  []networkingv1.NetworkPolicyPeer{{PodSelector: selector("app", "client")}},
		Ports: []networkingv1.NetworkPolicyPort{tcpPort(intstr.FromString("http"))},
	}}
	n.apply(allow)
	expectFlow(t, "allowed client on the named port", client.ns, webHTTP, true)
	expectFlow(t, "allowed client on another port", client.ns, webOther, false)
	expectFlow(t, "same labels, other namespace", stranger.ns, webHTTP, false)

	// Change: clients of any namespace labelled team=other, on every port.
	allow.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: selector("team", "other"), PodSelector: selector("app", "client")}},
	}}
	n.apply(allow)
	expectFlow(t, "after the change, the other namespace", stranger.ns, webOther, true)
	expectFlow(t, "after the change, the own namespace", client.ns, webHTTP, false)

	// Egress of client: only web's http, and nothing comes in; replies to its own connections still pass.
	egress := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "client"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: *selector("app", "client"),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To: []networkingv1.NetworkPolicyPeer{{PodSelector: selector("app", "web")}}, Ports: []networkingv1.NetworkPolicyPort{tcpPort(intstr.FromInt(8080))},
			}},
		}}
	n.apply(egress)
	n.deletePolicy("shop", "web")
	expectFlow(t, "allowed egress, reply through isolated ingress", client.ns, webHTTP, true)
	expectFlow(t, "egress to a port not allowed", client.ns, webOther, false)
	expectFlow(t, "ingress to the isolated client", web.ns, netip.AddrPortFrom(client.ip, 7070), false)
	expectFlow(t, "node to the isolated client", n.net.NS, netip.AddrPortFrom(client.ip, 7070), true)

	// A Service in front of web: the client reaches it through the ClusterIP, which kube-proxy would DNAT.
	ctx := context.Background()
	clusterIP := netip.MustParseAddr("10.0.0.80") // in envtest's service range, 10.0.0.0/24
	_, err := n.admin.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{ClusterIP: clusterIP.String(), Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
			{Name: "admin", Port: 90, TargetPort: intstr.FromInt(9090), Protocol: corev1.ProtocolTCP},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := true
	tcp := corev1.ProtocolTCP
	_, err = n.admin.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{web.ip.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports: []discoveryv1.EndpointPort{
			{Name: strptr("http"), Port: int32ptr(8080), Protocol: &tcp},
			{Name: strptr("admin"), Port: int32ptr(9090), Protocol: &tcp},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]string{{"80", "8080"}, {"90", "9090"}} {
		iptables(t, n, "-t", "nat", "-A", "PREROUTING", "-d", clusterIP.String(), "-p", "tcp", "--dport", r[0],
			"-j", "DNAT", "--to-destination", web.ip.String()+":"+r[1])
	}
	expectFlow(t, "egress through the Service to an allowed target port", client.ns, netip.AddrPortFrom(clusterIP, 80), true)
	expectFlow(t, "egress through the Service to a target port not allowed", client.ns, netip.AddrPortFrom(clusterIP, 90), false)
	expectFlow(t, "a pod no policy selects reaches both", stranger.ns, netip.AddrPortFrom(clusterIP, 90), true)

	// Deleting the policies opens everything again.
	n.deletePolicy("shop", "client")
	expectFlow(t, "after delete", client.ns, webOther, true)
	expectFlow(t, "after delete, into the client", web.ns, netip.AddrPortFrom(client.ip, 7070), true)

	// DEL removes the pod's state.
	n.cniDel(stranger)
	if _, err := n.dp.Dump(n.hostIf(stranger)); err == nil {
		t.Errorf("pod %s still programmed after DEL", stranger.name)
	}
}

// TestPrivilegedRestart kills the engine (as kill -9 would: no cleanup, descriptors closed) and starts a new one
// on the same pins, while a long-lived allowed TCP flow exchanges messages and a denied peer keeps sending UDP:
// not one denied datagram may arrive, and the allowed flow must not break.
func TestPrivilegedRestart(t *testing.T) {
	n := newNode(t)
	n.namespace("app", nil)
	server := n.addPod("app", "server", labels("app", "server"))
	friend := n.addPod("app", "friend", labels("role", "friend"))
	foe := n.addPod("app", "foe", labels("role", "foe"))
	serve(t, server.ns, 8080)
	denied := serveUDP(t, server.ns, 5353)
	n.apply(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "server"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *selector("app", "server"), Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: selector("role", "friend")}},
		}}}})
	addr := netip.AddrPortFrom(server.ip, 8080)
	expectFlow(t, "friend allowed", friend.ns, addr, true)
	expectFlow(t, "foe denied", foe.ns, addr, false)
	if got := denied.get(); got != 0 {
		t.Fatalf("%d denied datagrams arrived before the probes even started", got)
	}

	// The long-lived flow, opened before the restart.
	var conn interface {
		Write([]byte) (int, error)
		Read([]byte) (int, error)
		SetDeadline(time.Time) error
		Close() error
	}
	if err := friend.ns.Do(func() error {
		c, err := dialTCP(addr)
		conn = c
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	stopProbes := make(chan struct{})
	flowErr := make(chan error, 1)
	exchanged := 0
	go func() {
		buf := make([]byte, 4)
		for {
			select {
			case <-stopProbes:
				flowErr <- nil
				return
			case <-time.After(10 * time.Millisecond):
			}
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := conn.Write([]byte("tick")); err != nil {
				flowErr <- err
				return
			}
			if _, err := ioReadFull(conn, buf); err != nil {
				flowErr <- err
				return
			}
			exchanged++
		}
	}()
	sent := make(chan int, 1)
	go func() { sent <- flood(foe.ns, netip.AddrPortFrom(server.ip, 5353), stopProbes) }()

	time.Sleep(300 * time.Millisecond)
	for range 3 {
		n.kill()
		time.Sleep(100 * time.Millisecond) // the agent is down: pinned programs enforce alone
		n.start()
		time.Sleep(200 * time.Millisecond)
	}
	close(stopProbes)
	if err := <-flowErr; err != nil {
		t.Errorf("the allowed long-lived flow broke across restarts after %d exchanges: %v", exchanged, err)
	}
	total := <-sent
	if got := denied.get(); got != 0 {
		t.Errorf("%d of %d denied datagrams passed during the restarts", got, total)
	}
	if total < 100 {
		t.Errorf("only %d denied datagrams were sent: the probe did not run", total)
	}
	t.Logf("3 restarts: %d allowed exchanges, %d denied datagrams sent, %d passed", exchanged, total, denied.get())
	expectFlow(t, "friend still allowed after restarts", friend.ns, addr, true)
	expectFlow(t, "foe still denied after restarts", foe.ns, addr, false)
}

// TestPrivilegedChurn runs 500 ADD/DEL cycles of pods selected by a policy and checks that pins, programmed pods
// and the process's RSS come back to where they were.
func TestPrivilegedChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("churn is long")
	}
	n := newNode(t)
	n.namespace("churn", nil)
	n.apply(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "churn", Name: "p"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{}, Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}},
		}}}})
	steady := n.addPod("churn", "steady", labels("app", "steady"))
	netns := []*datapathtest.NS{n.net.NewPod(t), n.net.NewPod(t), n.net.NewPod(t), n.net.NewPod(t)}
	cycle := func(i int) {
		p := n.addPodIn(netns[i%len(netns)], "churn", "pod-"+itoa(i), labels("app", "churn"))
		n.cniDel(p)
		if err := n.admin.CoreV1().Pods("churn").Delete(context.Background(), p.name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 { // warm up caches, allocators and the runtime's pools
		cycle(i)
	}
	settled := func() {
		t.Helper()
		eventually(t, "the steady pod's rules settle", func() bool {
			r, err := n.dp.Dump(n.hostIf(steady))
			return err == nil && len(r.Ingress.Entries) == 1
		})
	}
	settled()
	podsPin, rulesPin := filepath.Join(n.pinRoot, "maps", "ap_pods"), filepath.Join(n.pinRoot, "maps", "ap_rules")
	// Replaced rules are deleted after an RCU grace period: count once that has passed.
	rulesBefore := stableEntries(t, rulesPin)
	pinsBefore, podsBefore, rssBefore := countPins(t, n.pinRoot), mapEntries(t, podsPin), rssKiB(t)
	heapBefore, goBefore := heapKiB(), runtime.NumGoroutine()
	for i := 100; i < 600; i++ {
		cycle(i)
	}
	settled()
	rulesAfter := stableEntries(t, rulesPin)
	pinsAfter, podsAfter, rssAfter := countPins(t, n.pinRoot), mapEntries(t, podsPin), rssKiB(t)
	t.Logf("pins %d -> %d, pods %d -> %d, rule entries %d -> %d, RSS %d -> %d KiB, heap %d -> %d KiB, goroutines %d -> %d",
		pinsBefore, pinsAfter, podsBefore, podsAfter, rulesBefore, rulesAfter, rssBefore, rssAfter, heapBefore, heapKiB(), goBefore, runtime.NumGoroutine())
	if pinsAfter != pinsBefore || podsAfter != podsBefore || rulesAfter != rulesBefore {
		t.Errorf("pins, pods, rule entries: %d, %d, %d before the churn; %d, %d, %d after",
			pinsBefore, podsBefore, rulesBefore, pinsAfter, podsAfter, rulesAfter)
	}
	if float64(rssAfter) > 1.10*float64(rssBefore) {
		t.Errorf("RSS grew from %d to %d KiB over 500 cycles (more than 10%%)", rssBefore, rssAfter)
	}
}

// TestPrivilegedOddPolicies applies odd but valid policies to one pod and checks real traffic against the spec:
// an except inside its CIDR, overlapping ipBlocks are a union, an empty podSelector peer means the
// policy's namespace, a named port that no pod has allows nothing (the pod stays isolated), and an ingress rule
// with neither from nor ports allows everyone.
func TestPrivilegedOddPolicies(t *testing.T) {
	n := newNode(t)
	n.namespace("odd", nil)
	n.namespace("away", nil)
	web := n.addPod("odd", "web", labels("app", "web"))
	near := n.addPod("odd", "near", labels("app", "near"))
	far := n.addPod("away", "far", labels("app", "far"))
	serve(t, web.ns, 8080)
	addr := netip.AddrPortFrom(web.ip, 8080)
	host := func(a netip.Addr) string { return netip.PrefixFrom(a, 32).String() }
	policy := func(rules ...networkingv1.NetworkPolicyIngressRule) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "odd", Name: "web"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: *selector("app", "web"),
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}, Ingress: rules}}
	}
	for _, tc := range []struct {
		name      string
		pol       *networkingv1.NetworkPolicy
		near, far bool
	}{
		// The apiserver rejects an except outside or equal to its CIDR ("must be a strict subset"); compute's
		// tables cover those. An except inside takes out exactly that part:
		{"except inside the CIDR", policy(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: n.net.PodPrefix.String(), Except: []string{host(near.ip)}}}}}), false, true},
		{"overlapping ipBlocks are a union", policy(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{host(near.ip), host(far.ip)}}},
			{IPBlock: &networkingv1.IPBlock{CIDR: host(far.ip)}}}}), false, true},
		{"an empty podSelector peer is the policy's namespace", policy(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{
			{PodSelector: &metav1.LabelSelector{}}}}), true, false},
		{"an empty namespaceSelector peer is every namespace", policy(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: &metav1.LabelSelector{}}}}), true, true},
		{"a named port no pod has allows nothing", policy(networkingv1.NetworkPolicyIngressRule{
			Ports: []networkingv1.NetworkPolicyPort{tcpPort(intstr.FromString("nope"))}}), false, false},
		{"a rule with neither from nor ports allows everyone", policy(networkingv1.NetworkPolicyIngressRule{}), true, true},
		{"no rules at all denies everyone", policy(), false, false},
	} {
		n.apply(tc.pol) // the node's helpers fail the top-level test, so no subtests
		expectFlow(t, tc.name+": from odd/near", near.ns, addr, tc.near)
		expectFlow(t, tc.name+": from away/far", far.ns, addr, tc.far)
		expectFlow(t, tc.name+": from the node", n.net.NS, addr, true)
	}
}
