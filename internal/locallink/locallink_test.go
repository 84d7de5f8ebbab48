package locallink

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/autonode/autonode/sandbox/netnsutil"
	"github.com/autonode/autonode/sandbox/privileged"
)

func TestEnsureIsIdempotent(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	name := fmt.Sprintf("locallink-%08x", rand.Uint32())
	t.Cleanup(func() { _ = netnsutil.DeleteNamed(name) })
	ns, err := netnsutil.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	path := filepath.Join(netnsutil.RunDir, name)
	addrs := []netip.Addr{netip.MustParseAddr("169.254.170.23"), netip.MustParseAddr("fd00:ec2::23")}
	for i := range 2 { // the second run adopts what the first made
		typ, err := Ensure(path, "svc0", "", addrs)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if typ != "dummy" && typ != "ifb" {
			t.Errorf("link type %q", typ)
		}
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	link, err := h.LinkByName("svc0")
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"169.254.170.23/32": true, "fd00:ec2::23/128": true}
	for _, a := range got {
		if !a.IP.IsLinkLocalUnicast() || a.IP.To4() != nil { // the kernel's own fe80:: is fine
			delete(want, a.IPNet.String())
		}
	}
	if len(want) != 0 {
		t.Errorf("addresses %v lack %v", got, want)
	}
	if _, err := Ensure(path, "lo", "", addrs); err == nil {
		t.Error("Ensure adopted lo, which is neither dummy nor ifb")
	}
}
