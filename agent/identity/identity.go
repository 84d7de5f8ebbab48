// Package identity serves EKS Pod Identity credentials to the pods of the
// node, as the eks-pod-identity-agent does: a dummy link holds
// 169.254.170.23/32 and fd00:ec2::23/128, and GET /v1/credentials on port 80
// of both trades the pod's projected service-account token (the
// Authorization header) for temporary credentials of the role associated
// with its service account, in the shape the SDKs' container credential
// provider reads ({AccessKeyId, SecretAccessKey, Token, AccountId,
// Expiration}).
//
// Credentials come from EKS Auth's AssumeRoleForPodIdentity (see the eksauth
// subpackage) and are cached per token hash: concurrent requests for one
// token make one call, entries are refreshed in the background halfway to
// expiry at a bounded rate, kept and served through EKS Auth outages until
// they expire, dropped when EKS Auth rejects the token for good, and evicted
// least-recently-used beyond a size bound. Tokens and credentials never
// reach the logs; a 12-digit prefix of the token's SHA-256 stands in.
//
// The Server is a subsystem: Run sets up the link and listeners and serves
// until ctx ends. Its metrics are registered with Options.Registerer, for the
// agent's own status server; nothing but /v1/credentials is served to pods.
// docs/pod-identity.md has the error table and the design.
package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The endpoint's well-known link, addresses and port.
const (
	DefaultLinkName = "pod-id-link0"
	DefaultPort     = 80
)

// PortAny, as Options.Port, binds a free port on each address (tests).
const PortAny = -1

// DefaultAddresses returns 169.254.170.23 and fd00:ec2::23, where the SDKs
// look for Pod Identity (AWS_CONTAINER_CREDENTIALS_FULL_URI).
func DefaultAddresses() []netip.Addr {
	return []netip.Addr{netip.MustParseAddr("169.254.170.23"), netip.MustParseAddr("fd00:ec2::23")}
}

// Options configures a Server.
type Options struct {
	// ClusterName is the EKS cluster the node belongs to. Required.
	ClusterName string
	// EKSAuth fetches credentials: an *eksauth.Client. Required.
	EKSAuth CredentialsFetcher
	// LinkName is the dummy link that holds the addresses. Default is
	// pod-id-link0.
	LinkName string
	// LinkType is the kind of link made: "dummy", "ifb", or empty (default)
	// for a dummy link, falling back to ifb on kernels built without the
	// dummy driver (CONFIG_DUMMY), such as the test VMs'; both hold local
	// addresses alike.
	LinkType string
	// Addresses are the addresses served, one /32 or /128 each on the link;
	// requests naming any other Host get 403. Default is DefaultAddresses().
	Addresses []netip.Addr
	// Port is the TCP port on every address. Default is 80; PortAny binds a
	// free one per address (see Addrs).
	Port int
	// NoLink skips the link: the addresses must already be configured, such
	// as loopback addresses in tests.
	NoLink bool
	// NetNS, when set, is the path of a network namespace (/run/netns/x) in
	// which the link is made and the listeners bound, instead of the
	// agent's own; tests use it to stay off the host.
	NetNS string
	// Cache tunes the credential cache.
	Cache CacheOptions
	// MaxHeaderBytes bounds a request's headers. Default is 16 KiB: a
	// token is 1-2 KiB.
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds reading a request's headers. Default is 5s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections. Default is 60s.
	IdleTimeout time.Duration
	// Logger receives the endpoint's logs. Default discards.
	Logger *slog.Logger
	// Registerer receives the endpoint's metrics; nil registers none. They
	// are also available from Collectors.
	Registerer prometheus.Registerer
	// Now is the clock for token and credential expiry. Default is time.Now.
	Now func() time.Time
}

// maxBodyBytes bounds a request body; a GET has none.
const maxBodyBytes = 1 << 10

// Server is the Pod Identity endpoint and its credential cache.
type Server struct {
	opts    Options
	log     *slog.Logger
	m       *metrics
	cache   *cache
	allowed []netip.Addr

	mu      sync.Mutex
	addrs   []net.Addr
	serving bool
	lastErr error
}

// New checks opts and builds a Server; nothing is bound until Run.
func New(opts Options) (*Server, error) {
	if opts.ClusterName == "" {
		return nil, errors.New("pod identity: no cluster name")
	}
	if opts.EKSAuth == nil {
		return nil, errors.New("pod identity: no EKS Auth client")
	}
	if opts.LinkName == "" {
		opts.LinkName = DefaultLinkName
	}
	if t := opts.LinkType; t != "" && t != "dummy" && t != "ifb" {
		return nil, fmt.Errorf("pod identity: link type %q: want dummy, ifb or empty", t)
	}
	if len(opts.Addresses) == 0 {
		opts.Addresses = DefaultAddresses()
	}
	for _, a := range opts.Addresses {
		if !a.IsValid() || a.Zone() != "" {
			return nil, fmt.Errorf("pod identity: address %q: want a plain IPv4 or IPv6 address", a)
		}
	}
	switch {
	case opts.Port == 0:
		opts.Port = DefaultPort
	case opts.Port == PortAny:
		opts.Port = 0
	case opts.Port < 0 || opts.Port > 65535:
		return nil, fmt.Errorf("pod identity: port %d out of range", opts.Port)
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = 16 << 10
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = 5 * time.Second
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 60 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, log: opts.Logger, allowed: opts.Addresses}
	s.m = newMetrics(func() float64 { return float64(s.cache.lru.Len()) })
	c, err := newCache(opts.ClusterName, opts.EKSAuth, opts.Cache, opts.Now, opts.Logger, s.m)
	if err != nil {
		return nil, fmt.Errorf("pod identity: %w", err)
	}
	s.cache = c
	if opts.Registerer != nil {
		for _, col := range s.m.collectors() {
			if err := opts.Registerer.Register(col); err != nil {
				return nil, fmt.Errorf("registering pod identity metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Name implements subsystem.Subsystem.
func (s *Server) Name() string { return "identity" }

// Collectors returns the endpoint's metrics, for a caller that registers
// them itself.
func (s *Server) Collectors() []prometheus.Collector { return s.m.collectors() }

// Ready reports nil while the endpoint serves on every address.
func (s *Server) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serving {
		return nil
	}
	if s.lastErr != nil {
		return fmt.Errorf("pod identity endpoint not serving: %w", s.lastErr)
	}
	return errors.New("pod identity endpoint not serving yet")
}

// Addrs returns the addresses bound by the current Run, ports included.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]net.Addr(nil), s.addrs...)
}

func (s *Server) setState(serving bool, addrs []net.Addr, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serving, s.addrs, s.lastErr = serving, addrs, err
}

// Run makes the link (unless NoLink), binds every address and serves until
// ctx ends, refreshing cached credentials meanwhile. It adopts a link and
// addresses an earlier run left, and leaves them in place when it returns,
// so that a restart does not take the endpoint from pods' routes. The cache
// outlives a failed Run.
func (s *Server) Run(ctx context.Context) error {
	lns, err := s.setup()
	if err != nil {
		s.setState(false, nil, err)
		return err
	}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		ReadTimeout:       s.opts.ReadHeaderTimeout + time.Second,
		// Long enough for an EKS Auth call with its retries.
		WriteTimeout:   s.cache.opts.FetchTimeout + 5*time.Second,
		IdleTimeout:    s.opts.IdleTimeout,
		MaxHeaderBytes: s.opts.MaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, len(lns))
	addrs := make([]net.Addr, 0, len(lns))
	for _, ln := range lns {
		addrs = append(addrs, ln.Addr())
		go func() { errc <- srv.Serve(ln) }()
	}
	cacheCtx, stopCache := context.WithCancel(ctx)
	cacheDone := make(chan struct{})
	go func() { defer close(cacheDone); s.cache.run(cacheCtx) }()
	s.setState(true, addrs, nil)
	s.log.Info("pod identity endpoint serving", "addresses", addrs, "link", s.linkName())

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		runErr = fmt.Errorf("serving pod identity: %w", err)
	}
	s.setState(false, nil, runErr)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
	}
	stopCache()
	<-cacheDone
	return runErr
}

func (s *Server) linkName() string {
	if s.opts.NoLink {
		return ""
	}
	return s.opts.LinkName
}
