package cni_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/autonode/autonode/agent/network/datapath/datapathtest"
	"github.com/autonode/autonode/sandbox/privileged"
)

// TestPrivilegedChainLoopbackPortmap chains Debian's loopback before us and
// portmap after us: lo comes up in the pod, and a hostPort on the node's
// primary address reaches the pod from the VPC.
func TestPrivilegedChainLoopbackPortmap(t *testing.T) {
	for _, p := range []string{"loopback", "portmap"} {
		if _, err := os.Stat(filepath.Join(debianPlugins, p)); err != nil {
			privileged.Missing(t, "CNI plugin "+p, err)
		}
	}
	e := newEnv(t, envOptions{})
	list := e.confList(t, "1.0.0",
		[]map[string]any{{"type": "loopback"}},
		[]map[string]any{{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true}}, nil)
	pod := e.node.NewPod(t)
	// Undo the helper's lo: loopback must bring it up.
	lo, err := pod.Netlink(t).LinkByName("lo")
	if err == nil {
		err = pod.Netlink(t).LinkSetDown(lo)
	}
	if err != nil {
		t.Fatalf("setting lo down: %v", err)
	}
	rt := runtimeConf(pod, "chain-"+pod.Name)
	const hostPort, containerPort = 18080, 8080
	rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{
		{"hostPort": hostPort, "containerPort": containerPort, "protocol": "tcp"},
	}}
	res, err := e.add(t, list, rt)
	if err != nil {
		t.Fatalf("ADD through the chain: %v", err)
	}
	addr := podAddr(t, res)
	if len(res.Interfaces) != 3 || res.Interfaces[0].Name != "lo" {
		t.Errorf("interfaces %v: want lo (from loopback), host veth, eth0", res.Interfaces)
	}

	datapathtest.ServeEcho(t, pod, netip.IPv4Unspecified(), containerPort)
	if _, err := datapathtest.SourceSeen(pod, "tcp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), containerPort)); err != nil {
		t.Errorf("pod loopback: %v", err)
	}
	// From the VPC to the node's hostPort: DNATed by portmap's iptables
	// rules in the node netns to the pod, which sees the real client.
	got, err := datapathtest.SourceSeen(e.node.VPC, "tcp4", netip.AddrPortFrom(e.node.Primary.Addr, hostPort))
	if err != nil {
		t.Fatalf("hostPort %d on %s: %v", hostPort, e.node.Primary.Addr, err)
	}
	if got != e.node.Primary.Gateway {
		t.Errorf("pod saw %s for a hostPort client at %s", got, e.node.Primary.Gateway)
	}
	// Debian's portmap 1.1.1 fails CHECK for IPv4-only pods ("could not
	// check ipv6 dnat: chain … not found"), so CHECK runs over the same
	// network (same cached result) without it.
	if err := e.check(t, e.confList(t, "1.0.0", []map[string]any{{"type": "loopback"}}, nil, nil), rt); err != nil {
		t.Errorf("CHECK through the chain: %v", err)
	}
	if err := e.del(t, list, rt); err != nil {
		t.Fatalf("DEL through the chain: %v", err)
	}
	if _, err := datapathtest.SourceSeen(e.node.VPC, "tcp4", netip.AddrPortFrom(e.node.Primary.Addr, hostPort)); err == nil {
		t.Errorf("hostPort %d still reaches %s after DEL", hostPort, addr)
	}
	if v, r, ru := e.node.Leftovers(t, e.pods, ourPriorities...); v+r+ru != 0 {
		t.Errorf("after DEL: %d veths, %d routes, %d rules left", v, r, ru)
	}
}

// TestPrivilegedSNAT: traffic to a destination outside the VPC CIDRs leaves
// with the node's primary address; inside the VPC, with the pod's own. With
// external SNAT, the pod's address goes out unchanged.
func TestPrivilegedSNAT(t *testing.T) {
	for _, tc := range []struct {
		name     string
		external bool
	}{
		{"snat", false},
		{"external-snat", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{externalSNAT: tc.external})
			if tc.external {
				// The "NAT gateway" must route replies to pods.
				addRoute(t, e.node.VPC, e.pods, e.node.Primary.Addr)
			}
			list := e.confList(t, "1.0.0", nil, nil, nil)
			pod := e.node.NewPod(t)
			res, err := e.add(t, list, runtimeConf(pod, "snat-"+pod.Name))
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			addr := podAddr(t, res)
			outside := datapathtest.ServeEcho(t, e.node.VPC, e.node.Outside, 0)
			inside := datapathtest.ServeEcho(t, e.node.VPC, e.node.Primary.Gateway, 0)
			wantOutside := e.node.Primary.Addr
			if tc.external {
				wantOutside = addr
			}
			for _, proto := range []string{"tcp4", "udp4"} {
				for _, c := range []struct {
					to   netip.AddrPort
					want netip.Addr
				}{{outside, wantOutside}, {inside, addr}} {
					got, err := datapathtest.SourceSeen(pod, proto, c.to)
					if err != nil {
						t.Errorf("%s to %s: %v", proto, c.to, err)
					} else if got != c.want {
						t.Errorf("%s to %s: seen from %s, want %s", proto, c.to, got, c.want)
					}
				}
			}
		})
	}
}
