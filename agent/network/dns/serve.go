package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Query results, the values of the result label.
const (
	resultHit   = "hit"   // answered from the cache
	resultMiss  = "miss"  // answered by an upstream
	resultStale = "stale" // answered from an expired entry: the upstream failed
	resultError = "error" // SERVFAIL, or a malformed or unsupported query
)

// serve answers one query from a client.
func (r *Resolver) serve(ctx context.Context, w dns.ResponseWriter, req *dns.Msg) {
	proto := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		proto = "tcp"
	}
	resp, result := r.answer(ctx, req)
	r.metrics.queries.WithLabelValues(proto, result).Inc()
	if proto == "udp" {
		// Clients without EDNS0 take 512 bytes; with it, what they say up
		// to what we advertise. Truncate sets TC when records are dropped,
		// and the client retries over TCP.
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = min(max(int(opt.UDPSize()), dns.MinMsgSize), r.opts.UDPSize)
		}
		resp.Truncate(size)
	} else {
		resp.Compress = true
	}
	if err := w.WriteMsg(resp); err != nil {
		r.log.Debug("writing DNS reply", "client", w.RemoteAddr(), "err", err)
	}
}

// answer computes the reply to req and the result to count it under. The
// reply is the caller's to modify.
func (r *Resolver) answer(ctx context.Context, req *dns.Msg) (*dns.Msg, string) {
	if req.Response || len(req.Question) != 1 {
		return r.failure(req, dns.RcodeFormatError), resultError
	}
	if req.Opcode != dns.OpcodeQuery {
		return r.failure(req, dns.RcodeNotImplemented), resultError
	}
	opt := req.IsEdns0()
	if opt != nil && opt.Version() != 0 {
		return r.failure(req, dns.RcodeBadVers), resultError // RFC 6891 §6.1.3
	}
	q := req.Question[0]
	switch q.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR, dns.TypeMAILA, dns.TypeMAILB:
		// Zone transfers need a stream to the primary, not a cache.
		return r.failure(req, dns.RcodeRefused), resultError
	}
	if _, ok := dns.IsDomainName(q.Name); !ok || !dns.IsFqdn(q.Name) {
		return r.failure(req, dns.RcodeFormatError), resultError
	}
	k := key{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass, do: opt != nil && opt.Do()}

	now := r.now()
	e, st := r.cache.get(k, now, r.opts.MaxStale, r.opts.StaleTTL)
	switch st {
	case fresh:
		return r.reply(req, r.aged(e, now, false)), resultHit
	case staleFailing:
		return r.reply(req, r.aged(e, now, true)), resultStale
	}
	r.misses.Add(1)
	msg, err := r.resolve(ctx, k)
	if err == nil {
		return r.reply(req, msg.Copy()), resultMiss
	}
	if st == stale {
		r.cache.failed(k, now)
		r.log.Debug("serving stale DNS answer", "name", k.name, "qtype", dns.TypeToString[k.qtype], "err", err)
		return r.reply(req, r.aged(e, now, true)), resultStale
	}
	r.log.Debug("DNS query failed", "name", k.name, "qtype", dns.TypeToString[k.qtype], "err", err)
	return r.failure(req, dns.RcodeServerFailure), resultError
}

// aged copies a cached answer with its TTLs lowered by its age, or set to
// StaleTTL when stale.
func (r *Resolver) aged(e entry, now time.Time, isStale bool) *dns.Msg {
	m := e.msg.Copy()
	age := uint32(max(now.Sub(e.stored), 0) / time.Second)
	staleTTL := uint32(r.opts.StaleTTL / time.Second)
	for _, rr := range records(m) {
		h := rr.Header()
		switch {
		case isStale:
			h.Ttl = staleTTL
		case h.Ttl > age:
			h.Ttl -= age
		default:
			h.Ttl = 0
		}
	}
	return m
}

// reply turns m, an answer to req's question, into the reply to req.
func (r *Resolver) reply(req, m *dns.Msg) *dns.Msg {
	m.Id = req.Id
	m.Response = true
	m.Opcode = req.Opcode
	m.Authoritative = false
	m.RecursionDesired = req.RecursionDesired
	m.RecursionAvailable = true
	m.CheckingDisabled = req.CheckingDisabled
	opt := req.IsEdns0()
	// RFC 6840 §5.8: AD only for clients that asked for DNSSEC data.
	m.AuthenticatedData = m.AuthenticatedData && (req.AuthenticatedData || (opt != nil && opt.Do()))
	// The client's own spelling of the name: resolvers using 0x20 case
	// randomisation check it.
	m.Question = []dns.Question{req.Question[0]}
	m.Extra = withoutOPT(m.Extra)
	if opt != nil {
		m.SetEdns0(uint16(r.opts.UDPSize), opt.Do())
	}
	return m
}

func (r *Resolver) failure(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	if opt := req.IsEdns0(); opt != nil {
		// Packing puts BADVERS's upper bits into this OPT.
		m.SetEdns0(uint16(r.opts.UDPSize), opt.Do())
	}
	return m
}

// resolve gets k's answer from its upstream and caches it. Concurrent calls
// for one key share one upstream query; the shared answer must be copied
// before it is changed.
func (r *Resolver) resolve(ctx context.Context, k key) (*dns.Msg, error) {
	v, err, _ := r.flight.Do(k.String(), func() (any, error) {
		m, err := r.forward(ctx, k)
		if err != nil {
			return nil, err
		}
		if out, ttl, ok := cacheable(m, r.opts.MaxTTL, r.opts.MaxNegativeTTL); ok {
			r.cache.add(k, out, r.now(), ttl)
			m = out // with the TTLs capped, as later hits will see them
		}
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*dns.Msg), nil
}

// errUpstreamRcode is an answer that means the upstream could not resolve
// the name right now: serve stale rather than pass it on.
var errUpstreamRcode = errors.New("upstream failure")

// forward asks k's upstreams in turn, starting from a rotating one, until
// one answers with something other than SERVFAIL or REFUSED.
func (r *Resolver) forward(ctx context.Context, k key) (*dns.Msg, error) {
	group := r.vpc
	if dns.IsSubDomain(r.clusterDomain, k.name) {
		group = r.cluster
	}
	q := new(dns.Msg)
	q.Id = dns.Id()
	q.RecursionDesired = true
	q.Question = []dns.Question{{Name: k.name, Qtype: k.qtype, Qclass: k.qclass}}
	// Our own EDNS0, not the client's: the answer is shared by every client
	// and their options (cookies, client subnet) must not leak upstream.
	q.SetEdns0(uint16(r.opts.UDPSize), k.do)

	var errs []error
	first := int(group.next.Add(1))
	for i := range group.servers {
		server := group.servers[(first+i)%len(group.servers)]
		m, err := r.ask(ctx, group.name, q, server)
		if err == nil {
			return m, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// ask queries one upstream over UDP, then over TCP if the answer was
// truncated, and checks that the answer is to the question asked.
func (r *Resolver) ask(ctx context.Context, group string, q *dns.Msg, server netip.AddrPort) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.UpstreamTimeout)
	defer cancel()
	var m *dns.Msg
	for _, network := range []string{"udp", "tcp"} {
		start := time.Now()
		var err error
		m, err = r.exchange(ctx, q, network, server)
		r.metrics.upstreamLatency.WithLabelValues(group, network).Observe(time.Since(start).Seconds())
		if err != nil {
			return nil, fmt.Errorf("querying upstream %s over %s: %w", server, network, err)
		}
		if !m.Truncated {
			break
		}
	}
	if m.Truncated {
		return nil, fmt.Errorf("upstream %s: answer truncated over TCP", server)
	}
	if len(m.Question) != 1 || !strings.EqualFold(m.Question[0].Name, q.Question[0].Name) ||
		m.Question[0].Qtype != q.Question[0].Qtype || m.Question[0].Qclass != q.Question[0].Qclass {
		return nil, fmt.Errorf("upstream %s answered another question", server)
	}
	if m.Rcode == dns.RcodeServerFailure || m.Rcode == dns.RcodeRefused {
		return nil, fmt.Errorf("upstream %s: %s: %w", server, dns.RcodeToString[m.Rcode], errUpstreamRcode)
	}
	return m, nil
}

// exchangeWire sends q to server over network and reads the answer.
func (r *Resolver) exchangeWire(ctx context.Context, q *dns.Msg, network string, server netip.AddrPort) (*dns.Msg, error) {
	c := dns.Client{Net: network, UDPSize: uint16(r.opts.UDPSize), Timeout: r.opts.UpstreamTimeout}
	m, _, err := c.ExchangeContext(ctx, q, server.String())
	return m, err
}
