package datapath

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/autonode/autonode/agent/policy/compute"
	"github.com/autonode/autonode/sandbox/netnspod"
	"github.com/autonode/autonode/sandbox/privileged"
)

// twoPods makes pods a and b, routed through the host, with distinct addresses.
func twoPods(t testing.TB) (a, b *netnspod.Pod) {
	addrA, addrB := netnspod.RandomAddr(), netnspod.RandomAddr()
	for addrA == addrB {
		addrB = netnspod.RandomAddr()
	}
	return netnspod.New(t, netnspod.Options{Prefix: "policy-a", Addr: addrA}),
		netnspod.New(t, netnspod.Options{Prefix: "policy-b", Addr: addrB})
}

// echoServer listens on TCP port in pod p and echoes every connection until the test ends.
func echoServer(t testing.TB, p *netnspod.Pod, port int) {
	t.Helper()
	var ln net.Listener
	if err := p.Do(func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(p.Addr.String(), strconv.Itoa(port)))
		return err
	}); err != nil {
		t.Fatalf("listening in pod %s: %v", p.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// dial connects from pod p to to within timeout and exchanges a line; it returns the error.
func dial(p *netnspod.Pod, to netip.AddrPort, timeout time.Duration) error {
	return p.Do(func() error {
		c, err := net.DialTimeout("tcp4", to.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			return err
		}
		buf := make([]byte, 5)
		_, err = io.ReadFull(c, buf)
		return err
	})
}

// TestTrafficBetweenPods attaches the programs to pod b's veth and sends real TCP between two netns pods: allowed
// connections pass with their replies through b's deny-all egress, denied ones time out, and a policy change
// takes effect on the next connection.
func TestTrafficBetweenPods(t *testing.T) {
	privileged.Require(t, privileged.BPF, privileged.NetAdmin)
	d := openTest(t, Config{})
	ctx := context.Background()
	a, b := twoPods(t)
	echoServer(t, b, 8080)
	echoServer(t, b, 9090)
	echoServer(t, a, 7070)
	rules := PodRules{HostIf: b.HostVeth, Namespace: "ns", Name: "b", IP: b.Addr,
		Ingress: compute.Direction{Isolated: true, Entries: []compute.Entry{{CIDR: netip.PrefixFrom(a.Addr, 32), Protocol: compute.ProtocolTCP, PortStart: 8080, PortEnd: 8080}}},
		Egress:  compute.Direction{Isolated: true}, // deny all: only replies leave b
	}
	if err := d.Program(ctx, rules); err != nil {
		t.Fatalf("Program: %v", err)
	}
	// A generous timeout for the allowed flows is only a hang guard; the denied ones must time out, so their
	// timeout is short.
	const allowed, denied = 30 * time.Second, time.Second
	if err := dial(a, netip.AddrPortFrom(b.Addr, 8080), allowed); err != nil {
		t.Errorf("allowed connection a -> b:8080 failed: %v", err)
	}
	var ne net.Error
	if err := dial(a, netip.AddrPortFrom(b.Addr, 9090), denied); err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("denied connection a -> b:9090: %v, want a timeout", err)
	}
	if err := dial(b, netip.AddrPortFrom(a.Addr, 7070), denied); err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("egress from b under deny-all: %v, want a timeout", err)
	}
	// Widen the policy: 9090 now passes.
	rules.Ingress.Entries[0].PortEnd = 9090
	if err := d.Program(ctx, rules); err != nil {
		t.Fatalf("Program: %v", err)
	}
	if err := dial(a, netip.AddrPortFrom(b.Addr, 9090), allowed); err != nil {
		t.Errorf("connection a -> b:9090 after widening failed: %v", err)
	}
	// The host is a node address: it reaches b whatever the policy says.
	if err := d.SetNodeAddresses(ctx, []netip.Addr{netnspod.Gateway(), hostAddrToward(t, b.Addr)}); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(b.Addr, 9090).String(), allowed)
	if err != nil {
		t.Errorf("node -> b: %v", err)
	} else {
		c.Close()
	}
	// Remove detaches: everything passes again.
	if err := d.Remove(ctx, b.HostVeth); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := dial(b, netip.AddrPortFrom(a.Addr, 7070), allowed); err != nil {
		t.Errorf("b -> a after Remove: %v", err)
	}
	if _, err := os.Stat(d.linkPin(b.HostVeth, hooks()[0])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("link pin after Remove: %v", err)
	}
}

// hostAddrToward returns the source address the host uses to reach dst.
func hostAddrToward(t testing.TB, dst netip.Addr) netip.Addr {
	t.Helper()
	c, err := net.Dial("udp4", netip.AddrPortFrom(dst, 9).String())
	if err != nil {
		t.Fatalf("finding the host's address toward %s: %v", dst, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
}
