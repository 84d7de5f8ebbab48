// Package sandboxes tells the IPAM pool which pod sandboxes the container
// runtime has, by asking containerd over its socket.
//
// The CRI plugin keeps each pod sandbox as a containerd container labelled
// io.cri-containerd.kind=sandbox in its namespace (k8s.io), whose id is the
// sandbox id the kubelet passes to CNI as CNI_CONTAINERID. Containerd lists
// those ids (ipam.Sandboxes) and reads the address each one was given from the
// sandbox metadata the CRI plugin stores with it (ipam.SandboxAddresses).
//
// A containerd that cannot be reached is an error, never an empty answer: an
// empty answer would make the pool release every address in use.
package sandboxes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/autonode/autonode/agent/network/ipam"
)

const (
	// DefaultAddress is containerd's socket.
	DefaultAddress = "/run/containerd/containerd.sock"
	// DefaultNamespace is the CRI plugin's containerd namespace.
	DefaultNamespace = "k8s.io"
	// DefaultTimeout bounds each call to containerd.
	DefaultTimeout = 10 * time.Second

	// KindLabel and KindSandbox are the label, and its value, that the CRI
	// plugin puts on the container behind each pod sandbox.
	KindLabel   = "io.cri-containerd.kind"
	KindSandbox = "sandbox"
	// MetadataExtension is the container extension holding the CRI
	// plugin's sandbox metadata (containerd 1.x and 2.x alike): JSON of the
	// form {"Version":"v1"|"v2","Metadata":{"ID":…,"IP":…,"AdditionalIPs":[…],
	// "CNIResult":{"Interfaces":{name:{"IPConfigs":[{"IP":…}],"Sandbox":…}}}}}.
	MetadataExtension = "io.cri-containerd.sandbox.metadata"
	// DefaultIfName is the interface the CRI plugin asks CNI to make for the
	// pod's first network (go-cni's prefix "eth" and index 0).
	DefaultIfName = "eth0"
)

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("sandboxes: containerd client closed")

var (
	_ ipam.Sandboxes        = (*Containerd)(nil)
	_ ipam.SandboxAddresses = (*Containerd)(nil)
)

// Options configures a Containerd. Zero values take the defaults.
type Options struct {
	// Address is containerd's socket; DefaultAddress when empty.
	Address string
	// Namespace is the containerd namespace the CRI plugin uses;
	// DefaultNamespace when empty.
	Namespace string
	// Timeout bounds each call to containerd; DefaultTimeout when zero.
	Timeout time.Duration
	// Logger receives warnings; discarded when nil.
	Logger *slog.Logger
}

// Containerd lists the CRI plugin's pod sandboxes in containerd. It dials on
// first use, drops its connection after a failed call so the next call dials
// afresh, and is safe for concurrent use. Close it when done.
type Containerd struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	client *client.Client // nil until first use and after a failure
	closed bool
}

// New returns a Containerd; it does not connect until first used.
func New(opts Options) *Containerd {
	if opts.Address == "" {
		opts.Address = DefaultAddress
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Containerd{opts: opts, log: log.With("containerd", opts.Address, "namespace", opts.Namespace)}
}

// Live returns the ids of the pod sandboxes containerd has, whether running
// or not. It returns an error, never an empty map, when containerd does not
// answer.
func (c *Containerd) Live(ctx context.Context) (map[string]bool, error) {
	recs, err := c.list(ctx)
	if err != nil {
		return nil, err
	}
	live := make(map[string]bool, len(recs))
	for _, r := range recs {
		live[r.ID] = true
	}
	return live, nil
}

// Addresses returns the pod address the CRI plugin recorded for each
// sandbox, keyed by sandbox id and the interface inside the pod: each
// interface of the CNI result that lies in the pod's netns (its first IPv4
// address, else its first address), or, for metadata without a CNI result,
// the pod IP on DefaultIfName. Host-network sandboxes have no entry.
//
// When the metadata of some sandbox cannot be read (missing, undecodable or
// of an unknown version) it logs a warning and returns nil and no error: a
// partial answer would let the pool hand that pod's address to another pod,
// while nil makes it withhold addresses as if Addresses were not
// implemented. An unreachable containerd is an error.
func (c *Containerd) Addresses(ctx context.Context) (map[ipam.Key]netip.Addr, error) {
	recs, err := c.list(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[ipam.Key]netip.Addr)
	for _, r := range recs {
		addrs, err := sandboxAddresses(r)
		if err != nil {
			c.log.Warn("cannot read a sandbox's address; not reporting any", "sandbox", r.ID, "err", err)
			return nil, nil
		}
		for ifName, a := range addrs {
			out[ipam.Key{ContainerID: r.ID, IfName: ifName}] = a
		}
	}
	return out, nil
}

// Close drops the connection; later calls return ErrClosed.
func (c *Containerd) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.client == nil {
		return nil
	}
	err := c.client.Close()
	c.client = nil
	if err != nil {
		return fmt.Errorf("closing the connection to containerd at %s: %w", c.opts.Address, err)
	}
	return nil
}

// list returns the sandbox containers' records.
func (c *Containerd) list(ctx context.Context) ([]containers.Container, error) {
	cl, err := c.connect()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(ctx, c.opts.Namespace), c.opts.Timeout)
	defer cancel()
	recs, err := cl.ContainerService().List(ctx, fmt.Sprintf("labels.%q==%q", KindLabel, KindSandbox))
	if err != nil {
		c.drop(cl)
		return nil, fmt.Errorf("listing pod sandboxes in containerd at %s (namespace %s): %w", c.opts.Address, c.opts.Namespace, err)
	}
	return recs, nil
}

// connect returns the client, making it on first use. client.New does not
// dial; the first call does.
func (c *Containerd) connect() (*client.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.client != nil {
		return c.client, nil
	}
	// containerd's dialer would retry a missing socket until the timeout;
	// a node without containerd answers at once instead.
	if _, err := os.Stat(c.opts.Address); err != nil {
		return nil, fmt.Errorf("connecting to containerd at %s: %w", c.opts.Address, err)
	}
	cl, err := client.New(c.opts.Address, client.WithTimeout(c.opts.Timeout), client.WithDefaultNamespace(c.opts.Namespace))
	if err != nil {
		return nil, fmt.Errorf("connecting to containerd at %s: %w", c.opts.Address, err)
	}
	c.client = cl
	return cl, nil
}

// drop closes cl after a failed call, unless another call replaced it
// already, so that the next call dials afresh.
func (c *Containerd) drop(cl *client.Client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client != cl {
		return
	}
	c.client = nil
	if err := cl.Close(); err != nil {
		c.log.Debug("closing a failed containerd connection", "err", err)
	}
}

// metadata is the part of the CRI plugin's sandbox metadata read here. Config
// is left out: v1 stores it as JSON and v2 as protobuf.
type metadata struct {
	Version  string
	Metadata struct {
		ID            string
		IP            string
		AdditionalIPs []string
		CNIResult     *struct {
			Interfaces map[string]*struct {
				IPConfigs []*struct{ IP string }
				// Sandbox is the netns path of an interface inside the
				// pod, empty for one on the host.
				Sandbox string
			}
		}
	}
}

// sandboxAddresses reads one sandbox's addresses by interface name.
func sandboxAddresses(r containers.Container) (map[string]netip.Addr, error) {
	ext, ok := r.Extensions[MetadataExtension]
	if !ok || ext == nil {
		return nil, fmt.Errorf("no %s extension", MetadataExtension)
	}
	var m metadata
	if err := json.Unmarshal(ext.GetValue(), &m); err != nil {
		return nil, fmt.Errorf("decoding the %s extension (%s): %w", MetadataExtension, ext.GetTypeUrl(), err)
	}
	if m.Version != "v1" && m.Version != "v2" {
		return nil, fmt.Errorf("sandbox metadata version %q is not v1 or v2", m.Version)
	}
	out := map[string]netip.Addr{}
	if res := m.Metadata.CNIResult; res != nil {
		for name, iface := range res.Interfaces {
			// go-cni files addresses that name no interface under the
			// default name, with no netns.
			if iface == nil || (iface.Sandbox == "" && name != DefaultIfName) {
				continue
			}
			var ips []string
			for _, ipc := range iface.IPConfigs {
				if ipc != nil {
					ips = append(ips, ipc.IP)
				}
			}
			a, ok, err := pick(ips)
			if err != nil {
				return nil, fmt.Errorf("interface %s: %w", name, err)
			}
			if ok {
				out[name] = a
			}
		}
	}
	if len(out) == 0 && m.Metadata.IP != "" {
		a, ok, err := pick(append([]string{m.Metadata.IP}, m.Metadata.AdditionalIPs...))
		if err != nil {
			return nil, err
		}
		if ok {
			out[DefaultIfName] = a
		}
	}
	return out, nil
}

// pick returns the first IPv4 address of ips, else the first address,
// ignoring loopback addresses.
func pick(ips []string) (netip.Addr, bool, error) {
	addrs := make([]netip.Addr, 0, len(ips))
	for _, s := range ips {
		if s == "" { // a nil net.IP
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, false, fmt.Errorf("sandbox address: %w", err)
		}
		if a = a.Unmap(); !a.IsLoopback() { // the CRI plugin's lo network
			addrs = append(addrs, a)
		}
	}
	if i := slices.IndexFunc(addrs, netip.Addr.Is4); i >= 0 {
		return addrs[i], true, nil
	}
	if len(addrs) > 0 {
		return addrs[0], true, nil
	}
	return netip.Addr{}, false, nil
}
