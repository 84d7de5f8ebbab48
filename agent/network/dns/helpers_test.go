package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// clock is a settable time source, safe for the resolver's goroutines.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// The test zone, answered by every testUpstream. Names are matched on their
// first label, so tests may put them under any suffix.
const (
	zoneTTL    = 300 // TTL of A and TXT records
	zoneSOATTL = 600 // the SOA record's own TTL
	zoneSOAMin = 60  // the SOA MINIMUM, so negative answers live 60s
	bigRecords = 40  // TXT records of "big": ~4 KB, over any UDP size
)

// zoneAnswer answers req from the test zone:
//
//   - nx.*: NXDOMAIN with a SOA;
//   - big.* TXT: bigRecords TXT records of 100 bytes each;
//   - anything else, type A: 192.0.2.1 with TTL zoneTTL;
//     other types: NODATA with a SOA.
func zoneAnswer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	q := req.Question[0]
	soa := &dns.SOA{
		Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: zoneSOATTL},
		Ns:  "ns.example.", Mbox: "hostmaster.example.", Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400,
		Minttl: zoneSOAMin,
	}
	first, _, _ := strings.Cut(strings.ToLower(q.Name), ".")
	switch {
	case first == "nx":
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa}
	case first == "big" && q.Qtype == dns.TypeTXT:
		for i := range bigRecords {
			m.Answer = append(m.Answer, &dns.TXT{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: zoneTTL},
				Txt: []string{fmt.Sprintf("%03d-%s", i, strings.Repeat("x", 96))},
			})
		}
	case q.Qtype == dns.TypeA:
		m.Answer = []dns.RR{&dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: zoneTTL},
			A:   net.IPv4(192, 0, 2, 1),
		}}
	default:
		m.Ns = []dns.RR{soa}
	}
	return m
}

// upstreamMode is how a testUpstream behaves.
type upstreamMode int32

const (
	modeAnswer   upstreamMode = iota // answer from the zone
	modeServfail                     // SERVFAIL
	modeRefused                      // REFUSED
	modeDrop                         // never answer: the client times out
)

// testUpstream is a DNS server on loopback, over UDP and TCP on one port,
// that answers from the test zone, counts queries and can be made to fail,
// hold queries or stop.
type testUpstream struct {
	addr netip.AddrPort
	mode atomic.Int32
	// hold, while non-nil, delays every answer until it is closed.
	hold atomic.Pointer[chan struct{}]

	n atomic.Int64 // queries received
	// quiet skips keeping each query's name, for benchmarks.
	quiet atomic.Bool

	mu      sync.Mutex
	queries []string // "udp name" or "tcp name", in arrival order
	servers []*dns.Server
}

func startUpstream(tb testing.TB) *testUpstream {
	tb.Helper()
	u := &testUpstream{}
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 10 { // the port the kernel gives UDP may be taken for TCP
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			tb.Fatalf("test upstream: %v", err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		_ = pc.Close()
	}
	if err != nil {
		tb.Fatalf("test upstream: %v", err)
	}
	u.addr = netip.MustParseAddrPort(pc.LocalAddr().String())
	started := make(chan struct{}, 2)
	u.servers = []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(u.serve), UDPSize: 4096, NotifyStartedFunc: func() { started <- struct{}{} }},
		{Listener: ln, Handler: dns.HandlerFunc(u.serve), NotifyStartedFunc: func() { started <- struct{}{} }},
	}
	for _, srv := range u.servers {
		go func() { _ = srv.ActivateAndServe() }()
	}
	<-started
	<-started
	tb.Cleanup(u.stop)
	return u
}

func (u *testUpstream) serve(w dns.ResponseWriter, req *dns.Msg) {
	proto := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		proto = "tcp"
	}
	u.n.Add(1)
	if !u.quiet.Load() {
		u.mu.Lock()
		u.queries = append(u.queries, proto+" "+req.Question[0].Name)
		u.mu.Unlock()
	}
	if h := u.hold.Load(); h != nil {
		<-*h
	}
	var m *dns.Msg
	switch upstreamMode(u.mode.Load()) {
	case modeDrop:
		return
	case modeServfail:
		m = new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
	case modeRefused:
		m = new(dns.Msg)
		m.SetRcode(req, dns.RcodeRefused)
	default:
		m = zoneAnswer(req)
	}
	if proto == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// count returns how many queries arrived.
func (u *testUpstream) count() int { return int(u.n.Load()) }

// seen returns the queries that arrived, as "proto name".
func (u *testUpstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.queries...)
}

// stop shuts the servers down: queries then meet ICMP port unreachable.
func (u *testUpstream) stop() {
	u.mu.Lock()
	servers := u.servers
	u.servers = nil
	u.mu.Unlock()
	for _, srv := range servers {
		_ = srv.Shutdown()
	}
}

// runResolver runs r until the test ends and waits until it is ready.
func runResolver(tb testing.TB, r *Resolver) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() { runErr = r.Run(ctx); close(done) }()
	tb.Cleanup(func() {
		cancel()
		<-done
		if runErr != nil {
			tb.Errorf("Run returned %v after its context ended", runErr)
		}
		if r.Ready() == nil {
			tb.Errorf("resolver still ready after Run returned")
		}
	})
	for r.Ready() != nil {
		select {
		case <-done:
			tb.Fatalf("Run returned before it was ready: %v", runErr)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// query builds a recursive query for name and qtype, with EDNS0 of size
// udpSize when udpSize > 0.
func query(name string, qtype uint16, udpSize uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if udpSize > 0 {
		m.SetEdns0(udpSize, false)
	}
	return m
}

// fakeWriter is a dns.ResponseWriter that keeps what is written.
type fakeWriter struct {
	remote net.Addr
	msg    *dns.Msg
}

func (w *fakeWriter) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(169, 254, 20, 10), Port: 53}
}
func (w *fakeWriter) RemoteAddr() net.Addr        { return w.remote }
func (w *fakeWriter) WriteMsg(m *dns.Msg) error   { w.msg = m; _, err := m.Pack(); return err }
func (w *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *fakeWriter) Close() error                { return nil }
func (w *fakeWriter) TsigStatus() error           { return nil }
func (w *fakeWriter) TsigTimersOnly(bool)         {}
func (w *fakeWriter) Hijack()                     {}
