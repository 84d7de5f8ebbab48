package localnode

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	netdatapath "github.com/autonode/autonode/agent/network/datapath"
	"github.com/autonode/autonode/sandbox/netnsutil"
	"github.com/autonode/autonode/sandbox/privileged"
	"github.com/autonode/autonode/sandbox/testenv"
)

// TestSandboxPolicySurvivesAgentKill is the NetworkPolicy issue's restart test, literally: the real agent binary
// on the sandbox node enforces a policy on two netns pods wired by autonode-cni; under continuous probes (a
// long-lived allowed TCP flow exchanging data every few milliseconds, a flood of denied UDP datagrams counted at
// the receiver) the agent is killed with SIGKILL, left down while the probes go on, and started again, three
// times. Not one denied datagram may arrive, the allowed flow must not break, and each new agent must adopt the
// pinned links (they run its programs once it is ready).
func TestSandboxPolicySurvivesAgentKill(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.NetAdmin, privileged.BPF, privileged.APIServer)
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	cniBin := testenv.CNIBinary(t)
	ctx := context.Background()
	stateDir := t.TempDir()
	node, err := Up(ctx, Options{AgentBinary: testenv.AgentBinary(t), AssetsDir: assets, StateDir: stateDir})
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	t.Cleanup(func() {
		node.Close()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(stateDir, "agent.log"))
			t.Logf("agent log:\n%s", log)
		}
	})
	waitReady(t, node)

	const namespace = "restart"
	if _, err := node.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	conf, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "autonode",
		"plugins": []map[string]any{{"type": "autonode-cni", "agentSocket": node.CNISocket()}}})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{filepath.Dir(cniBin)}, t.TempDir(), nil)
	type pod struct {
		ns     netns.NsHandle
		hostIf string
		ip     netip.Addr
	}
	// addPod creates the Pod bound to the node, then runs ADD through autonode-cni as the kubelet would.
	addPod := func(name string, labels map[string]string) pod {
		t.Helper()
		obj, err := node.Client.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec:       corev1.PodSpec{NodeName: node.InstanceID, Containers: []corev1.Container{{Name: "c", Image: "pause"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nsName := fmt.Sprintf("anpod-%08x", rand.Uint32())
		t.Cleanup(func() { _ = netnsutil.DeleteNamed(nsName) })
		ns, err := netnsutil.NewNamed(nsName)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Close() })
		rt := &libcni.RuntimeConf{ContainerID: "ctr-" + nsName, NetNS: filepath.Join(netnsutil.RunDir, nsName), IfName: "eth0",
			Args: [][2]string{{"K8S_POD_NAMESPACE", namespace}, {"K8S_POD_NAME", name}, {"K8S_POD_UID", string(obj.UID)}}}
		var res *current.Result
		deadline := time.Now().Add(60 * time.Second)
		for {
			r, err := cni.AddNetworkList(ctx, list, rt)
			if err == nil {
				if res, err = current.NewResultFromResult(r); err != nil {
					t.Fatal(err)
				}
				break
			}
			if time.Now().After(deadline) { // the warm pool may still be filling
				t.Fatalf("ADD %s: %v", name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Cleanup(func() { _ = cni.DelNetworkList(ctx, list, rt) })
		ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
		return pod{ns: ns, hostIf: netdatapath.HostVethName(rt.ContainerID, rt.IfName), ip: ip}
	}
	server := addPod("server", map[string]string{"app": "server"})
	client := addPod("client", map[string]string{"app": "client"})

	// The server echoes TCP on 8080 and counts UDP datagrams on 5353 by payload: the flood's apart from the checks
	// that wait for the policy.
	var tcpLn net.Listener
	var udp net.PacketConn
	if err := netnsutil.Do(server.ns, func() error {
		var err error
		if tcpLn, err = net.Listen("tcp4", ":8080"); err != nil {
			return err
		}
		udp, err = net.ListenPacket("udp4", ":5353")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcpLn.Close(); udp.Close() })
	go func() {
		for {
			c, err := tcpLn.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	var floodArrived, checksArrived atomic.Int64
	go func() {
		buf := make([]byte, 64)
		for {
			n, _, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) == "flood" {
				floodArrived.Add(1)
			} else {
				checksArrived.Add(1)
			}
		}
	}()
	var udpConn net.Conn
	if err := netnsutil.Do(client.ns, func() error {
		var err error
		udpConn, err = net.Dial("udp4", netip.AddrPortFrom(server.ip, 5353).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udpConn.Close() })

	// Before any policy the UDP flow passes: the receiver and the check work.
	waitUDP := func(arrives bool) {
		t.Helper()
		misses := 0
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			before := checksArrived.Load()
			if _, err := udpConn.Write([]byte("check")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			got := checksArrived.Load() > before
			if got && arrives {
				return
			}
			if got {
				misses = 0
			} else {
				misses++
			}
			if !arrives && misses >= 5 {
				return
			}
		}
		t.Fatalf("UDP from the client to the server: want arriving=%v", arrives)
	}
	waitUDP(true)

	// Ingress to the server: the client on TCP 8080 only, so its UDP is denied.
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(8080)
	if _, err := node.Client.NetworkingV1().NetworkPolicies(namespace).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "server"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUDP(false)

	// The long-lived allowed flow, opened under the policy.
	var conn net.Conn
	if err := netnsutil.Do(client.ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(server.ip, 8080).String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("the allowed flow: %v", err)
	}
	t.Cleanup(func() { conn.Close() })

	stop := make(chan struct{})
	var exchanged, sent atomic.Int64
	flowErr := make(chan error, 1)
	go func() {
		out, in := []byte("tick"), make([]byte, 4)
		for {
			select {
			case <-stop:
				flowErr <- nil
				return
			case <-time.After(5 * time.Millisecond):
			}
			// Generous: a break, not a slow exchange, fails the test.
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := conn.Write(out); err != nil {
				flowErr <- fmt.Errorf("write: %w", err)
				return
			}
			if _, err := io.ReadFull(conn, in); err != nil {
				flowErr <- fmt.Errorf("read: %w", err)
				return
			}
			exchanged.Add(1)
		}
	}()
	floodDone := make(chan struct{})
	go func() {
		defer close(floodDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := udpConn.Write([]byte("flood")); err == nil {
				sent.Add(1)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	stopProbes := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}
	t.Cleanup(stopProbes)

	linkPin := filepath.Join(node.PolicyPinRoot(), "links", server.hostIf+"_to_pod")
	// progress waits until both probes have gone on by some rounds: the allowed flow is carried, not merely
	// buffered until a later agent, and the denied flood keeps knocking.
	progress := func(what string) {
		t.Helper()
		ex, sn := exchanged.Load(), sent.Load()
		for deadline := time.Now().Add(10 * time.Second); exchanged.Load() < ex+20 || sent.Load() < sn+200; {
			if time.Now().After(deadline) {
				t.Errorf("%s: the probes stalled: %d allowed exchanges and %d denied datagrams in 10s",
					what, exchanged.Load()-ex, sent.Load()-sn)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	progress("before the first kill")
	const restarts = 3
	for i := range restarts {
		before := linkProgram(t, linkPin)
		node.KillAgent()
		// The agent is down: the pinned programs enforce alone.
		progress(fmt.Sprintf("agent down after kill %d", i+1))
		if down := linkProgram(t, linkPin); down != before {
			t.Errorf("kill %d: the pinned link runs program %d with the agent down, want %d", i+1, down, before)
		}
		if err := node.RestartAgent(); err != nil {
			t.Fatal(err)
		}
		waitReady(t, node)
		// Adopted: the pinned link now runs the new agent's program.
		if after := linkProgram(t, linkPin); after == before {
			t.Errorf("restart %d: the pinned link still runs program %d, want the new agent's", i+1, before)
		}
		progress(fmt.Sprintf("after restart %d", i+1))
	}
	stopProbes()
	<-floodDone
	if err := <-flowErr; err != nil {
		t.Errorf("the allowed long-lived flow broke across %d kills after %d exchanges: %v", restarts, exchanged.Load(), err)
	}
	// Give datagrams in flight time to land before counting.
	time.Sleep(200 * time.Millisecond)
	if got := floodArrived.Load(); got != 0 {
		t.Errorf("%d of %d denied datagrams arrived across %d kills", got, sent.Load(), restarts)
	}
	if sent.Load() < 1000 || exchanged.Load() < 100 {
		t.Errorf("the probes barely ran: %d denied datagrams sent, %d allowed exchanges", sent.Load(), exchanged.Load())
	}
	t.Logf("%d kills: %d allowed exchanges, %d denied datagrams sent, %d arrived", restarts, exchanged.Load(), sent.Load(), floodArrived.Load())
}

// linkProgram is the id of the program a pinned link runs.
func linkProgram(t *testing.T, pin string) ebpf.ProgramID {
	t.Helper()
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		t.Fatalf("loading pinned link: %v", err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatalf("link info of %s: %v", pin, err)
	}
	if info.Program == 0 {
		t.Fatalf("pinned link %s runs no program", pin)
	}
	return info.Program
}
