// Package cni is the agent side of the autonode CNI plugin: a server on a
// unix socket that answers the requests autonode-cni forwards (protocol in
// package cniwire) by allocating addresses from an Allocator and wiring pods
// with the datapath. It runs as the agent's "cni" subsystem.
//
// Verbs: ADD allocates (idempotently per container and interface), wires the
// pod, attaches its NetworkPolicy (Options.Policy) and returns a CNI result
// in the netconf's cniVersion, merged after any prevResult; DEL unwires,
// removes the policy and releases, and succeeds for unknown containers;
// CHECK verifies the wiring; STATUS reports whether addresses can be handed
// out; GC releases every attachment missing from cni.dev/valid-attachments
// and removes veths and rules that belong to no attachment.
package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/autonode/autonode/agent/network/cni/cniwire"
	"github.com/autonode/autonode/agent/network/datapath"
	"github.com/autonode/autonode/agent/network/ipam"
	"github.com/autonode/autonode/health"
)

// Allocator hands out pod addresses; the IPAM pool implements it.
//
// Allocate returns the allocation for key, creating it when there is none:
// a repeated ADD gets the same address. Release frees key's address and is
// not an error for an unknown key. Get and List read the current
// allocations. CanAllocate returns nil while Allocate can succeed without
// waiting, or an error saying why not (no ENI yet, pool empty, EC2 down).
type Allocator interface {
	Allocate(ctx context.Context, key ipam.Key, pod ipam.PodMeta) (ipam.Allocation, error)
	Release(ctx context.Context, key ipam.Key) error
	Get(key ipam.Key) (ipam.Allocation, bool)
	List() []ipam.Allocation
	CanAllocate() error
}

// Options configures a Server.
type Options struct {
	Logger *slog.Logger
	// SocketPath is where the server listens. Default is
	// cniwire.DefaultSocket.
	SocketPath string
	Allocator  Allocator
	Datapath   *datapath.Datapath
	// RequestTimeout bounds the work for one request, which runs to the end
	// even if the binary gave up waiting, so a retry finds it done. Default
	// is 30s.
	RequestTimeout time.Duration
	// Health receives RouteMissing when a pod's veth, address, routes or
	// rules go missing, and its clearing; nil checks nothing.
	Health health.Reporter
	// CheckInterval is how often every attachment is checked. Default 1m.
	CheckInterval time.Duration
	// Policy, when set, enforces NetworkPolicy: ADD attaches the pod's
	// rules before it returns, DEL and GC remove them. Nil enforces none.
	Policy PodPolicy
}

// PodPolicy is the NetworkPolicy engine as the CNI verbs see it.
//
// Attach programs the pod's rules on its host veth, which exists and is
// up; when Attach fails, so does ADD, undoing the wiring. Detach removes them after the veth is gone and
// is not an error for an unknown interface.
type PodPolicy interface {
	Attach(ctx context.Context, pod PodInfo) error
	Detach(ctx context.Context, hostIf string) error
}

// PodInfo is what ADD knows of a pod: its host veth, its identity from
// CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID) and its address.
type PodInfo struct {
	HostIf               string
	Namespace, Name, UID string
	IP                   netip.Addr
}

// Server is the CNI backend subsystem.
type Server struct {
	log   *slog.Logger
	opts  Options
	ready atomic.Bool
	// gcMu lets verbs on different attachments run together (a DEL spends
	// ~20 ms waiting for the kernel to unregister the veth) while GC, which
	// reasons about every attachment at once, runs alone.
	gcMu sync.RWMutex
	// keys serialises verbs on one attachment.
	keys keyLocks
	// failing is whether the last periodic check found a broken attachment;
	// only the check loop touches it.
	failing bool
}

// keyLocks hands out one mutex per attachment, dropped when unused.
type keyLocks struct {
	mu    sync.Mutex
	locks map[ipam.Key]*keyLock
}

type keyLock struct {
	sync.Mutex
	users int
}

func (k *keyLocks) lock(key ipam.Key) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[ipam.Key]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{}
		k.locks[key] = l
	}
	l.users++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// New builds a Server; Run serves.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SocketPath == "" {
		opts.SocketPath = cniwire.DefaultSocket
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.Allocator == nil || opts.Datapath == nil {
		return nil, errors.New("cni server needs an Allocator and a Datapath")
	}
	return &Server{log: opts.Logger.With("subsystem", "cni"), opts: opts}, nil
}

// Name is the subsystem name.
func (s *Server) Name() string { return "cni" }

// Ready is nil once the socket is listening.
func (s *Server) Ready() error {
	if !s.ready.Load() {
		return fmt.Errorf("not listening on %s yet", s.opts.SocketPath)
	}
	return nil
}

// Run applies the node-wide datapath settings, then serves on the socket
// until ctx ends, and removes the socket.
func (s *Server) Run(ctx context.Context) error {
	if err := s.opts.Datapath.SetupNode(ctx); err != nil {
		return fmt.Errorf("setting up the node datapath: %w", err)
	}
	path := s.opts.SocketPath
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating socket folder for %s: %w", path, err)
	}
	// A socket left by an earlier run would make Listen fail.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", path, err)
	}
	defer os.Remove(path)
	// Only root (the runtime) may ask for pod networking.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("restricting socket %s: %w", path, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+cniwire.Path, s.serveHTTP)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.ready.Store(true)
	defer s.ready.Store(false)
	s.log.Info("serving CNI requests", "socket", path)
	checkCtx, stopChecks := context.WithCancel(ctx)
	defer stopChecks()
	interval := s.opts.CheckInterval
	if interval <= 0 {
		interval = time.Minute
	}
	go s.runChecks(checkCtx, interval)

	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", path, err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutting down %s: %w", path, err)
	}
	return nil
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	var req cniwire.Request
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, "decoding request: "+err.Error(), http.StatusBadRequest)
		return
	}
	// The work finishes even if the binary stops waiting: half an ADD
	// would have to be undone anyway, and a retry then finds it done.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.opts.RequestTimeout)
	defer cancel()
	resp := s.Handle(ctx, req)
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(resp); err != nil {
		s.log.Warn("writing CNI response", "command", req.Command, "container", req.ContainerID, "err", err)
	}
}

// Handle answers one request; the HTTP handler calls it, and so can tests
// and benchmarks that skip the binary.
func (s *Server) Handle(ctx context.Context, req cniwire.Request) cniwire.Response {
	start := time.Now()
	if req.Command == "GC" {
		s.gcMu.Lock()
		defer s.gcMu.Unlock()
	} else {
		s.gcMu.RLock()
		defer s.gcMu.RUnlock()
		defer s.keys.lock(ipam.Key{ContainerID: req.ContainerID, IfName: req.IfName})()
	}
	var (
		result json.RawMessage
		err    error
	)
	switch req.Command {
	case "ADD":
		result, err = s.add(ctx, req)
	case "DEL":
		err = s.del(ctx, req)
	case "CHECK":
		err = s.check(ctx, req)
	case "STATUS":
		err = s.status(req)
	case "GC":
		err = s.gc(ctx, req)
	default:
		err = cniErr(codeInvalidEnv, fmt.Sprintf("unknown CNI command %q", req.Command), nil)
	}
	log := s.log.With("command", req.Command, "container", req.ContainerID, "ifname", req.IfName, "duration", time.Since(start))
	if err != nil {
		log.Warn("CNI request failed", "err", err)
		return cniwire.Response{Error: asTypesError(err)}
	}
	log.Debug("CNI request done")
	return cniwire.Response{Result: result}
}

// podMeta reads the Kubernetes fields of CNI_ARGS ("K=V;K=V").
func podMeta(args, netns string) ipam.PodMeta {
	m := ipam.PodMeta{Netns: netns}
	for kv := range strings.SplitSeq(args, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "K8S_POD_NAMESPACE":
			m.Namespace = v
		case "K8S_POD_NAME":
			m.Name = v
		case "K8S_POD_UID":
			m.UID = v
		}
	}
	return m
}

func podFromAlloc(a ipam.Allocation, netns string, mtu int) datapath.Pod {
	return datapath.Pod{
		ContainerID: a.Key.ContainerID, IfName: a.Key.IfName, Netns: netns,
		Addr: a.Addr, RouteTable: a.RouteTable, ENIMAC: a.MAC, Subnet: a.SubnetCIDR, MTU: mtu,
	}
}

func addrSet(allocs []ipam.Allocation) map[netip.Addr]bool {
	m := make(map[netip.Addr]bool, len(allocs))
	for _, a := range allocs {
		m[a.Addr] = true
	}
	return m
}

func netipAddr(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip.To4())
	return a, ok
}
