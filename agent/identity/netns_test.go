package identity

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/vishvananda/netlink"

	"github.com/autonode/autonode/sandbox/netnsutil"
	"github.com/autonode/autonode/sandbox/privileged"
)

// TestPrivilegedDualStackInNetNS makes the dummy link with the real
// addresses, 169.254.170.23 and fd00:ec2::23, on port 80, inside a netns of
// its own so that nothing touches the host, and fetches credentials over
// both with the Go SDK's container credential provider from inside it.
func TestPrivilegedDualStackInNetNS(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	name := fmt.Sprintf("podid-test-%08x", rand.Uint32())
	t.Cleanup(func() { _ = netnsutil.DeleteNamed(name) })
	ns, err := netnsutil.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// Local delivery goes through lo, which starts down in a new netns.
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}

	linkName := fmt.Sprintf("pid%08x", rand.Uint32())
	// Empty: a dummy link, or ifb on this VM's kernel, built without the
	// dummy driver; the fallback is what is tested here.
	linkType := ""
	nsPath := filepath.Join(netnsutil.RunDir, name)
	e := newEnv(t, envOptions{server: func(o *Options) {
		o.NetNS, o.NoLink, o.LinkName, o.LinkType, o.Addresses, o.Port = nsPath, false, linkName, linkType, nil, 0
	}})

	link, err := h.LinkByName(linkName)
	if err != nil {
		t.Fatalf("link %s not in the netns: %v", linkName, err)
	}
	if (link.Type() != "dummy" && link.Type() != "ifb") || link.Attrs().OperState == netlink.OperDown {
		t.Errorf("link %s is a %s in state %s", linkName, link.Type(), link.Attrs().OperState)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.IPNet.String())
	}
	for _, want := range []string{"169.254.170.23/32", "fd00:ec2::23/128"} {
		if !slices.Contains(got, want) {
			t.Errorf("link %s has %v, want %s", linkName, got, want)
		}
	}
	if _, err := netlink.LinkByName(linkName); err == nil {
		t.Errorf("link %s showed up in the host netns", linkName)
	}

	// An HTTP client whose connections are made inside the netns.
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := netnsutil.Do(ns, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	defer client.CloseIdleConnections()
	token := e.mint(t, "ns-a", "sa-a")
	var keys []string
	for _, url := range []string{"http://169.254.170.23/v1/credentials", "http://[fd00:ec2::23]/v1/credentials"} {
		p := endpointcreds.New(url, func(o *endpointcreds.Options) {
			o.HTTPClient = client
			o.AuthorizationToken = token
		})
		c, err := p.Retrieve(t.Context())
		if err != nil {
			t.Fatalf("SDK through %s: %v", url, err)
		}
		keys = append(keys, c.AccessKeyID)
	}
	if keys[0] != keys[1] || e.calls() != 1 {
		t.Errorf("keys %v with %d EKS Auth calls; want one key from one call", keys, e.calls())
	}

	// A wrong Host is refused on the real addresses too.
	req, _ := http.NewRequest(http.MethodGet, "http://[fd00:ec2::23]/v1/credentials", nil)
	req.Host = "169.254.170.2"
	req.Header.Set("Authorization", token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("wrong Host: status %d, want 403", resp.StatusCode)
	}

	// A second endpoint on the same link, as after a restart, adopts the
	// link and its addresses instead of failing on them.
	again, err := New(Options{ClusterName: testCluster, EKSAuth: e.srv.opts.EKSAuth, NetNS: nsPath,
		LinkName: linkName, LinkType: linkType, Port: 8080, Addresses: []netip.Addr{netip.MustParseAddr("fd00:ec2::23")}})
	if err != nil {
		t.Fatal(err)
	}
	runServer(t, again)
	if got := again.Addrs(); len(got) != 1 || got[0].String() != "[fd00:ec2::23]:8080" {
		t.Errorf("second endpoint bound %v", got)
	}
}
