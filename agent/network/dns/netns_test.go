package dns

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"

	"github.com/autonode/autonode/sandbox/netnspod"
	"github.com/autonode/autonode/sandbox/privileged"
)

// testNode is a resolver serving 169.254.20.10:53 on its dummy link inside a
// netns pod, as it would on a node, with a cluster and a VPC upstream on host
// loopback. Clients query from inside the pod; each test has its own pod, so
// they all use the production address and port.
type testNode struct {
	pod          *netnspod.Pod
	r            *Resolver
	clock        *clock
	cluster, vpc *testUpstream
}

func newTestNode(t *testing.T, tweak func(*Options)) *testNode {
	t.Helper()
	n := buildTestNode(t, tweak)
	runResolver(t, n.r)
	return n
}

// buildTestNode is newTestNode without running the resolver.
func buildTestNode(t *testing.T, tweak func(*Options)) *testNode {
	t.Helper()
	n := &testNode{clock: newClock(), cluster: startUpstream(t), vpc: startUpstream(t)}
	n.pod = netnspod.New(t, netnspod.Options{Prefix: "dns"})
	opts := Options{
		CreateLink: true,
		NetNS:      filepath.Join(netnspod.RunDir, n.pod.Name),
		ClusterDNS: []netip.AddrPort{n.cluster.addr},
		VPCDNS:     []netip.AddrPort{n.vpc.addr},
		Registerer: prometheus.NewRegistry(),
	}
	if tweak != nil {
		tweak(&opts)
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	r.now = n.clock.now
	n.r = r
	return n
}

// dial opens a connection from inside the pod to the resolver.
func (n *testNode) dial(t *testing.T, proto string) *dns.Conn {
	t.Helper()
	var c net.Conn
	err := n.pod.Do(func() error {
		var err error
		c, err = net.Dial(proto, netip.AddrPortFrom(DefaultAddress(), DefaultPort).String())
		return err
	})
	if err != nil {
		t.Fatalf("dialing the resolver over %s: %v", proto, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &dns.Conn{Conn: c}
}

// exchange sends m from the pod over proto and returns the reply.
func (n *testNode) exchange(t *testing.T, proto string, m *dns.Msg) *dns.Msg {
	t.Helper()
	conn := n.dial(t, proto)
	c := dns.Client{Net: proto, Timeout: 10 * time.Second}
	resp, _, err := c.ExchangeWithConn(m, conn)
	if err != nil {
		t.Fatalf("%s query for %s over %s: %v", dns.TypeToString[m.Question[0].Qtype], m.Question[0].Name, proto, err)
	}
	return resp
}

// a asks for name's A record over UDP and returns the reply.
func (n *testNode) a(t *testing.T, name string) *dns.Msg {
	t.Helper()
	return n.exchange(t, "udp", query(name, dns.TypeA, 1232))
}

func (n *testNode) result(proto, result string) float64 {
	return testutil.ToFloat64(n.r.metrics.queries.WithLabelValues(proto, result))
}

// wantA checks that m answers with the zone's A record at ttl.
func wantA(t *testing.T, m *dns.Msg, ttl uint32) {
	t.Helper()
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("reply %s with %d answers, want NOERROR with 1:\n%s", dns.RcodeToString[m.Rcode], len(m.Answer), m)
	}
	a, ok := m.Answer[0].(*dns.A)
	if !ok || !a.A.Equal(net.IPv4(192, 0, 2, 1)) {
		t.Fatalf("answer %s, want A 192.0.2.1", m.Answer[0])
	}
	if a.Hdr.Ttl != ttl {
		t.Errorf("TTL %d, want %d", a.Hdr.Ttl, ttl)
	}
}

func TestPrivilegedCacheHit(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	t.Parallel()
	n := newTestNode(t, nil)

	// The link is there, with the address.
	err := n.pod.Do(func() error {
		link, err := netlink.LinkByName(DefaultLinkName)
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		// ifb on kernels without the dummy driver, such as this VM's.
		if len(addrs) != 1 || !addrs[0].IP.Equal(DefaultAddress().AsSlice()) || (link.Type() != "dummy" && link.Type() != "ifb") {
			t.Errorf("link %s: %s with %v, want a dummy or ifb with %s/32", DefaultLinkName, link.Type(), addrs, DefaultAddress())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("inspecting the link: %v", err)
	}

	wantA(t, n.a(t, "www.example.com"), zoneTTL)
	for _, tc := range []struct {
		name    string
		advance time.Duration
		ttl     uint32
	}{
		{"www.example.com", 0, zoneTTL},
		{"WWW.Example.COM", 0, zoneTTL}, // names compare case-insensitively
		{"www.example.com", 100 * time.Second, zoneTTL - 100},
		{"www.example.com", 199*time.Second + 999*time.Millisecond, 1}, // whole seconds, rounded down
	} {
		n.clock.advance(tc.advance)
		m := n.a(t, tc.name)
		wantA(t, m, tc.ttl)
		if m.Question[0].Name != dns.Fqdn(tc.name) {
			t.Errorf("question %q, want the client's %q", m.Question[0].Name, dns.Fqdn(tc.name))
		}
		if opt := m.IsEdns0(); opt == nil || opt.UDPSize() != 1232 {
			t.Errorf("reply OPT %v, want one advertising 1232", opt)
		}
	}
	if got := n.vpc.count(); got != 1 {
		t.Errorf("upstream saw %d queries, want 1: %v", got, n.vpc.seen())
	}
	if hits, misses := n.result("udp", resultHit), n.result("udp", resultMiss); hits != 4 || misses != 1 {
		t.Errorf("metrics: %v hits, %v misses; want 4, 1", hits, misses)
	}
	if got := testutil.ToFloat64(n.r.metrics.cacheEntries); got != 1 {
		t.Errorf("cache size metric %v, want 1", got)
	}
	// Expired, with a working upstream: asked again.
	n.clock.advance(time.Second)
	wantA(t, n.a(t, "www.example.com"), zoneTTL)
	if got := n.vpc.count(); got != 2 {
		t.Errorf("after expiry, upstream saw %d queries, want 2", got)
	}
}

func TestPrivilegedNegativeCaching(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	t.Parallel()
	n := newTestNode(t, nil)
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"nx.example.com", dns.TypeA, dns.RcodeNameError},
		{"nodata.example.com", dns.TypeAAAA, dns.RcodeSuccess},
	} {
		t.Run(dns.RcodeToString[tc.rcode], func(t *testing.T) {
			before := n.vpc.count()
			ask := func(wantSOATTL uint32) {
				t.Helper()
				m := n.exchange(t, "udp", query(tc.name, tc.qtype, 1232))
				if m.Rcode != tc.rcode || len(m.Answer) != 0 || len(m.Ns) != 1 {
					t.Fatalf("reply %s with %d answers, %d authority; want %s with a SOA only",
						dns.RcodeToString[m.Rcode], len(m.Answer), len(m.Ns), dns.RcodeToString[tc.rcode])
				}
				// RFC 2308 §3: the SOA's TTL is the negative TTL.
				if got := m.Ns[0].Header().Ttl; got != wantSOATTL {
					t.Errorf("SOA TTL %d, want %d", got, wantSOATTL)
				}
			}
			ask(zoneSOAMin)
			ask(zoneSOAMin)
			n.clock.advance(45 * time.Second)
			ask(zoneSOAMin - 45)
			if got := n.vpc.count() - before; got != 1 {
				t.Errorf("upstream saw %d queries, want 1 (the rest from the cache)", got)
			}
			n.clock.advance(15 * time.Second) // the SOA minimum, not its TTL, bounds the entry
			ask(zoneSOAMin)
			if got := n.vpc.count() - before; got != 2 {
				t.Errorf("after the negative TTL, upstream saw %d queries, want 2", got)
			}
		})
	}
}

func TestPrivilegedRouting(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	t.Parallel()
	n := newTestNode(t, func(o *Options) { o.ClusterDomain = "cluster.local" })
	for _, tc := range []struct {
		name    string
		cluster bool
	}{
		{"kubernetes.default.svc.cluster.local", true},
		{"Redis.Prod.SVC.Cluster.Local", true},
		{"cluster.local", true},
		{"example.com", false},
		{"cluster.local.example.com", false},
		{"notcluster.local", false},
		{"ip-10-0-0-1.ec2.internal", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, v := n.cluster.count(), n.vpc.count()
			wantA(t, n.a(t, tc.name), zoneTTL)
			dc, dv := n.cluster.count()-c, n.vpc.count()-v
			if tc.cluster && (dc != 1 || dv != 0) || !tc.cluster && (dc != 0 || dv != 1) {
				t.Errorf("cluster upstream saw %d queries, VPC upstream %d; want the %s one only",
					dc, dv, map[bool]string{true: "cluster", false: "VPC"}[tc.cluster])
			}
		})
	}
}

func TestPrivilegedServeStale(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	t.Parallel()
	const maxStale = 10 * time.Minute
	for _, tc := range []struct {
		name string
		mode upstreamMode
		stop bool // shut the upstream down instead
	}{
		{"stopped", modeAnswer, true},
		{"SERVFAIL", modeServfail, false},
		{"REFUSED", modeRefused, false},
		{"timeout", modeDrop, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := newTestNode(t, func(o *Options) {
				o.MaxStale = maxStale
				o.UpstreamTimeout = 200 * time.Millisecond
			})
			up := n.vpc
			fail := func() {
				if tc.stop {
					up.stop()
				}
				up.mode.Store(int32(tc.mode))
			}
			const name = "stale.example.com"
			wantA(t, n.a(t, name), zoneTTL)
			n.clock.advance(zoneTTL * time.Second)
			fail()

			// Expired and the upstream fails: stale, at StaleTTL.
			wantA(t, n.a(t, name), 30)
			if got := n.result("udp", resultStale); got != 1 {
				t.Errorf("stale metric %v, want 1", got)
			}
			// Right after a failed refresh, stale without asking again.
			asked := up.count()
			wantA(t, n.a(t, name), 30)
			if got := up.count(); got != asked {
				t.Errorf("upstream asked again within StaleTTL of a failure (%d queries, want %d)", got, asked)
			}
			if !tc.stop {
				// It recovers: the next refresh, a recheck interval on,
				// brings a fresh answer.
				up.mode.Store(int32(modeAnswer))
				n.clock.advance(30 * time.Second)
				wantA(t, n.a(t, name), zoneTTL)
				if got := up.count(); got != asked+1 {
					t.Errorf("after recovery upstream saw %d queries, want %d", got, asked+1)
				}
				fail()
				n.clock.advance(zoneTTL * time.Second)
			}
			// Past MaxStale: nothing to serve.
			n.clock.advance(maxStale)
			if m := n.a(t, name); m.Rcode != dns.RcodeServerFailure {
				t.Fatalf("past MaxStale: %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
			}
			if got := n.result("udp", resultError); got != 1 {
				t.Errorf("error metric %v, want 1", got)
			}
			if !tc.stop {
				// SERVFAIL was not cached: a working upstream is asked.
				up.mode.Store(int32(modeAnswer))
				wantA(t, n.a(t, name), zoneTTL)
			}
		})
	}
}

func TestPrivilegedTruncation(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	t.Parallel()
	n := newTestNode(t, nil)
	const name = "big.example.com."

	for _, tc := range []struct {
		name    string
		proto   string
		udpSize uint16 // EDNS0 size; 0 for none
		wantTC  bool
	}{
		{"UDP without EDNS0", "udp", 0, true},
		{"UDP with EDNS0 1232", "udp", 1232, true},
		{"UDP with EDNS0 4096, capped at 1232", "udp", 4096, true},
		{"TCP", "tcp", 0, false},
		{"TCP with EDNS0", "tcp", 4096, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := n.exchange(t, tc.proto, query(name, dns.TypeTXT, tc.udpSize))
			if m.Rcode != dns.RcodeSuccess || m.Truncated != tc.wantTC {
				t.Fatalf("reply %s, TC %t; want NOERROR, TC %t", dns.RcodeToString[m.Rcode], m.Truncated, tc.wantTC)
			}
			m.Compress = true // as it came over the wire
			packed, _ := m.Pack()
			limit := max(int(tc.udpSize), dns.MinMsgSize)
			switch {
			case tc.wantTC && len(m.Answer) >= bigRecords:
				t.Errorf("truncated reply still holds all %d records", len(m.Answer))
			case tc.wantTC && len(packed) > min(limit, 1232):
				t.Errorf("truncated reply is %d bytes, over %d", len(packed), min(limit, 1232))
			case !tc.wantTC && len(m.Answer) != bigRecords:
				t.Errorf("TCP reply holds %d records, want %d", len(m.Answer), bigRecords)
			}
		})
	}
	// The resolver itself met TC over UDP and retried over TCP, once.
	if got, want := strings.Join(n.vpc.seen(), ", "), "udp "+name+", tcp "+name; got != want {
		t.Errorf("upstream saw %s, want %s", got, want)
	}
}

func TestPrivilegedSingleflight(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	t.Parallel()
	n := newTestNode(t, nil)
	const clients = 20
	release := make(chan struct{})
	n.vpc.hold.Store(&release)

	conns := make([]*dns.Conn, clients)
	for i := range conns {
		conns[i] = n.dial(t, "udp")
	}
	replies := make([]*dns.Msg, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Go(func() {
			c := dns.Client{Net: "udp", Timeout: 10 * time.Second}
			replies[i], _, errs[i] = c.ExchangeWithConn(query("flight.example.com", dns.TypeA, 1232), conn)
		})
	}
	// Every client's query is past the cache (the upstream holds the first)
	// before the answer comes.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for n.r.misses.Load() < clients {
		select {
		case <-ctx.Done():
			close(release)
			t.Fatalf("only %d of %d queries reached the resolver", n.r.misses.Load(), clients)
		case <-time.After(time.Millisecond):
		}
	}
	close(release)
	wg.Wait()
	for i := range replies {
		if errs[i] != nil {
			t.Fatalf("client %d: %v", i, errs[i])
		}
		wantA(t, replies[i], zoneTTL)
	}
	if got := n.vpc.count(); got != 1 {
		t.Errorf("%d identical concurrent misses made %d upstream queries, want 1", clients, got)
	}
}

// TestPrivilegedRestart runs the resolver again after Run returned, as the
// supervisor does after a failure: it adopts the link, binds again and keeps
// its cache. A Run while another holds the port fails, naming the address.
func TestPrivilegedRestart(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	t.Parallel()
	n := buildTestNode(t, nil)
	const name = "restart.example.com"
	for i := range 2 {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- n.r.Run(ctx) }()
		for n.r.Ready() != nil {
			select {
			case err := <-done:
				cancel()
				t.Fatalf("run %d returned before it was ready: %v", i+1, err)
			case <-time.After(10 * time.Millisecond):
			}
		}
		wantA(t, n.a(t, name), zoneTTL)
		if i == 0 {
			if err := n.r.Run(ctx); err == nil || !strings.Contains(err.Error(), "169.254.20.10:53") {
				t.Errorf("concurrent Run = %v, want an error naming 169.254.20.10:53", err)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run %d returned %v after its context ended", i+1, err)
		}
		if n.r.Ready() == nil {
			t.Fatalf("ready after run %d returned", i+1)
		}
	}
	if got := n.vpc.count(); got != 1 {
		t.Errorf("upstream saw %d queries over two runs, want 1: the cache survives a restart", got)
	}
}
