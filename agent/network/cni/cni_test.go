package cni_test

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/autonode/autonode/health"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/agent/network/cni/cniwire"
	"github.com/autonode/autonode/agent/network/datapath"
	"github.com/autonode/autonode/agent/network/datapath/datapathtest"
)

var ourPriorities = []int{datapath.ToPodRulePriority, datapath.FromPodRulePriority}

// TestPrivilegedAddCheckDel drives the built binary through libcni: two pods
// get addresses, TCP and UDP flow pod<->pod and pod<->node, CHECK passes and
// then reports a deleted route, and DEL leaves nothing behind.
func TestPrivilegedAddCheckDel(t *testing.T) {
	for _, tc := range []struct {
		version   string
		secondary bool
	}{
		{"1.0.0", false},
		{"0.4.0", false},
		{"1.1.0", true},
	} {
		name := tc.version
		if tc.secondary {
			name += "-secondary-eni"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOptions{secondary: tc.secondary})
			list := e.confList(t, tc.version, nil, nil, map[string]any{"dns": map[string]any{"nameservers": []string{"172.20.0.10"}}})
			podA, podB := e.node.NewPod(t), e.node.NewPod(t)
			rtA, rtB := runtimeConf(podA, "ctr-a-"+podA.Name), runtimeConf(podB, "ctr-b-"+podB.Name)
			resA, err := e.add(t, list, rtA)
			if err != nil {
				t.Fatalf("ADD pod A: %v", err)
			}
			resB, err := e.add(t, list, rtB)
			if err != nil {
				t.Fatalf("ADD pod B: %v", err)
			}
			addrA, addrB := podAddr(t, resA), podAddr(t, resB)
			if !e.pods.Contains(addrA) || !e.pods.Contains(addrB) || addrA == addrB {
				t.Fatalf("pod addresses %s, %s: want two distinct addresses in %s", addrA, addrB, e.pods)
			}
			if len(resA.Interfaces) != 2 || resA.Interfaces[0].Name != datapath.HostVethName(rtA.ContainerID, "eth0") ||
				resA.Interfaces[1].Sandbox != podA.Path {
				t.Errorf("interfaces %v: want host veth then eth0 in %s", resA.Interfaces, podA.Path)
			}
			if len(resA.Routes) != 1 || resA.Routes[0].GW.String() != "169.254.1.1" {
				t.Errorf("routes %v: want default via 169.254.1.1", resA.Routes)
			}
			if len(resA.DNS.Nameservers) != 1 {
				t.Errorf("DNS %v: want the configured nameserver", resA.DNS)
			}

			// Real packets: pod<->pod and pod<->node, TCP and UDP.
			host := e.node.Primary.Addr
			srvB := datapathtest.ServeEcho(t, podB, addrB, 0)
			srvHost := datapathtest.ServeEcho(t, e.node.NS, host, 0)
			srvA := datapathtest.ServeEcho(t, podA, addrA, 0)
			for _, proto := range []string{"tcp4", "udp4"} {
				for _, c := range []struct {
					from *datapathtest.NS
					to   netip.AddrPort
					want netip.Addr
				}{
					{podA, srvB, addrA},
					{podA, srvHost, addrA},
					{e.node.NS, srvA, host},
				} {
					got, err := datapathtest.SourceSeen(c.from, proto, c.to)
					if err != nil {
						t.Errorf("%s from %s to %s: %v", proto, c.from.Name, c.to, err)
					} else if got != c.want {
						t.Errorf("%s from %s to %s: server saw %s, want %s", proto, c.from.Name, c.to, got, c.want)
					}
				}
			}

			if err := e.check(t, list, rtA); err != nil {
				t.Fatalf("CHECK on a healthy pod: %v", err)
			}
			// Break the host route: CHECK must name it.
			nl := e.node.Netlink(t)
			routes, err := nl.RouteListFiltered(unix.AF_INET, &netlink.Route{Dst: &net.IPNet{IP: addrA.AsSlice(), Mask: net.CIDRMask(32, 32)},
				Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
			if err != nil || len(routes) != 1 {
				t.Fatalf("pod A's route: %v, %v", routes, err)
			}
			if err := nl.RouteDel(&routes[0]); err != nil {
				t.Fatalf("deleting pod A's route: %v", err)
			}
			err = e.check(t, list, rtA)
			if err == nil || !strings.Contains(err.Error(), "route "+addrA.String()+"/32") {
				t.Fatalf("CHECK after deleting the route: got %v, want an error naming the route", err)
			}
			// The periodic check sees it too, and clears once it is back.
			e.signals.WaitFor(t, "RouteMissing for pod A", anySignal(func(s health.Signal) bool {
				return s.Reason == health.ReasonRouteMissing && !s.Cleared && strings.Contains(s.Message, addrA.String())
			}))
			if err := nl.RouteAdd(&routes[0]); err != nil {
				t.Fatalf("restoring pod A's route: %v", err)
			}
			e.signals.WaitFor(t, "RouteMissing cleared", anySignal(func(s health.Signal) bool {
				return s.Reason == health.ReasonRouteMissing && s.Cleared
			}))

			for _, rt := range []*libcni.RuntimeConf{rtA, rtB, rtA} { // the second DEL of A is a repeat
				if err := e.del(t, list, rt); err != nil {
					t.Fatalf("DEL %s: %v", rt.ContainerID, err)
				}
			}
			if v, r, ru := e.node.Leftovers(t, e.pods, ourPriorities...); v+r+ru != 0 {
				t.Errorf("after DEL: %d veths, %d routes, %d rules left", v, r, ru)
			}
			if n := len(e.alloc.List()); n != 0 {
				t.Errorf("after DEL: %d allocations left", n)
			}
		})
	}
}

// TestPrivilegedDelUnknown: DEL of a container the agent never saw, with
// and without a netns, succeeds.
func TestPrivilegedDelUnknown(t *testing.T) {
	e := newEnv(t, envOptions{})
	list := e.confList(t, "1.0.0", nil, nil, nil)
	pod := e.node.NewPod(t)
	for _, rt := range []*libcni.RuntimeConf{
		runtimeConf(pod, "never-added"),
		{ContainerID: "never-added-no-netns", IfName: "eth0"},
	} {
		if err := e.del(t, list, rt); err != nil {
			t.Errorf("DEL %s: %v", rt.ContainerID, err)
		}
	}
}

// TestPrivilegedChurn: 200 ADD/DEL cycles through the binary leave no
// links, routes, rules or allocations.
func TestPrivilegedChurn(t *testing.T) {
	e := newEnv(t, envOptions{secondary: true})
	list := e.confList(t, "1.0.0", nil, nil, nil)
	pods := []*datapathtest.NS{e.node.NewPod(t), e.node.NewPod(t), e.node.NewPod(t), e.node.NewPod(t)}
	cycles := 200
	if testing.Short() {
		cycles = 20
	}
	for i := range cycles {
		rt := runtimeConf(pods[i%len(pods)], "churn-"+strconv.Itoa(i))
		if _, err := e.add(t, list, rt); err != nil {
			t.Fatalf("cycle %d ADD: %v", i, err)
		}
		if err := e.del(t, list, rt); err != nil {
			t.Fatalf("cycle %d DEL: %v", i, err)
		}
	}
	if v, r, ru := e.node.Leftovers(t, e.pods, ourPriorities...); v+r+ru != 0 {
		t.Errorf("after %d cycles: %d veths, %d routes, %d rules left", cycles, v, r, ru)
	}
	if n := len(e.alloc.List()); n != 0 {
		t.Errorf("after %d cycles: %d allocations left", cycles, n)
	}
	for _, p := range pods {
		links, err := p.Netlink(t).LinkList()
		if err != nil {
			t.Fatal(err)
		}
		if len(links) != 1 {
			t.Errorf("pod %s has %d links after churn, want only lo", p.Name, len(links))
		}
	}
}

// TestPrivilegedConcurrent: ADDs and DELs of different pods run together
// (in-process, as many runtimes' calls would) and leave nothing behind.
func TestPrivilegedConcurrent(t *testing.T) {
	e := newEnv(t, envOptions{secondary: true})
	cfg := []byte(`{"cniVersion":"1.0.0","name":"autonode","type":"autonode-cni"}`)
	pods := make([]*datapathtest.NS, 8)
	for i := range pods {
		pods[i] = e.node.NewPod(t)
	}
	errs := make(chan error, len(pods))
	for i, pod := range pods {
		go func() {
			req := cniwire.Request{Command: "ADD", ContainerID: "conc-" + strconv.Itoa(i), Netns: pod.Path, IfName: "eth0", Config: cfg}
			for range 5 {
				req.Command = "ADD"
				if r := e.srv.Handle(context.Background(), req); r.Error != nil {
					errs <- r.Error
					return
				}
				req.Command = "DEL"
				if r := e.srv.Handle(context.Background(), req); r.Error != nil {
					errs <- r.Error
					return
				}
			}
			errs <- nil
		}()
	}
	for range pods {
		if err := <-errs; err != nil {
			t.Errorf("concurrent ADD/DEL: %v", err)
		}
	}
	if v, r, ru := e.node.Leftovers(t, e.pods, ourPriorities...); v+r+ru != 0 {
		t.Errorf("after concurrent cycles: %d veths, %d routes, %d rules left", v, r, ru)
	}
	if n := len(e.alloc.List()); n != 0 {
		t.Errorf("after concurrent cycles: %d allocations left", n)
	}
}
