// Package dns is the node-local DNS cache: a caching forwarder that pods
// reach at a link-local address (169.254.20.10:53, UDP and TCP), which the
// kubelet lists first in every pod's resolv.conf. Names under the cluster
// domain go to the cluster DNS service, everything else to the VPC resolver
// (the VPC CIDR base + 2), so most lookups never leave the node and a pod's
// external lookups skip CoreDNS altogether.
//
// The cache respects TTLs (and ages the TTLs it hands out), keeps negative
// answers for their RFC 2308 lifetime, is bounded with least-recently-used
// eviction, and serves expired answers for up to MaxStale while the upstream
// fails (RFC 8767). Identical concurrent misses make one upstream query.
//
// The Resolver is a subsystem: Run optionally puts the address on a dummy
// link, binds both listeners, and serves until ctx ends. docs/node-local-dns.md
// has the design and how the kubelet's clusterDNS must be set.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/autonode/autonode/internal/locallink"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// Defaults for Options.
const (
	DefaultLinkName      = "autonode-dns"
	DefaultPort          = 53
	DefaultClusterDomain = "cluster.local"
)

// PortAny, as Options.Port, binds a free port, the same for UDP and TCP
// (tests and benchmarks); Addr reports it.
const PortAny = -1

// DefaultAddress returns 169.254.20.10, the address upstream
// NodeLocal DNSCache uses, so existing kubelet configurations keep working.
func DefaultAddress() netip.Addr { return netip.AddrFrom4([4]byte{169, 254, 20, 10}) }

// VPCResolver returns the Amazon-provided DNS server of a VPC: the base of
// its primary IPv4 CIDR plus two (10.0.0.2 for 10.0.0.0/16). It returns the
// zero Addr for an invalid or IPv6 prefix, or one too small to hold it:
// IPv6-only subnets use fd00:ec2::253 instead, which callers pass as is.
func VPCResolver(prefix netip.Prefix) netip.Addr {
	if !prefix.IsValid() || !prefix.Addr().Is4() || prefix.Bits() > 30 {
		return netip.Addr{}
	}
	return prefix.Masked().Addr().Next().Next()
}

// Options configures a Resolver. Zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// Registerer receives the resolver's metrics; nil registers none.
	Registerer prometheus.Registerer

	// Address is where the resolver listens. Default is DefaultAddress().
	Address netip.Addr
	// Port is the UDP and TCP port. Default is 53; PortAny picks one.
	Port int
	// CreateLink puts Address (as a /32 or /128) on a dummy link named
	// LinkName, creating the link if needed, before binding; on kernels
	// without the dummy driver the link is an ifb. Leave it off
	// when the address is already configured, as in tests.
	CreateLink bool
	// LinkName names the dummy link. Default is autonode-dns.
	LinkName string
	// NetNS, when set, is the path of a network namespace (/run/netns/x) in
	// which the link is made and the listeners bound; upstream queries still
	// leave from the agent's own namespace. Tests use it to stay off the host.
	NetNS string

	// ClusterDomain is the zone sent to ClusterDNS. Default is cluster.local.
	ClusterDomain string
	// ClusterDNS are the cluster DNS service's addresses (the kube-dns
	// Service IP). A zero port means 53. Required.
	ClusterDNS []netip.AddrPort
	// VPCDNS are the resolvers for every other name: VPCResolver of the
	// VPC's primary CIDR. A zero port means 53. Required.
	VPCDNS []netip.AddrPort
	// UpstreamTimeout bounds one query to one upstream, over UDP and then TCP
	// when the answer was truncated. Default is 2s, below the 5s that glibc
	// waits for a nameserver, so a pod hears back before it gives up on us.
	UpstreamTimeout time.Duration

	// CacheSize bounds the number of cached answers; the least recently used
	// go first. Default is 10000.
	CacheSize int
	// MaxTTL caps how long a positive answer is cached (and the TTLs handed
	// out). Default is 1h.
	MaxTTL time.Duration
	// MaxNegativeTTL caps how long NXDOMAIN and NODATA answers are cached.
	// Default is 30m.
	MaxNegativeTTL time.Duration
	// MaxStale is how long past expiry an answer may still be served while
	// the upstream fails. Default is 1h; negative disables serving stale.
	MaxStale time.Duration
	// StaleTTL is the TTL of stale answers, and how long after a failed
	// refresh a stale entry is served without asking the upstream again
	// (RFC 8767's failure recheck timer). Default is 30s.
	StaleTTL time.Duration
	// UDPSize is the EDNS0 buffer size advertised to clients and upstreams.
	// Default is 1232, which avoids IP fragmentation on any path (DNS flag
	// day 2020).
	UDPSize int
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if !o.Address.IsValid() {
		o.Address = DefaultAddress()
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.LinkName == "" {
		o.LinkName = DefaultLinkName
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = DefaultClusterDomain
	}
	if o.UpstreamTimeout <= 0 {
		o.UpstreamTimeout = 2 * time.Second
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 10000
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = time.Hour
	}
	if o.MaxNegativeTTL <= 0 {
		o.MaxNegativeTTL = 30 * time.Minute
	}
	if o.MaxStale == 0 {
		o.MaxStale = time.Hour
	}
	if o.StaleTTL <= 0 {
		o.StaleTTL = 30 * time.Second
	}
	if o.UDPSize <= 0 {
		o.UDPSize = 1232
	}
}

func (o *Options) validate() error {
	if o.Port != PortAny && (o.Port < 1 || o.Port > 65535) {
		return fmt.Errorf("port %d out of range", o.Port)
	}
	if _, ok := dns.IsDomainName(o.ClusterDomain); !ok {
		return fmt.Errorf("cluster domain %q is not a domain name", o.ClusterDomain)
	}
	for what, ups := range map[string][]netip.AddrPort{"cluster DNS": o.ClusterDNS, "VPC DNS": o.VPCDNS} {
		if len(ups) == 0 {
			return fmt.Errorf("no %s upstream", what)
		}
		for _, u := range ups {
			if !u.Addr().IsValid() {
				return fmt.Errorf("%s upstream %s: invalid address", what, u)
			}
		}
	}
	if o.UDPSize < dns.MinMsgSize || o.UDPSize > dns.MaxMsgSize {
		return fmt.Errorf("UDP size %d outside [%d, %d]", o.UDPSize, dns.MinMsgSize, dns.MaxMsgSize)
	}
	return nil
}

// Resolver is the node-local caching forwarder. It is a subsystem.
type Resolver struct {
	opts          Options
	log           *slog.Logger
	clusterDomain string // lower-case FQDN
	cluster, vpc  upstreamGroup
	cache         *cache
	flight        singleflight.Group
	metrics       *metrics

	// now and exchange are the clock and the wire; tests replace them.
	now      func() time.Time
	exchange func(ctx context.Context, m *dns.Msg, network string, server netip.AddrPort) (*dns.Msg, error)
	// misses counts queries that went past the cache, for tests that need
	// to know every client has arrived.
	misses atomic.Int64

	ready atomic.Bool
	mu    sync.Mutex
	addr  netip.AddrPort // bound address, once ready
}

type upstreamGroup struct {
	name    string // metric label: cluster or vpc
	servers []netip.AddrPort
	next    *atomic.Uint32 // rotates the first server tried
}

// New checks opts and builds a Resolver; nothing is bound until Run.
func New(opts Options) (*Resolver, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("node-local DNS options: %w", err)
	}
	withPort := func(ups []netip.AddrPort) []netip.AddrPort {
		out := make([]netip.AddrPort, len(ups))
		for i, u := range ups {
			if u.Port() == 0 {
				u = netip.AddrPortFrom(u.Addr(), DefaultPort)
			}
			out[i] = u
		}
		return out
	}
	r := &Resolver{
		opts:          opts,
		log:           opts.Logger.With("subsystem", "dns"),
		clusterDomain: strings.ToLower(dns.Fqdn(opts.ClusterDomain)),
		cluster:       upstreamGroup{name: "cluster", servers: withPort(opts.ClusterDNS), next: new(atomic.Uint32)},
		vpc:           upstreamGroup{name: "vpc", servers: withPort(opts.VPCDNS), next: new(atomic.Uint32)},
		now:           time.Now,
	}
	r.exchange = r.exchangeWire
	r.cache = newCache(opts.CacheSize)
	r.metrics = newMetrics(r.cache)
	if opts.Registerer != nil {
		if err := r.metrics.register(opts.Registerer); err != nil {
			return nil, fmt.Errorf("registering node-local DNS metrics: %w", err)
		}
	}
	return r, nil
}

// Name returns "dns".
func (r *Resolver) Name() string { return "dns" }

// Ready returns nil once both listeners are bound and serving.
func (r *Resolver) Ready() error {
	if !r.ready.Load() {
		return errors.New("node-local DNS listeners not bound")
	}
	return nil
}

// Addr returns the address and port served, once Ready.
func (r *Resolver) Addr() netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr
}

// Run sets up the link if asked, binds UDP and TCP, and serves until ctx
// ends; it then shuts both servers down and returns nil. It may be called
// again after it returns an error; the cache survives restarts.
func (r *Resolver) Run(ctx context.Context) error {
	if r.opts.CreateLink {
		typ, err := locallink.Ensure(r.opts.NetNS, r.opts.LinkName, "", []netip.Addr{r.opts.Address})
		if err != nil {
			return err
		}
		if typ != "dummy" {
			r.log.Warn("this kernel has no dummy link driver; the node-local DNS address sits on an ifb link instead", "link", r.opts.LinkName)
		}
		r.log.Info("node-local DNS link ready", "link", r.opts.LinkName, "address", r.opts.Address)
	}
	udp, tcp, err := r.listen()
	if err != nil {
		return err
	}
	addr, _ := netip.ParseAddrPort(udp.LocalAddr().String())
	r.mu.Lock()
	r.addr = addr
	r.mu.Unlock()

	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) { r.serve(ctx, w, req) })
	servers := []*dns.Server{
		// UDPSize sizes the read buffer: queries with EDNS0 options can
		// exceed 512 bytes.
		{PacketConn: udp, Handler: handler, UDPSize: 4096},
		{Listener: tcp, Handler: handler},
	}
	errc := make(chan error, len(servers))
	started := make(chan struct{}, len(servers))
	for _, srv := range servers {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() { errc <- srv.ActivateAndServe() }()
	}
	var runErr error
	// Ready only once both serve: ShutdownContext fails on a server that
	// has not started, and a pod's query should not wait on a dead socket.
	for range servers {
		select {
		case <-started:
		case err := <-errc:
			runErr = err
		}
		if runErr != nil {
			break
		}
	}
	if runErr == nil {
		r.ready.Store(true)
		r.log.Info("node-local DNS serving", "address", addr)
		select {
		case <-ctx.Done():
		case runErr = <-errc:
		}
	}
	r.ready.Store(false)

	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.ShutdownContext(shutdownCtx) // fails only for a server that never started
	}
	_ = udp.Close()
	_ = tcp.Close()
	if runErr != nil && ctx.Err() == nil {
		return fmt.Errorf("serving node-local DNS on %s: %w", addr, runErr)
	}
	r.log.Info("node-local DNS stopped", "address", addr)
	return nil
}
