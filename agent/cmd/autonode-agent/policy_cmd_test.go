package main

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/autonode/autonode/agent/network/datapath/datapathtest"
	"github.com/autonode/autonode/agent/policy/compute"
	"github.com/autonode/autonode/agent/policy/datapath"
	"github.com/autonode/autonode/sandbox/bpffs"
	"github.com/autonode/autonode/sandbox/privileged"
)

func TestPortProto(t *testing.T) {
	for _, tc := range []struct {
		in    string
		proto compute.Protocol
		port  uint16
		bad   bool
	}{
		{"80/TCP", compute.ProtocolTCP, 80, false},
		{"53/udp", compute.ProtocolUDP, 53, false},
		{"9000/SCTP", compute.ProtocolSCTP, 9000, false},
		{"ICMP", datapath.ProtocolICMP, 0, false},
		{"80", 0, 0, true},
		{"0/TCP", 0, 0, true},
		{"70000/TCP", 0, 0, true},
		{"80/GRE", 0, 0, true},
		{"", 0, 0, true},
	} {
		proto, port, err := parsePortProto(tc.in)
		if (err != nil) != tc.bad || proto != tc.proto || port != tc.port {
			t.Errorf("parsePortProto(%q) = %v, %d, %v", tc.in, proto, port, err)
		}
	}
}

// TestPrivilegedPolicyCommand programs two pods on veths in a netns playing the node, closes the datapath as a
// stopped agent would, and runs dump and check against the pins.
func TestPrivilegedPolicyCommand(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin, privileged.BPF)
	node := datapathtest.NewNS(t, "an-pcmd")
	pin := bpffs.PinRoot(t)
	nl := node.Netlink(t)
	for _, name := range []string{"anweb", "anclient"} {
		if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			t.Fatal(err)
		}
		l, _ := nl.LinkByName(name)
		if err := nl.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	web, client := netip.MustParseAddr("10.1.1.1"), netip.MustParseAddr("10.1.1.2")
	ctx := context.Background()
	err := node.Do(func() error {
		dp, err := datapath.Open(ctx, datapath.Config{PinRoot: pin, ConntrackSize: 4096})
		if err != nil {
			return err
		}
		defer dp.Close()
		if err := dp.Program(ctx, datapath.PodRules{HostIf: "anweb", Namespace: "shop", Name: "web", IP: web,
			Ingress: compute.Direction{Isolated: true, Entries: []compute.Entry{
				{CIDR: netip.PrefixFrom(client, 32), Protocol: compute.ProtocolTCP, PortStart: 80, PortEnd: 80}}}}); err != nil {
			return err
		}
		return dp.Program(ctx, datapath.PodRules{HostIf: "anclient", Namespace: "shop", Name: "client", IP: client,
			Egress: compute.Direction{Isolated: true, Entries: []compute.Entry{
				{CIDR: netip.MustParsePrefix("10.1.0.0/16"), Protocol: compute.ProtocolTCP, PortStart: 80, PortEnd: 90}}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := node.Do(func() error { return policyCmd(ctx, append(args, "--pin-root", pin), &out, &errOut) })
		return out.String(), err
	}
	out, err := run("dump", "--pod", "shop/web")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pod shop/web on anweb, address 10.1.1.1", "ingress: isolated, 1 entries", "10.1.1.2/32 TCP 80", "egress: not isolated"} {
		if !strings.Contains(out, want) {
			t.Errorf("dump output lacks %q:\n%s", want, out)
		}
	}
	for _, tc := range []struct {
		from, to, port, want string
	}{
		{"shop/client", "shop/web", "80/TCP", "verdict: allow"},
		{"shop/client", "shop/web", "81/TCP", "verdict: deny"}, // egress allows 80-90, web's ingress only 80
		{"shop/client", "10.1.9.9", "90/TCP", "verdict: allow"},
		{"shop/client", "10.2.0.1", "80/TCP", "verdict: deny"},
		{"10.9.9.9", "shop/web", "80/TCP", "verdict: deny"},
		{"shop/client", "shop/web", "80/UDP", "verdict: deny"},
	} {
		out, err := run("check", "--from", tc.from, "--to", tc.to, "--port", tc.port)
		if err != nil || !strings.Contains(out, tc.want) {
			t.Errorf("check %s -> %s %s: %v\n%s\nwant %q", tc.from, tc.to, tc.port, err, out, tc.want)
		}
	}
	if _, err := run("dump", "--pod", "shop/none"); err == nil || !strings.Contains(err.Error(), "no rules programmed") {
		t.Errorf("dump of an unknown pod: %v", err)
	}
	if _, err := run("check", "--from", "10.0.0.1", "--to", "10.0.0.2", "--port", "80/TCP"); err == nil {
		t.Error("check between two addresses off this node succeeded")
	}
}
