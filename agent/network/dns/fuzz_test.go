package dns

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// FuzzServe feeds arbitrary bytes as a client's query and as the upstream's
// answer through the handler, twice (a miss, then whatever the cache made
// of it), over UDP and TCP. Both come from outside the node's trust: pods
// and the network. It checks that nothing panics, that every query gets a
// reply with its ID, and that UDP replies fit the size the client allows.
func FuzzServe(f *testing.F) {
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	for _, q := range []*dns.Msg{
		query("a.example.com", dns.TypeA, 1232),
		query("nx.example.com", dns.TypeA, 0),
		query("big.example.com", dns.TypeTXT, 0),
		query("kubernetes.default.svc.cluster.local", dns.TypeAAAA, 4096),
	} {
		a := zoneAnswer(q)
		f.Add(pack(q), pack(a), true)
		f.Add(pack(q), pack(a), false)
	}

	f.Fuzz(func(t *testing.T, reqBytes, upBytes []byte, matchQuestion bool) {
		var req dns.Msg
		if req.Unpack(reqBytes) != nil {
			return // the server answers FORMERR before the handler runs
		}
		r, err := New(Options{
			ClusterDNS: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")},
			VPCDNS:     []netip.AddrPort{netip.MustParseAddrPort("192.0.2.54:53")},
		})
		if err != nil {
			t.Fatal(err)
		}
		r.exchange = func(_ context.Context, q *dns.Msg, _ string, _ netip.AddrPort) (*dns.Msg, error) {
			var m dns.Msg
			if err := m.Unpack(upBytes); err != nil {
				return nil, err
			}
			if matchQuestion {
				// Get past the question check to the cache.
				m.Id, m.Question = q.Id, q.Question
			}
			return &m, nil
		}
		for _, remote := range []net.Addr{
			&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353},
			&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353},
			&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353},
		} {
			w := &fakeWriter{remote: remote}
			r.serve(context.Background(), w, req.Copy())
			if w.msg == nil {
				t.Fatalf("no reply to %s", &req)
			}
			if w.msg.Id != req.Id {
				t.Fatalf("reply ID %d, want %d", w.msg.Id, req.Id)
			}
			packed, err := w.msg.Pack()
			if err != nil {
				continue // the upstream's records did not survive a round trip
			}
			if _, udp := remote.(*net.UDPAddr); udp {
				limit := dns.MinMsgSize
				if opt := req.IsEdns0(); opt != nil {
					limit = min(max(int(opt.UDPSize()), dns.MinMsgSize), r.opts.UDPSize)
				}
				if len(packed) > limit {
					t.Fatalf("UDP reply of %d bytes, over the client's %d", len(packed), limit)
				}
			}
		}
	})
}
