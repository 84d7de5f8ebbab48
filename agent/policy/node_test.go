package policy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/autonode/autonode/agent/network/cni"
	"github.com/autonode/autonode/agent/network/cni/cnitest"
	"github.com/autonode/autonode/agent/network/cni/cniwire"
	netdatapath "github.com/autonode/autonode/agent/network/datapath"
	"github.com/autonode/autonode/agent/network/datapath/datapathtest"
	"github.com/autonode/autonode/agent/network/ipam"
	"github.com/autonode/autonode/agent/policy"
	"github.com/autonode/autonode/agent/policy/datapath"
	"github.com/autonode/autonode/sandbox/bpffs"
	"github.com/autonode/autonode/sandbox/privileged"
	"github.com/autonode/autonode/sandbox/testenv"
)

// repoRoot is the module root, from this package's folder.
const repoRoot = "../.."

// inNode runs the policy datapath's calls inside the test's node netns, where the pods' host veths live (the
// agent runs in the node's own netns, so it needs no such wrapper).
type inNode struct {
	ns *datapathtest.NS
	dp *datapath.Datapath
}

func (n inNode) Program(ctx context.Context, r datapath.PodRules) error {
	return n.ns.Do(func() error { return n.dp.Program(ctx, r) })
}
func (n inNode) Remove(ctx context.Context, hostIf string) error {
	return n.ns.Do(func() error { return n.dp.Remove(ctx, hostIf) })
}
func (n inNode) Reconcile(ctx context.Context, keep []string) error {
	return n.ns.Do(func() error { return n.dp.Reconcile(ctx, keep) })
}
func (n inNode) SetNodeAddresses(ctx context.Context, addrs []netip.Addr) error {
	return n.ns.Do(func() error { return n.dp.SetNodeAddresses(ctx, addrs) })
}
func (n inNode) Events(ctx context.Context) <-chan datapath.Event { return n.dp.Events(ctx) }
func (n inNode) Run(ctx context.Context) error                    { return n.dp.Run(ctx) }

// engineRef lets the CNI server reach whichever engine runs now (a restart swaps it).
type engineRef struct {
	mu sync.Mutex
	e  *policy.Engine
}

func (r *engineRef) get() *policy.Engine {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.e
}

func (r *engineRef) Attach(ctx context.Context, p cni.PodInfo) error {
	if r.get() == nil {
		return errors.New("the policy engine is down")
	}
	return r.get().Attach(ctx, policy.Pod{HostIf: p.HostIf, Namespace: p.Namespace, Name: p.Name, UID: p.UID, IP: p.IP})
}

func (r *engineRef) Detach(ctx context.Context, hostIf string) error {
	if r.get() == nil {
		return errors.New("the policy engine is down")
	}
	return r.get().Detach(ctx, hostIf)
}

// node is one test node: the netns VPC, pod networking through the CNI server, the policy datapath pinned in a
// private pin root, and the engine, reading a real kube-apiserver as the agent's RBAC user.
type node struct {
	t       testing.TB
	net     *datapathtest.Node
	alloc   *cnitest.Allocator
	srv     *cni.Server
	ref     *engineRef
	admin   kubernetes.Interface
	agent   kubernetes.Interface
	pinRoot string
	// reg holds the running engine's metrics.
	reg *prometheus.Registry

	// The running engine and its datapath.
	dp     *datapath.Datapath
	stop   context.CancelFunc
	done   chan error
	engine *policy.Engine
}

func newNode(t testing.TB) *node {
	t.Helper()
	return newNodeWith(t, netip.Prefix{})
}

// newNodeWith hands pods addresses from pods instead of the node's /26, for more than 60 pods.
func newNodeWith(t testing.TB, pods netip.Prefix) *node {
	t.Helper()
	privileged.Require(t, privileged.NetAdmin, privileged.BPF)
	env := testenv.Start(t, testenv.Options{RBACManifests: []string{filepath.Join(repoRoot, "deploy/rbac/agent.yaml")}})
	admin, err := kubernetes.NewForConfig(env.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	agent, err := kubernetes.NewForConfig(env.UserConfig(t, "system:node:policy-test", "autonode:agents"))
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, net: datapathtest.NewNode(t), admin: admin, agent: agent, ref: &engineRef{}, pinRoot: bpffs.PinRoot(t)}
	ndp, err := netdatapath.New(netdatapath.Options{NodeNetns: n.net.Path, PrimaryMAC: n.net.Primary.MAC, PrimaryIP: n.net.Primary.Addr,
		VPCCIDRs: []netip.Prefix{n.net.VPCCIDR}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ndp.Close() })
	if err := ndp.SetupNode(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !pods.IsValid() {
		pods = n.net.PodPrefix
	}
	n.alloc = cnitest.NewAllocator(pods, ipam.Allocation{ENI: "eni-primary", MAC: n.net.Primary.MAC, SubnetCIDR: n.net.Primary.Subnet})
	n.srv, err = cni.New(cni.Options{SocketPath: filepath.Join(t.TempDir(), "cni.sock"), Allocator: n.alloc, Datapath: ndp, Policy: n.ref})
	if err != nil {
		t.Fatal(err)
	}
	n.start()
	t.Cleanup(func() { n.kill() })
	return n
}

// start opens the datapath (adopting the pins) and runs a new engine, as the agent does at start.
func (n *node) start() {
	t := n.t
	t.Helper()
	var dp *datapath.Datapath
	err := n.net.Do(func() error {
		var err error
		dp, err = datapath.Open(context.Background(), datapath.Config{PinRoot: n.pinRoot, ConntrackSize: 65536, GCInterval: time.Second,
			Logger: slog.New(slog.DiscardHandler)})
		return err
	})
	if err != nil {
		t.Fatalf("opening the policy datapath: %v", err)
	}
	n.reg = prometheus.NewRegistry()
	// As the agent does: the engine's and the datapath's metrics side by side, so names must not clash.
	n.reg.MustRegister(dp.Collectors()...)
	e, err := policy.New(policy.Options{
		Registerer: n.reg,
		Client:     n.agent, Datapath: inNode{n.net.NS, dp}, Strict: true,
		NodeAddresses: policy.HostAddresses(n.net.Netlink(t)),
		Attachments: func() []policy.Pod {
			var out []policy.Pod
			for _, a := range n.alloc.List() {
				out = append(out, policy.Pod{HostIf: netdatapath.HostVethName(a.Key.ContainerID, a.Key.IfName),
					Namespace: a.Pod.Namespace, Name: a.Pod.Name, UID: a.Pod.UID, IP: a.Addr})
			}
			return out
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.dp, n.stop, n.done, n.engine = dp, cancel, make(chan error, 1), e
	n.ref.mu.Lock()
	n.ref.e = e
	n.ref.mu.Unlock()
	go func() { n.done <- e.Run(ctx) }()
	eventually(t, "the engine synced", func() bool { return e.Ready() == nil })
}

// kill stops the engine the way kill -9 stops the agent: nothing is cleaned up, the descriptors just close.
func (n *node) kill() {
	if n.stop == nil {
		return
	}
	n.stop()
	if err := <-n.done; err != nil {
		n.t.Errorf("engine Run: %v", err)
	}
	n.dp.Close()
	n.stop, n.engine = nil, nil
	n.ref.mu.Lock()
	n.ref.e = nil
	n.ref.mu.Unlock()
}

// pod is a netns pod attached through the CNI server.
type pod struct {
	ns          *datapathtest.NS
	namespace   string
	name        string
	containerID string
	ip          netip.Addr
}

func (n *node) namespace(name string, labels map[string]string) {
	n.t.Helper()
	_, err := n.admin.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		n.t.Fatal(err)
	}
}

// addPod creates the Pod object bound to this node, then runs CNI ADD as the kubelet would.
func (n *node) addPod(namespace, name string, labels map[string]string, ports ...corev1.ContainerPort) *pod {
	n.t.Helper()
	return n.addPodIn(n.net.NewPod(n.t), namespace, name, labels, ports...)
}

// addPodIn is addPod in an existing pod netns, which churn reuses so that the harness does not grow.
func (n *node) addPodIn(netns *datapathtest.NS, namespace, name string, labels map[string]string, ports ...corev1.ContainerPort) *pod {
	t := n.t
	t.Helper()
	ctx := context.Background()
	obj, err := n.admin.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: "policy-test-node", Containers: []corev1.Container{{Name: "c", Image: "pause", Ports: ports}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := &pod{ns: netns, namespace: namespace, name: name, containerID: "ctr-" + name + "-" + string(obj.UID)[:8]}
	p.ip = n.cniAdd(p, obj.UID)
	return p
}

func (n *node) cniAdd(p *pod, uid types.UID) netip.Addr {
	n.t.Helper()
	cfg, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "autonode", "type": "autonode-cni"})
	req := cniwire.Request{Command: "ADD", ContainerID: p.containerID, Netns: p.ns.Path, IfName: "eth0", Config: cfg,
		Args: fmt.Sprintf("K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_UID=%s", p.namespace, p.name, uid)}
	if r := n.srv.Handle(context.Background(), req); r.Error != nil {
		n.t.Fatalf("ADD %s/%s: %v", p.namespace, p.name, r.Error)
	}
	a, ok := n.alloc.Get(ipam.Key{ContainerID: p.containerID, IfName: "eth0"})
	if !ok {
		n.t.Fatalf("no allocation for %s", p.name)
	}
	return a.Addr
}

func (n *node) cniDel(p *pod) {
	n.t.Helper()
	cfg, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "autonode", "type": "autonode-cni"})
	req := cniwire.Request{Command: "DEL", ContainerID: p.containerID, Netns: p.ns.Path, IfName: "eth0", Config: cfg}
	if r := n.srv.Handle(context.Background(), req); r.Error != nil {
		n.t.Fatalf("DEL %s/%s: %v", p.namespace, p.name, r.Error)
	}
}

func (n *node) hostIf(p *pod) string { return netdatapath.HostVethName(p.containerID, "eth0") }

func (n *node) apply(pol *networkingv1.NetworkPolicy) {
	n.t.Helper()
	ctx := context.Background()
	c := n.admin.NetworkingV1().NetworkPolicies(pol.Namespace)
	old, err := c.Get(ctx, pol.Name, metav1.GetOptions{})
	if err == nil {
		pol.ResourceVersion = old.ResourceVersion
		_, err = c.Update(ctx, pol, metav1.UpdateOptions{})
	} else {
		_, err = c.Create(ctx, pol, metav1.CreateOptions{})
	}
	if err != nil {
		n.t.Fatalf("applying policy %s/%s: %v", pol.Namespace, pol.Name, err)
	}
}

func (n *node) deletePolicy(ns, name string) {
	n.t.Helper()
	if err := n.admin.NetworkingV1().NetworkPolicies(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		n.t.Fatal(err)
	}
}

// serve accepts TCP on port in p's netns and echoes until the test ends; it counts accepted connections.
func serve(t testing.TB, ns *datapathtest.NS, port int) *counter {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c := &counter{}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.inc()
			go func() { defer conn.Close(); _, _ = io.Copy(conn, conn) }()
		}
	}()
	return c
}

// serveUDP counts datagrams received on port in p's netns, and answers each.
func serveUDP(t testing.TB, ns *datapathtest.NS, port int) *counter {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c := &counter{}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			c.inc()
			_, _ = pc.WriteTo(buf[:n], addr)
		}
	}()
	return c
}

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) inc() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// dial connects from ns to addr, sends a line and reads it back: an allowed flow, replies included.
func dial(ns *datapathtest.NS, addr netip.AddrPort, timeout time.Duration) error {
	var conn net.Conn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", addr.String(), timeout)
		return err
	}); err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		return err
	}
	buf := make([]byte, 5)
	_, err := io.ReadFull(conn, buf)
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// expectFlow waits until a connection from ns to addr succeeds (allowed) or times out (denied): a denied SYN is
// dropped, never refused.
func expectFlow(t testing.TB, what string, ns *datapathtest.NS, addr netip.AddrPort, allowed bool) {
	t.Helper()
	var last error
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		last = dial(ns, addr, 400*time.Millisecond)
		if allowed && last == nil {
			return
		}
		if !allowed && isTimeout(last) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s (%s): want allowed=%v, last attempt: %v", what, addr, allowed, last)
}

func eventually(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s never happened", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// iptables runs iptables in the node netns.
func iptables(t testing.TB, n *node, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.net.Name, "iptables"}, args...)...).CombinedOutput()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			privileged.Missing(t, "iptables", err)
		}
		t.Fatalf("iptables %v: %v: %s", args, err, out)
	}
}

// rssKiB reads this process's resident set after a GC.
func rssKiB(t testing.TB) int {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		var kb int
		if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &kb); err == nil {
			return kb
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// heapKiB is the live heap after a GC.
func heapKiB() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc / 1024
}

// countPins counts the files (pins) below root.
func countPins(t testing.TB, root string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// mapEntries counts the entries of a pinned map: ap_pods has one per programmed pod, ap_rules one per pod and
// direction (each an inner map of its own).
func mapEntries(t testing.TB, pin string) int {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(pin, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("opening %s: %v", pin, err)
	}
	defer m.Close()
	n := 0
	it := m.Iterate()
	var k, v []byte
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterating %s: %v", pin, err)
	}
	return n
}

// stableEntries is mapEntries once two reads a second apart agree.
func stableEntries(t testing.TB, pin string) int {
	t.Helper()
	last := mapEntries(t, pin)
	for range 30 {
		time.Sleep(time.Second)
		n := mapEntries(t, pin)
		if n == last {
			return n
		}
		last = n
	}
	t.Fatalf("entries of %s never settled", pin)
	return 0
}

func dialTCP(addr netip.AddrPort) (net.Conn, error) {
	return net.DialTimeout("tcp4", addr.String(), 2*time.Second)
}

func ioReadFull(r io.Reader, buf []byte) (int, error) { return io.ReadFull(r, buf) }

// flood sends UDP datagrams from ns to addr every millisecond until stop closes, and returns how many it sent.
func flood(ns *datapathtest.NS, addr netip.AddrPort, stop <-chan struct{}) int {
	var conn net.Conn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.Dial("udp4", addr.String())
		return err
	}); err != nil {
		return 0
	}
	defer conn.Close()
	sent := 0
	for {
		select {
		case <-stop:
			return sent
		case <-time.After(time.Millisecond):
		}
		if _, err := conn.Write([]byte("denied?")); err == nil {
			sent++
		}
	}
}

func itoa(i int) string       { return strconv.Itoa(i) }
func strptr(s string) *string { return &s }
func int32ptr(v int32) *int32 { return &v }

// counterValue reads a counter of the running engine's metrics, 0 when absent.
func counterValue(n *node, name string, want map[string]string) float64 {
	mfs, err := n.reg.Gather()
	if err != nil {
		n.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := want[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
