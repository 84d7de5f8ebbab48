package localnode

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"

	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/autonode/autonode/agent/network/datapath"
	"github.com/autonode/autonode/sandbox/netnsutil"
	"github.com/autonode/autonode/sandbox/privileged"
	"github.com/autonode/autonode/sandbox/testenv"
)

// TestSandboxPodGetsVPCAddress is the pod-networking issue's "done": a netns
// pod, wired by the built autonode-cni through the agent running on the
// sandbox node, gets an address of the primary ENI from the emulated VPC and
// talks to the node.
func TestSandboxPodGetsVPCAddress(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.NetAdmin, privileged.APIServer)
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	cniBin := testenv.CNIBinary(t)
	ctx := context.Background()
	node, err := Up(ctx, Options{AgentBinary: testenv.AgentBinary(t), AssetsDir: assets, StateDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	t.Cleanup(func() { node.Close() })
	waitReady(t, node)

	podNS := fmt.Sprintf("anpod-%08x", rand.Uint32())
	t.Cleanup(func() { _ = netnsutil.DeleteNamed(podNS) })
	pod, err := netnsutil.NewNamed(podNS)
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()

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
	rt := &libcni.RuntimeConf{ContainerID: "sandbox-pod-" + podNS, NetNS: filepath.Join(netnsutil.RunDir, podNS), IfName: "eth0"}
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
			t.Fatalf("ADD: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Cleanup(func() { _ = cni.DelNetworkList(ctx, list, rt) })
	if len(res.IPs) != 1 {
		t.Fatalf("ADD result %v, want one address", res)
	}
	podAddr, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())

	// The address belongs to the instance's primary ENI in the VPC model.
	inst, err := node.Model.Instance(node.InstanceID)
	if err != nil {
		t.Fatal(err)
	}
	eni, err := node.Model.ENI(inst.ENIIDs[0])
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ip := range eni.PrivateIPs {
		found = found || (ip.Address == podAddr && !ip.Primary)
	}
	if !found {
		t.Errorf("pod address %s is not a secondary address of %s: %v", podAddr, eni.ID, eni.PrivateIPs)
	}

	// Real packets: the pod reaches the node's primary address.
	var ln net.Listener
	if err := netnsutil.Do(node.ns, func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(inst.PrivateIP, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- err.Error()
			return
		}
		accepted <- c.RemoteAddr().String()
		c.Close()
	}()
	if err := netnsutil.Do(pod, func() error {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatalf("pod %s to node %s: %v", podAddr, ln.Addr(), err)
	}
	if from := <-accepted; netip.MustParseAddrPort(from).Addr() != podAddr {
		t.Errorf("node saw the connection from %s, want the pod's own address %s", from, podAddr)
	}

	if err := cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
}

// waitReady waits for the agent's /readyz.
func waitReady(t *testing.T, node *Node) {
	t.Helper()
	httpc := node.AgentHTTPClient()
	deadline := time.Now().Add(90 * time.Second)
	for {
		code, body, err := get(httpc, AgentStatusURL("/readyz")+"?verbose")
		if err == nil && code == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready: %d %q %v", code, body, err)
		}
		select {
		case <-node.AgentExited():
			t.Fatalf("agent exited: %v", node.AgentErr())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestSandboxPodsSurviveAgentKill kills the agent with SIGKILL while a pod
// churns, restarts it, and checks that the live pods keep their addresses
// and wiring and that, once everything is deleted, nothing is left: no host
// veths, no policy rules, no allocations in the checkpoint.
func TestSandboxPodsSurviveAgentKill(t *testing.T) {
	privileged.Require(t, privileged.Root, privileged.NetAdmin, privileged.APIServer)
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
	t.Cleanup(func() { node.Close() })
	waitReady(t, node)

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
	newPod := func() *libcni.RuntimeConf {
		name := fmt.Sprintf("anpod-%08x", rand.Uint32())
		t.Cleanup(func() { _ = netnsutil.DeleteNamed(name) })
		ns, err := netnsutil.NewNamed(name)
		if err != nil {
			t.Fatal(err)
		}
		ns.Close()
		return &libcni.RuntimeConf{ContainerID: "ctr-" + name, NetNS: filepath.Join(netnsutil.RunDir, name), IfName: "eth0"}
	}
	// retry does what a runtime does while the agent is down (CNI error 11)
	// or the warm pool is filling: try again.
	retry := func(what string, op func() error) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			err := op()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %v", what, err)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	add := func(rt *libcni.RuntimeConf) netip.Addr {
		var addr netip.Addr
		retry("ADD "+rt.ContainerID, func() error {
			r, err := cni.AddNetworkList(ctx, list, rt)
			if err != nil {
				return err
			}
			res, err := current.NewResultFromResult(r)
			if err != nil {
				return err
			}
			addr, _ = netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
			return nil
		})
		return addr
	}
	del := func(rt *libcni.RuntimeConf) {
		retry("DEL "+rt.ContainerID, func() error { return cni.DelNetworkList(ctx, list, rt) })
	}

	live := []*libcni.RuntimeConf{newPod(), newPod()}
	addrs := make([]netip.Addr, len(live))
	for i, rt := range live {
		addrs[i] = add(rt)
	}
	churnPod := newPod()
	for cycle := range 4 {
		add(churnPod)
		if cycle == 1 {
			// Killed while the churning pod is attached and its DEL is due.
			node.KillAgent()
			// While it is down, the plugin says "try again later" (11).
			if err := cni.DelNetworkList(ctx, list, churnPod); err == nil || !strings.Contains(err.Error(), "unreachable") {
				t.Errorf("DEL with the agent down = %v, want the agent reported unreachable", err)
			}
			if err := node.RestartAgent(); err != nil {
				t.Fatal(err)
			}
			waitReady(t, node)
		}
		del(churnPod)
	}

	for i, rt := range live {
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			t.Errorf("CHECK of live pod %s after the crash: %v", rt.ContainerID, err)
		}
		if again := add(rt); again != addrs[i] { // ADD is idempotent: same key, same address
			t.Errorf("live pod %s had %s before the crash and %s after", rt.ContainerID, addrs[i], again)
		}
	}
	for _, rt := range live {
		del(rt)
	}

	// Nothing left: host veths, policy rules, allocations.
	var veths, rules int
	if err := netnsutil.Do(node.ns, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "an") {
				veths++
			}
		}
		rs, err := netlink.RuleList(netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Priority == datapath.ToPodRulePriority || r.Priority == datapath.FromPodRulePriority {
				rules++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if veths+rules != 0 {
		t.Errorf("after deleting every pod: %d host veths and %d rules left", veths, rules)
	}
	data, err := os.ReadFile(filepath.Join(stateDir, "agent-state", "ipam-checkpoint.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cp struct {
		Allocations []json.RawMessage `json:"allocations"`
	}
	if err := json.Unmarshal(data, &cp); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	if len(cp.Allocations) != 0 {
		t.Errorf("after deleting every pod the checkpoint holds %d allocations: %s", len(cp.Allocations), data)
	}
}
