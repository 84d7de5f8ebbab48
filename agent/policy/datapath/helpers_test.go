package datapath

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/autonode/autonode/agent/policy/compute"
	"github.com/autonode/autonode/sandbox/bpffs"
	"github.com/autonode/autonode/sandbox/privileged"
)

// openTest opens a datapath on a fresh pin root, closed when the test ends.
func openTest(t testing.TB, cfg Config) *Datapath {
	t.Helper()
	privileged.Require(t, privileged.BPF, privileged.NetAdmin)
	if cfg.PinRoot == "" {
		cfg.PinRoot = bpffs.PinRoot(t)
	}
	if cfg.ConntrackSize == 0 {
		cfg.ConntrackSize = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	d, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

// dummyLink creates a veth pair with unique names, both ends down in the test's namespace, deleted when the test
// ends. Being down, it sends nothing of its own, so only the packets a test runs reach the programs attached to it.
func dummyLink(t testing.TB) (string, uint32) {
	t.Helper()
	var b [5]byte
	_, _ = rand.Read(b[:])
	name := "apd" + hex.EncodeToString(b[:])
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "apq" + hex.EncodeToString(b[:])}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("creating veth %s: %v", name, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("deleting veth %s: %v", name, err)
			}
		} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
			t.Errorf("finding veth %s: %v", name, err)
		}
	})
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("finding veth %s: %v", name, err)
	}
	return name, uint32(l.Attrs().Index)
}

// send runs the attached program of dir over p, as a real packet would, with all its side effects.
func (d *Datapath) send(t *testing.T, ifindex uint32, dir Direction, p packet) bool {
	t.Helper()
	prog := d.objs.ToPod
	if dir == Egress {
		prog = d.objs.FromPod
	}
	v, err := runProgram(prog, ifindex, p.bytes())
	if err != nil {
		t.Fatalf("running %s program: %v", dir, err)
	}
	return v.Allowed
}

// verdict runs the side-effect-free twin of dir's program over p.
func (d *Datapath) verdict(t *testing.T, ifindex uint32, dir Direction, p packet) Verdict {
	t.Helper()
	prog := d.objs.CheckToPod
	if dir == Egress {
		prog = d.objs.CheckFromPod
	}
	v, err := runProgram(prog, ifindex, p.bytes())
	if err != nil {
		t.Fatalf("running %s check program: %v", dir, err)
	}
	return v
}

func entry(cidr string, proto compute.Protocol, lo, hi uint16) compute.Entry {
	return compute.Entry{CIDR: netip.MustParsePrefix(cidr), Protocol: proto, PortStart: lo, PortEnd: hi}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func netipAddrPort(a string, port uint16) netip.AddrPort { return netip.AddrPortFrom(addr(a), port) }
