// Package runtime is the agent's container runtime monitor. Every Interval
// it probes containerd and the kubelet the way pods need them:
//
//   - containerd answers on its socket: Version within Timeout, else
//     ContainerdUnresponsive;
//   - containerd can make a root filesystem: in its own namespace it
//     prepares a snapshot with no parent, mounts it on a temp folder, writes
//     and reads back a byte, unmounts it and removes it, else
//     ContainerdSnapshotFailed. This catches a runtime that answers but
//     cannot mount, which the kubelet still reports as ready;
//   - the kubelet's /healthz answers 200, else KubeletUnhealthy.
//
// Each failing probe is reported on every round it fails (Source
// "runtime"), and a probe that passes again after failing reports its
// reason with Cleared set. A missing socket is a failure, not a skip: on a
// node, containerd's absence is the problem.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/autonode/autonode/health"
)

// SignalSource is the Source of every signal this monitor reports.
const SignalSource = "runtime"

// probeKey names the probe's snapshot. It is fixed so that a snapshot left
// by a crash is found and removed by the next round.
const probeKey = "autonode-health-probe"

// Options configures a Monitor. Zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// Reporter receives the signals. Required.
	Reporter health.Reporter
	// Registerer receives the monitor's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Interval is the time between rounds of probes. Default is 30s.
	Interval time.Duration
	// Timeout bounds each probe (each containerd call, the whole snapshot
	// probe, the healthz request). Default is 10s.
	Timeout time.Duration
	// ContainerdAddress is containerd's socket. Default is
	// /run/containerd/containerd.sock.
	ContainerdAddress string
	// Namespace is the containerd namespace the probe snapshot lives in,
	// kept apart from the kubelet's k8s.io. Default is autonode-health.
	Namespace string
	// Snapshotter is the snapshotter to probe: the one the kubelet's pods
	// use. Default is overlayfs.
	Snapshotter string
	// MountDir is where the probe's temp mount folders are made. Default is
	// the OS temp folder.
	MountDir string
	// KubeletHealthzURL is the kubelet's health endpoint. Default is
	// http://127.0.0.1:10248/healthz. "-" turns the kubelet probe off.
	KubeletHealthzURL string
	// HTTPClient makes the healthz request. Default is a client with no
	// proxy and Timeout.
	HTTPClient *http.Client
}

// Monitor is the container runtime monitor subsystem.
type Monitor struct {
	opts  Options
	log   *slog.Logger
	ready atomic.Bool

	failing map[string]bool // by reason; only Check touches it

	probes   *prometheus.CounterVec
	failures *prometheus.CounterVec
}

// New builds a Monitor and registers its metrics.
func New(opts Options) (*Monitor, error) {
	if opts.Reporter == nil {
		return nil, errors.New("runtime monitor: no Reporter")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Interval <= 0 {
		opts.Interval = 30 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.ContainerdAddress == "" {
		opts.ContainerdAddress = "/run/containerd/containerd.sock"
	}
	if opts.Namespace == "" {
		opts.Namespace = "autonode-health"
	}
	if opts.Snapshotter == "" {
		opts.Snapshotter = "overlayfs"
	}
	if opts.KubeletHealthzURL == "" {
		opts.KubeletHealthzURL = "http://127.0.0.1:10248/healthz"
	}
	if opts.HTTPClient == nil {
		// No proxy: the kubelet is on this host, and a node's HTTP_PROXY
		// must not see (or break) the probe.
		opts.HTTPClient = &http.Client{Timeout: opts.Timeout, Transport: &http.Transport{Proxy: nil}}
	}
	m := &Monitor{opts: opts, log: opts.Logger.With("subsystem", "runtime-monitor"), failing: map[string]bool{}}
	m.probes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "autonode_runtime_probes_total",
		Help: "Runtime probes run, by probe.",
	}, []string{"probe"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "autonode_runtime_probe_failures_total",
		Help: "Runtime probes that failed, by probe.",
	}, []string{"probe"})
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{m.probes, m.failures} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering runtime monitor metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Name implements subsystem.Subsystem.
func (m *Monitor) Name() string { return "runtime-monitor" }

// Ready reports nil once the first round of probes has run.
func (m *Monitor) Ready() error {
	if !m.ready.Load() {
		return errors.New("runtime probes have not run yet")
	}
	return nil
}

// Run probes every Interval until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		m.Check(ctx)
		m.ready.Store(true)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Check runs every probe once and reports the results.
func (m *Monitor) Check(ctx context.Context) {
	err := m.probeContainerd(ctx)
	if ctx.Err() != nil {
		return // shutting down: a cancelled probe says nothing about containerd
	}
	m.result(ctx, "containerd", health.ReasonContainerdUnresponsive, health.Fatal, err)
	if m.opts.KubeletHealthzURL != "-" {
		err := m.probeKubelet(ctx)
		if ctx.Err() != nil {
			return
		}
		m.result(ctx, "kubelet", health.ReasonKubeletUnhealthy, health.Warning, err)
	}
}

// probeContainerd asks containerd its version, then probes a snapshot. A
// snapshot failure is reported here; the returned error is for
// ContainerdUnresponsive only, and while containerd does not answer the
// snapshot probe is not run (its state stays as it was).
func (m *Monitor) probeContainerd(ctx context.Context) error {
	addr := m.opts.ContainerdAddress
	// A missing socket is the clearest failure; say so rather than let gRPC
	// time out on it.
	if _, err := os.Stat(addr); err != nil {
		return fmt.Errorf("containerd socket %s: %w", addr, err)
	}
	c, err := client.New(addr, client.WithTimeout(m.opts.Timeout), client.WithDefaultNamespace(m.opts.Namespace))
	if err != nil {
		return fmt.Errorf("connecting to containerd at %s: %w", addr, err)
	}
	defer c.Close()
	vctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	v, err := c.Version(vctx)
	cancel()
	if err != nil {
		return fmt.Errorf("containerd at %s did not answer Version within %s: %w", addr, m.opts.Timeout, err)
	}
	m.log.Debug("containerd answered", "address", addr, "version", v.Version)

	serr := m.probeSnapshot(ctx, c)
	if ctx.Err() == nil {
		m.result(ctx, "snapshot", health.ReasonContainerdSnapshotFailed, health.Fatal, serr)
	}
	return nil
}

// probeSnapshot prepares, mounts, writes, reads, unmounts and removes a
// snapshot. The snapshot is held by a short lease, so that containerd's
// garbage collector removes it even if the agent dies half way.
func (m *Monitor) probeSnapshot(ctx context.Context, c *client.Client) (err error) {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(ctx, m.opts.Namespace), m.opts.Timeout)
	defer cancel()
	name := m.opts.Snapshotter
	ctx, done, err := c.WithLease(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		return fmt.Errorf("creating a lease in namespace %s: %w", m.opts.Namespace, err)
	}
	defer func() {
		// Deleting the lease lets the GC collect what the steps below left.
		if derr := done(context.WithoutCancel(ctx)); derr != nil && err == nil {
			err = fmt.Errorf("deleting the probe lease: %w", derr)
		}
	}()
	sn := c.SnapshotService(name)
	if err := sn.Remove(ctx, probeKey); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("removing an old probe snapshot %s from snapshotter %s: %w", probeKey, name, err)
	}
	mounts, err := sn.Prepare(ctx, probeKey, "")
	if err != nil {
		return fmt.Errorf("preparing snapshot %s in snapshotter %s: %w", probeKey, name, err)
	}
	defer func() {
		if rerr := sn.Remove(context.WithoutCancel(ctx), probeKey); rerr != nil && err == nil {
			err = fmt.Errorf("removing snapshot %s from snapshotter %s: %w", probeKey, name, rerr)
		}
	}()
	target, err := os.MkdirTemp(m.opts.MountDir, "autonode-runtime-probe-")
	if err != nil {
		return fmt.Errorf("making a mount folder for snapshot %s: %w", probeKey, err)
	}
	defer os.Remove(target)
	if err := mount.All(mounts, target); err != nil {
		return fmt.Errorf("mounting snapshot %s of snapshotter %s on %s: %w", probeKey, name, target, err)
	}
	defer func() {
		if uerr := mount.UnmountAll(target, 0); uerr != nil && err == nil {
			err = fmt.Errorf("unmounting snapshot %s from %s: %w", probeKey, target, uerr)
		}
	}()
	f := filepath.Join(target, "probe")
	if err := os.WriteFile(f, []byte{0x5a}, 0o600); err != nil {
		return fmt.Errorf("writing to snapshot %s of snapshotter %s: %w", probeKey, name, err)
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return fmt.Errorf("reading from snapshot %s of snapshotter %s: %w", probeKey, name, err)
	}
	if len(b) != 1 || b[0] != 0x5a {
		return fmt.Errorf("snapshot %s of snapshotter %s: read back %x, wrote 5a", probeKey, name, b)
	}
	return nil
}

// probeKubelet GETs the kubelet's healthz.
func (m *Monitor) probeKubelet(ctx context.Context) error {
	url := m.opts.KubeletHealthzURL
	ctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("kubelet healthz %s: %w", url, err)
	}
	resp, err := m.opts.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("kubelet healthz %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("kubelet healthz %s: %s: %q", url, resp.Status, body)
	}
	return nil
}

// result reports one probe's outcome: a failure every round, a pass once
// after a failure (Cleared).
func (m *Monitor) result(ctx context.Context, probe, reason string, sev health.Severity, err error) {
	m.probes.WithLabelValues(probe).Inc()
	was := m.failing[reason]
	m.failing[reason] = err != nil
	switch {
	case err != nil:
		m.failures.WithLabelValues(probe).Inc()
		if !was {
			m.log.Error("runtime probe failing", "probe", probe, "reason", reason, "err", err)
		}
		m.opts.Reporter.Report(ctx, health.Signal{
			Source: SignalSource, Condition: health.ContainerRuntimeReady, Reason: reason, Severity: sev, Message: err.Error(),
		})
	case was:
		m.log.Info("runtime probe passing again", "probe", probe, "reason", reason)
		m.opts.Reporter.Report(ctx, health.Signal{
			Source: SignalSource, Condition: health.ContainerRuntimeReady, Reason: reason, Severity: sev,
			Message: fmt.Sprintf("%s probe passes again", probe), Cleared: true,
		})
	}
}
