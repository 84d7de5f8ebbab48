package netnspod_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/autonode/autonode/sandbox/netnspod"
	"github.com/autonode/autonode/sandbox/privileged"
)

func TestRandomAddr(t *testing.T) {
	bench := netip.MustParsePrefix("198.18.0.0/15")
	for range 1000 {
		a := netnspod.RandomAddr()
		if !bench.Contains(a) {
			t.Fatalf("RandomAddr() = %s, outside %s", a, bench)
		}
		if last := a.As4()[3]; last == 0 || last == 255 {
			t.Fatalf("RandomAddr() = %s ends in .%d", a, last)
		}
	}
}

// TestPrivilegedPodLifecycle checks what New builds and that cleanup removes
// all of it: the host veth, the pod end and the netns mount.
func TestPrivilegedPodLifecycle(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	t.Parallel()

	var pod netnspod.Pod
	t.Run("pod", func(t *testing.T) {
		p := netnspod.New(t, netnspod.Options{Prefix: "lifecycle"})
		pod = *p
		if len(p.HostVeth) > 15 {
			t.Errorf("host veth name %q longer than 15 bytes", p.HostVeth)
		}
		host, err := netlink.LinkByName(p.HostVeth)
		if err != nil {
			t.Fatalf("host veth %s: %v", p.HostVeth, err)
		}
		if host.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("host veth %s is down", p.HostVeth)
		}
		if _, err := os.Stat(filepath.Join(netnspod.RunDir, p.Name)); err != nil {
			t.Errorf("netns %s not visible to ip netns: %v", p.Name, err)
		}
		// Inside the pod: lo and eth0 up, and nothing of the host.
		err = p.Do(func() error {
			links, err := netlink.LinkList()
			if err != nil {
				return err
			}
			var names []string
			for _, l := range links {
				names = append(names, l.Attrs().Name)
				if l.Attrs().Flags&net.FlagUp == 0 {
					return fmt.Errorf("link %s is down in the pod", l.Attrs().Name)
				}
			}
			if len(names) != 2 || names[0] != "lo" || names[1] != netnspod.PodVeth {
				return fmt.Errorf("links in pod = %v, want [lo %s]", names, netnspod.PodVeth)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		// Do leaves the caller where it was.
		if _, err := netlink.LinkByName(p.HostVeth); err != nil {
			t.Errorf("after Do, host veth not visible: %v", err)
		}
		wantErr := errors.New("from fn")
		if err := p.Do(func() error { return wantErr }); !errors.Is(err, wantErr) {
			t.Errorf("Do returned %v, want fn's error", err)
		}
	})

	if _, err := netlink.LinkByName(pod.HostVeth); !errors.As(err, new(netlink.LinkNotFoundError)) {
		t.Errorf("host veth %s after cleanup: %v, want not found", pod.HostVeth, err)
	}
	if _, err := os.Stat(filepath.Join(netnspod.RunDir, pod.Name)); !os.IsNotExist(err) {
		t.Errorf("netns %s after cleanup: stat = %v, want not exist", pod.Name, err)
	}
	if _, err := netns.GetFromName(pod.Name); err == nil {
		t.Errorf("netns %s still opens after cleanup", pod.Name)
	}
}

// TestPrivilegedTrafficBetweenPods sends real TCP and UDP packets from one pod
// to another, through the host's routes.
func TestPrivilegedTrafficBetweenPods(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	t.Parallel()

	addrA, addrB := netnspod.RandomAddr(), netnspod.RandomAddr()
	for addrA == addrB {
		addrB = netnspod.RandomAddr()
	}
	a := netnspod.New(t, netnspod.Options{Prefix: "traffic-a", Addr: addrA})
	b := netnspod.New(t, netnspod.Options{Addr: addrB})
	if a.Addr != addrA || b.Addr != addrB {
		t.Fatalf("pod addresses %s, %s; want %s, %s", a.Addr, b.Addr, addrA, addrB)
	}

	t.Run("tcp", func(t *testing.T) {
		// The listener is opened inside pod A and stays there after Do.
		var ln net.Listener
		if err := a.Do(func() (err error) {
			ln, err = net.Listen("tcp4", net.JoinHostPort(addrA.String(), "0"))
			return err
		}); err != nil {
			t.Fatalf("listening in pod %s: %v", a.Name, err)
		}
		t.Cleanup(func() { ln.Close() })
		peer := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				peer <- "accept: " + err.Error()
				return
			}
			defer c.Close()
			peer <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			_, _ = io.Copy(c, c) // echo
		}()

		var got string
		err := b.Do(func() error {
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				return err
			}
			defer c.Close()
			// A hang guard, not a timing assertion: broken routing should
			// fail the test, not stall the package until go test's timeout.
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.WriteString(c, "ping\n"); err != nil {
				return err
			}
			got, err = bufio.NewReader(c).ReadString('\n')
			return err
		})
		if err != nil {
			t.Fatalf("pod %s to %s: %v", b.Name, ln.Addr(), err)
		}
		if got != "ping\n" {
			t.Errorf("echo = %q, want %q", got, "ping\n")
		}
		// No NAT on the way: A sees B's own address.
		if src := <-peer; src != addrB.String() {
			t.Errorf("pod A saw the connection from %s, want %s", src, addrB)
		}
	})

	t.Run("udp", func(t *testing.T) {
		var pc net.PacketConn
		if err := a.Do(func() (err error) {
			pc, err = net.ListenPacket("udp4", net.JoinHostPort(addrA.String(), "0"))
			return err
		}); err != nil {
			t.Fatalf("listening in pod %s: %v", a.Name, err)
		}
		t.Cleanup(func() { pc.Close() })
		if err := b.Do(func() error {
			c, err := net.Dial("udp4", pc.LocalAddr().String())
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("datagram"))
			return err
		}); err != nil {
			t.Fatalf("sending from pod %s: %v", b.Name, err)
		}
		_ = pc.SetReadDeadline(time.Now().Add(30 * time.Second)) // hang guard
		buf := make([]byte, 64)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("reading in pod %s: %v", a.Name, err)
		}
		if string(buf[:n]) != "datagram" || from.(*net.UDPAddr).IP.String() != addrB.String() {
			t.Errorf("got %q from %s, want %q from %s", buf[:n], from, "datagram", addrB)
		}
	})

	t.Run("host to pod", func(t *testing.T) {
		var ln net.Listener
		if err := a.Do(func() (err error) {
			ln, err = net.Listen("tcp4", net.JoinHostPort(addrA.String(), "0"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatalf("host to pod %s at %s: %v", a.Name, ln.Addr(), err)
		}
		c.Close()
	})
}
