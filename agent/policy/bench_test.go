package policy_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/autonode/autonode/agent/policy/compute"
)

// The cluster of the benchmarks: the max-pods cap of local pods, thousands of peers elsewhere, a thousand
// policies, spread over namespaces the way a shared cluster looks.
const (
	benchNamespaces = 50
	benchLocal      = 250  // 5 per namespace
	benchPeers      = 5000 // 100 per namespace, on other nodes
	benchPolicies   = 1000 // 20 per namespace
	benchApps       = 20
)

// benchCluster fills the apiserver and attaches the local pods; it returns them by namespace.
func benchCluster(b *testing.B, n *node) map[string][]*pod {
	b.Helper()
	ctx := context.Background()
	for i := range benchNamespaces {
		n.namespace(fmt.Sprintf("ns-%d", i), labels("team", fmt.Sprintf("team-%d", i%10)))
	}
	// Peers on other nodes, with their addresses in status as their kubelets would report.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for k := range benchPeers {
		g.Go(func() error {
			ns := fmt.Sprintf("ns-%d", k%benchNamespaces)
			p, err := n.admin.CoreV1().Pods(ns).Create(gctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("peer-%d", k),
					Labels: labels("app", fmt.Sprintf("app-%d", k%benchApps), "role", fmt.Sprintf("r-%d", k%5))},
				Spec: corev1.PodSpec{NodeName: fmt.Sprintf("other-%d", k%40), Containers: []corev1.Container{{Name: "c", Image: "x",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
			}, metav1.CreateOptions{})
			if err != nil {
				return err
			}
			p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.%d.%d.%d", 100+k/65536, (k/256)%256, k%256)}
			_, err = n.admin.CoreV1().Pods(ns).UpdateStatus(gctx, p, metav1.UpdateOptions{})
			return err
		})
	}
	for m := range benchPolicies {
		g.Go(func() error {
			ns := fmt.Sprintf("ns-%d", m%benchNamespaces)
			_, err := n.admin.NetworkingV1().NetworkPolicies(ns).Create(gctx, benchPolicy(ns, m/benchNamespaces, 8080), metav1.CreateOptions{})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	local := map[string][]*pod{}
	for j := range benchLocal {
		ns := fmt.Sprintf("ns-%d", j%benchNamespaces)
		p := n.addPod(ns, fmt.Sprintf("local-%d", j), labels("app", fmt.Sprintf("app-%d", j/benchNamespaces)))
		local[ns] = append(local[ns], p)
	}
	return local
}

// benchPolicy p-m selects app-m: from role r-(m%5) of its namespace and from the app's pods in team namespaces,
// on port; to the same app anywhere, and to DNS.
func benchPolicy(ns string, m, port int) *networkingv1.NetworkPolicy {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	p, dns := intstr.FromInt(port), intstr.FromInt(53)
	app := fmt.Sprintf("app-%d", m%benchApps)
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p-%d", m)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: *selector("app", app),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: selector("role", fmt.Sprintf("r-%d", m%5))},
					{NamespaceSelector: selector("team", fmt.Sprintf("team-%d", m%10)), PodSelector: selector("app", app)},
				},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p}},
			}},
			Egress: []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: selector("app", app)}}},
				{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &dns}}},
			},
		}}
}

// BenchmarkPolicyEngine measures, on a real apiserver and the BPF datapath, with 250 local pods, 5,000 peers and
// 1,000 policies: "change", from updating a policy to the selected pod's new rules being in its maps (p50, p99);
// "peer-ip", from a peer pod on another node reporting its address to that address being in a local pod's rules
// (the propagation window of a new pod, watch included); "memory", the engine's and datapath's heap.
func BenchmarkPolicyEngine(b *testing.B) {
	n := newNodeWith(b, netip.MustParsePrefix("100.64.0.0/22"))
	local := benchCluster(b, n)
	// The local pod selected by p-m in ns-0 is local-(m*50): local-0 is app-0, selected by p-0.
	target, ns := local["ns-0"][0], "ns-0"
	hostIf := n.hostIf(target)
	ingressPorts := func() []uint16 {
		r, err := n.dp.Dump(hostIf)
		if err != nil {
			return nil
		}
		var ports []uint16
		for _, e := range r.Ingress.Entries {
			ports = append(ports, e.PortStart)
		}
		return ports
	}
	eventually(b, "the local pod's rules", func() bool { return len(ingressPorts()) > 0 })

	b.Run("change", func(b *testing.B) {
		var ds, applied []time.Duration
		port := 8080
		for b.Loop() {
			port++
			start := time.Now()
			n.apply(benchPolicy(ns, 0, port))
			applied = append(applied, time.Since(start))
			for !slices.Contains(ingressPorts(), uint16(port)) {
				if time.Since(start) > 30*time.Second {
					b.Fatalf("port %d never reached %s", port, hostIf)
				}
				time.Sleep(time.Millisecond)
			}
			ds = append(ds, time.Since(start))
		}
		reportPercentiles(b, ds)
		// The apiserver's share: reading and updating the policy, before any watch event.
		slices.Sort(applied)
		b.ReportMetric(float64(applied[len(applied)/2].Microseconds())/1000, "write-p50-ms")
		b.ReportMetric(float64(applied[min(len(applied)-1, len(applied)*99/100)].Microseconds())/1000, "write-p99-ms")
	})

	peerSeq := 0
	b.Run("peer-ip", func(b *testing.B) {
		ctx := context.Background()
		var ds []time.Duration
		for b.Loop() {
			peerSeq++ // names and addresses stay unique across -count runs
			i := peerSeq
			// A new pod on another node that p-0's ingress selects (role r-0 in ns-0).
			p, err := n.admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("new-peer-%d", i), Labels: labels("role", "r-0")},
				Spec:       corev1.PodSpec{NodeName: "other-node", Containers: []corev1.Container{{Name: "c", Image: "x"}}},
			}, metav1.CreateOptions{})
			if err != nil {
				b.Fatal(err)
			}
			ip := fmt.Sprintf("10.200.%d.%d", i/256%256, i%256)
			p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip}
			start := time.Now()
			if _, err := n.admin.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
				b.Fatal(err)
			}
			for !hasPeer(n, hostIf, ip) {
				if time.Since(start) > 30*time.Second {
					b.Fatalf("peer %s never reached %s", ip, hostIf)
				}
				time.Sleep(time.Millisecond)
			}
			ds = append(ds, time.Since(start))
		}
		reportPercentiles(b, ds)
	})

	b.Run("memory", func(b *testing.B) {
		// Measured once: a restart with this cluster takes seconds.
		with := heapKiB()
		n.kill()
		without := heapKiB()
		n.start()
		for b.Loop() {
		}
		b.ReportMetric(float64(with-without)/1024, "engine-heap-MiB")
		b.ReportMetric(float64(benchLocal), "local-pods")
		b.ReportMetric(float64(benchPeers), "peers")
		b.ReportMetric(float64(benchPolicies), "policies")
	})
}

func hasPeer(n *node, hostIf, ip string) bool {
	r, err := n.dp.Dump(hostIf)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(r.Ingress.Entries, func(e compute.Entry) bool { return e.CIDR.Addr().String() == ip })
}

func reportPercentiles(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	pct := func(p float64) float64 {
		return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(len(ds)), "samples")
}
