package dns

import (
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkCacheHit measures cache hits per second over UDP on loopback,
// one socket per parallel client, against a baseline in the same run: the
// same query answered directly by the test upstream, which builds its
// answer with no cache. Both include the kernel's UDP path both ways, as a
// pod's query would.
//
//	go test -run '^$' -bench BenchmarkCacheHit -benchmem -count 10 ./agent/network/dns/ | go run ./hack/benchratio
func BenchmarkCacheHit(b *testing.B) {
	up := startUpstream(b)
	up.quiet.Store(true)
	r, err := New(Options{
		Address:    netip.MustParseAddr("127.0.0.1"),
		Port:       PortAny,
		ClusterDNS: []netip.AddrPort{up.addr},
		VPCDNS:     []netip.AddrPort{up.addr},
	})
	if err != nil {
		b.Fatal(err)
	}
	runResolver(b, r)
	q := query("www.example.com", dns.TypeA, 1232)
	for _, tc := range []struct {
		name   string
		target netip.AddrPort
	}{
		{"baseline", up.addr}, // the test upstream, answering every query itself
		{"autonode", r.Addr()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if _, _, err := new(dns.Client).Exchange(q, tc.target.String()); err != nil {
				b.Fatalf("priming query: %v", err) // fills the cache
			}
			before := up.count()
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("udp", tc.target.String())
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				conn := &dns.Conn{Conn: c, UDPSize: 1232}
				m := q.Copy()
				for pb.Next() {
					m.Id = dns.Id()
					if err := conn.WriteMsg(m); err != nil {
						b.Error(err)
						return
					}
					resp, err := conn.ReadMsg()
					if err != nil || resp.Id != m.Id || len(resp.Answer) != 1 {
						b.Errorf("reply %v, err %v", resp, err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "qps")
			if tc.name == "autonode" && up.count() != before {
				b.Errorf("%d cache-hit queries reached the upstream", up.count()-before)
			}
		})
	}
}
