package dns

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestVPCResolver(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   string // "" for the zero Addr
	}{
		{"10.0.0.0/16", "10.0.0.2"},
		{"172.31.0.0/16", "172.31.0.2"},
		{"192.168.64.0/18", "192.168.64.2"},
		{"10.0.37.9/16", "10.0.0.2"},    // an address inside the CIDR, not its base
		{"100.64.0.0/28", "100.64.0.2"}, // the smallest VPC CIDR
		{"10.1.2.0/30", "10.1.2.2"},
		{"10.1.2.0/31", ""}, // no room for base + 2
		{"2600:1f14::/56", ""},
		{"", ""},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			var p netip.Prefix
			if tc.prefix != "" {
				p = netip.MustParsePrefix(tc.prefix)
			}
			got := VPCResolver(p)
			if tc.want == "" {
				if got.IsValid() {
					t.Errorf("VPCResolver(%s) = %s, want the zero Addr", tc.prefix, got)
				}
				return
			}
			if want := netip.MustParseAddr(tc.want); got != want {
				t.Errorf("VPCResolver(%s) = %s, want %s", tc.prefix, got, want)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	up := []netip.AddrPort{netip.MustParseAddrPort("10.100.0.10:53")}
	for _, tc := range []struct {
		name    string
		opts    Options
		wantErr string // "" for success
	}{
		{"defaults", Options{ClusterDNS: up, VPCDNS: up}, ""},
		{"no cluster DNS", Options{VPCDNS: up}, "no cluster DNS upstream"},
		{"no VPC DNS", Options{ClusterDNS: up}, "no VPC DNS upstream"},
		{"invalid upstream", Options{ClusterDNS: up, VPCDNS: []netip.AddrPort{{}}}, "VPC DNS upstream invalid AddrPort: invalid address"},
		{"port too big", Options{ClusterDNS: up, VPCDNS: up, Port: 65536}, "port 65536 out of range"},
		{"bad domain", Options{ClusterDNS: up, VPCDNS: up, ClusterDomain: "a..b"}, `cluster domain "a..b"`},
		{"UDP size too small", Options{ClusterDNS: up, VPCDNS: up, UDPSize: 100}, "UDP size 100"},
		{"port any", Options{ClusterDNS: up, VPCDNS: up, Port: PortAny}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.opts)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if r.Name() != "dns" || r.Ready() == nil {
					t.Errorf("new resolver: Name %q, Ready %v; want dns, not ready", r.Name(), r.Ready())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestCacheable(t *testing.T) {
	const hour = time.Hour
	a := func(ttl uint32) dns.RR {
		return &dns.A{Hdr: dns.RR_Header{Name: "a.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.IPv4(192, 0, 2, 1)}
	}
	soa := func(ttl, minttl uint32) dns.RR {
		return &dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
			Ns: "ns.example.", Mbox: "h.example.", Minttl: minttl}
	}
	msg := func(rcode int, answer, ns []dns.RR) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("a.example.", dns.TypeA)
		m.Response, m.Rcode, m.Answer, m.Ns = true, rcode, answer, ns
		m.SetEdns0(1232, false)
		return m
	}
	truncated := msg(dns.RcodeSuccess, []dns.RR{a(300)}, nil)
	truncated.Truncated = true
	for _, tc := range []struct {
		name   string
		m      *dns.Msg
		want   time.Duration // 0: not cacheable
		maxTTL time.Duration
	}{
		{"positive: lowest TTL", msg(dns.RcodeSuccess, []dns.RR{a(300), a(120)}, nil), 120 * time.Second, hour},
		{"positive: authority counts", msg(dns.RcodeSuccess, []dns.RR{a(300)}, []dns.RR{soa(90, 3600)}), 90 * time.Second, hour},
		{"positive: capped by MaxTTL", msg(dns.RcodeSuccess, []dns.RR{a(86400)}, nil), time.Hour, hour},
		{"positive: TTL 0 is not cached", msg(dns.RcodeSuccess, []dns.RR{a(0)}, nil), 0, hour},
		{"NXDOMAIN: SOA minimum below its TTL", msg(dns.RcodeNameError, nil, []dns.RR{soa(600, 60)}), 60 * time.Second, hour},
		{"NXDOMAIN: SOA TTL below its minimum", msg(dns.RcodeNameError, nil, []dns.RR{soa(30, 900)}), 30 * time.Second, hour},
		{"NXDOMAIN: capped by MaxNegativeTTL", msg(dns.RcodeNameError, nil, []dns.RR{soa(86400, 86400)}), 30 * time.Minute, hour},
		{"NODATA: SOA", msg(dns.RcodeSuccess, nil, []dns.RR{soa(600, 60)}), 60 * time.Second, hour},
		{"NXDOMAIN without SOA", msg(dns.RcodeNameError, nil, nil), 0, hour},
		{"NODATA without SOA", msg(dns.RcodeSuccess, nil, nil), 0, hour},
		{"SERVFAIL", msg(dns.RcodeServerFailure, nil, nil), 0, hour},
		{"REFUSED", msg(dns.RcodeRefused, nil, nil), 0, hour},
		{"truncated", truncated, 0, hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.m.String()
			out, ttl, ok := cacheable(tc.m, tc.maxTTL, 30*time.Minute)
			if tc.m.String() != before {
				t.Errorf("cacheable changed its input")
			}
			if tc.want == 0 {
				if ok {
					t.Errorf("cacheable = %s, true; want not cacheable", ttl)
				}
				return
			}
			if !ok || ttl != tc.want {
				t.Fatalf("cacheable = %s, %t; want %s, true", ttl, ok, tc.want)
			}
			if out.IsEdns0() != nil {
				t.Errorf("stored answer keeps its OPT record")
			}
			for _, rr := range records(out) {
				if time.Duration(rr.Header().Ttl)*time.Second > ttl {
					t.Errorf("stored %s has a TTL above the entry's %s", rr, ttl)
				}
			}
		})
	}
}

func TestCacheStatesAndEviction(t *testing.T) {
	c := newCache(2)
	t0 := time.Unix(1_000_000, 0)
	k := func(name string) key { return key{name: name, qtype: dns.TypeA, qclass: dns.ClassINET} }
	m := new(dns.Msg)
	const maxStale, recheck = 10 * time.Minute, 30 * time.Second

	c.add(k("a."), m, t0, time.Minute)
	for _, tc := range []struct {
		name   string
		at     time.Duration
		failed bool // mark a failed refresh before the lookup
		want   state
	}{
		{"fresh", 59 * time.Second, false, fresh},
		{"expired: stale", time.Minute, false, stale},
		{"refresh failed: serve stale at once", 2 * time.Minute, true, staleFailing},
		{"recheck due", 2*time.Minute + recheck, false, stale},
		{"past max stale", time.Minute + maxStale, false, miss},
		{"gone for good", 0, false, miss},
	} {
		now := t0.Add(tc.at)
		if tc.failed {
			c.failed(k("a."), now)
		}
		if _, st := c.get(k("a."), now, maxStale, recheck); st != tc.want {
			t.Errorf("%s: state %d, want %d", tc.name, st, tc.want)
		}
	}
	if _, st := c.get(k("a."), t0, -1, recheck); st != miss {
		t.Errorf("lookup with stale answers disabled found an entry removed earlier")
	}

	// LRU: b and c fill the cache; using b makes c the one evicted by d.
	c.add(k("b."), m, t0, time.Minute)
	c.add(k("c."), m, t0, time.Minute)
	c.get(k("b."), t0, maxStale, recheck)
	c.add(k("d."), m, t0, time.Minute)
	if c.len() != 2 {
		t.Errorf("cache holds %d entries, want 2", c.len())
	}
	for name, want := range map[string]state{"b.": fresh, "c.": miss, "d.": fresh} {
		if _, st := c.get(k(name), t0, maxStale, recheck); st != want {
			t.Errorf("after eviction, %s: state %d, want %d", name, st, want)
		}
	}
}

// TestAnswerRejects covers queries answered without an upstream.
func TestAnswerRejects(t *testing.T) {
	r, err := New(Options{ClusterDNS: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")},
		VPCDNS: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.54:53")}})
	if err != nil {
		t.Fatal(err)
	}
	r.exchange = func(context.Context, *dns.Msg, string, netip.AddrPort) (*dns.Msg, error) {
		t.Error("a rejected query reached the upstream")
		return nil, context.Canceled
	}
	twoQuestions := query("a.example.", dns.TypeA, 0)
	twoQuestions.Question = append(twoQuestions.Question, twoQuestions.Question[0])
	notify := query("a.example.", dns.TypeSOA, 0)
	notify.Opcode = dns.OpcodeNotify
	edns1 := query("a.example.", dns.TypeA, 1232)
	edns1.IsEdns0().SetVersion(1)
	response := query("a.example.", dns.TypeA, 0)
	response.Response = true
	for _, tc := range []struct {
		name  string
		req   *dns.Msg
		rcode int
	}{
		{"two questions", twoQuestions, dns.RcodeFormatError},
		{"a response", response, dns.RcodeFormatError},
		{"NOTIFY", notify, dns.RcodeNotImplemented},
		{"EDNS version 1", edns1, dns.RcodeBadVers},
		{"AXFR", query("example.", dns.TypeAXFR, 0), dns.RcodeRefused},
		{"IXFR", query("example.", dns.TypeIXFR, 0), dns.RcodeRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &fakeWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}}
			r.serve(t.Context(), w, tc.req)
			if w.msg == nil {
				t.Fatal("no reply")
			}
			// Round-trip through the wire format, as a client sees it.
			packed, err := w.msg.Pack()
			if err != nil {
				t.Fatalf("packing reply: %v", err)
			}
			var got dns.Msg
			if err := got.Unpack(packed); err != nil {
				t.Fatalf("unpacking reply: %v", err)
			}
			if got.Rcode != tc.rcode || got.Id != tc.req.Id || !got.Response {
				t.Errorf("reply rcode %s, id %d, QR %t; want %s, %d, true",
					dns.RcodeToString[got.Rcode], got.Id, got.Response, dns.RcodeToString[tc.rcode], tc.req.Id)
			}
		})
	}
}
