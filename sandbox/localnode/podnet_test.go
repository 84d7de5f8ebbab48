package localnode

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

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
