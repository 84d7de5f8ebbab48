package dns

import (
	"container/list"
	"fmt"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// key identifies a cached answer. The name is lower-cased because DNS names
// compare case-insensitively; DO is part of it because a DNSSEC-aware
// client's answer carries signatures that others must not be sent.
type key struct {
	name   string
	qtype  uint16
	qclass uint16
	do     bool
}

func (k key) String() string { return fmt.Sprintf("%s/%d/%d/%t", k.name, k.qtype, k.qclass, k.do) }

// entry is one cached answer. msg is never modified once stored: readers
// copy it.
type entry struct {
	key      key
	msg      *dns.Msg
	stored   time.Time
	ttl      time.Duration
	failedAt time.Time // last failed refresh while stale; zero if none
}

// state is what a lookup found.
type state int

const (
	miss  state = iota
	fresh       // within its TTL
	stale       // expired, within MaxStale: refresh, serve if that fails
	// staleFailing is stale with a refresh that failed less than StaleTTL
	// ago: serve it at once rather than make the client wait on a dead
	// upstream again.
	staleFailing
)

// cache is a bounded LRU of answers, safe for concurrent use.
type cache struct {
	max     int
	mu      sync.Mutex
	lru     *list.List // of *entry, most recently used first
	entries map[key]*list.Element
}

func newCache(max int) *cache {
	return &cache{max: max, lru: list.New(), entries: make(map[key]*list.Element)}
}

// get looks k up at now. maxStale < 0 disables stale answers; recheck is
// how long a failed refresh keeps an entry in staleFailing.
func (c *cache) get(k key, now time.Time, maxStale, recheck time.Duration) (entry, state) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	if !ok {
		return entry{}, miss
	}
	e := el.Value.(*entry)
	expires := e.stored.Add(e.ttl)
	switch {
	case now.Before(expires):
		c.lru.MoveToFront(el)
		return *e, fresh
	case maxStale < 0 || !now.Before(expires.Add(maxStale)):
		c.lru.Remove(el)
		delete(c.entries, k)
		return entry{}, miss
	case !e.failedAt.IsZero() && now.Sub(e.failedAt) < recheck:
		c.lru.MoveToFront(el)
		return *e, staleFailing
	default:
		c.lru.MoveToFront(el)
		return *e, stale
	}
}

// add stores msg under k for ttl, evicting the least recently used entry
// when full.
func (c *cache) add(k key, msg *dns.Msg, now time.Time, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := &entry{key: k, msg: msg, stored: now, ttl: ttl}
	if el, ok := c.entries[k]; ok {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	c.entries[k] = c.lru.PushFront(e)
	for c.lru.Len() > c.max {
		oldest := c.lru.Back()
		c.lru.Remove(oldest)
		delete(c.entries, oldest.Value.(*entry).key)
	}
}

// failed records a failed refresh of k at now.
func (c *cache) failed(k key, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		el.Value.(*entry).failedAt = now
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// cacheable returns how long m may be cached and m trimmed for storage: no
// OPT (each reply gets its own), and no TTL above that lifetime, so that a
// client never keeps a record longer than we do. ok is false for answers
// that must not be cached: SERVFAIL and other errors, truncated answers,
// negative answers without a SOA (RFC 2308 §5), and TTL 0.
func cacheable(m *dns.Msg, maxTTL, maxNegTTL time.Duration) (out *dns.Msg, ttl time.Duration, ok bool) {
	if m.Truncated || (m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError) {
		return nil, 0, false
	}
	negative := m.Rcode == dns.RcodeNameError || len(m.Answer) == 0
	var secs uint32
	if negative {
		// RFC 2308 §5: the negative TTL is the lesser of the SOA's own TTL
		// and its MINIMUM field.
		var soa *dns.SOA
		for _, rr := range m.Ns {
			if s, isSOA := rr.(*dns.SOA); isSOA {
				soa = s
				break
			}
		}
		if soa == nil {
			return nil, 0, false
		}
		secs = min(soa.Hdr.Ttl, soa.Minttl, uint32(maxNegTTL/time.Second))
	} else {
		secs = uint32(maxTTL / time.Second)
		for _, rr := range records(m) {
			secs = min(secs, rr.Header().Ttl)
		}
	}
	if secs == 0 {
		return nil, 0, false
	}
	out = m.Copy()
	out.Id = 0
	out.Extra = withoutOPT(out.Extra)
	for _, rr := range records(out) {
		rr.Header().Ttl = min(rr.Header().Ttl, secs)
	}
	return out, time.Duration(secs) * time.Second, true
}

// records returns every resource record of m but the OPT pseudo-record,
// whose TTL field holds flags.
func records(m *dns.Msg) []dns.RR {
	rrs := make([]dns.RR, 0, len(m.Answer)+len(m.Ns)+len(m.Extra))
	rrs = append(rrs, m.Answer...)
	rrs = append(rrs, m.Ns...)
	return append(rrs, withoutOPT(m.Extra)...)
}

func withoutOPT(rrs []dns.RR) []dns.RR {
	out := rrs[:0:0]
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}
