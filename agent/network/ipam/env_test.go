package ipam

import (
	"context"
	"errors"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/autonode/autonode/health"
	"github.com/autonode/autonode/health/healthtest"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	sdkimds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	sdkec2 "github.com/aws/aws-sdk-go-v2/service/ec2"

	ec2emu "github.com/autonode/autonode/sandbox/ec2"
	imdsemu "github.com/autonode/autonode/sandbox/imds"
	"github.com/autonode/autonode/sandbox/vpc"
)

// env is one instance in an emulated VPC, reached through the real SDK
// clients, with a fake clock, runtime and health reporter.
type env struct {
	model   *vpc.Model
	srv     *ec2emu.Server
	inst    vpc.Instance
	ec2     *sdkec2.Client
	imds    *sdkimds.Client
	subnets []string // the instance's subnet first
	clock   *fakeClock
	live    *fakeSandboxes
	health  *healthtest.Recorder
	dir     string
}

func newEnv(t testing.TB, instanceType string) *env {
	t.Helper()
	m, err := vpc.New(vpc.Config{Subnets: []vpc.SubnetConfig{
		{Zone: "us-west-2a", CIDR: "10.0.0.0/20"},
		{Zone: "us-west-2a", CIDR: "10.0.16.0/24"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var subnets []string
	for _, s := range m.Subnets() {
		subnets = append(subnets, s.ID)
	}
	inst, err := m.LaunchInstance(instanceType, subnets[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ec2emu.New(ec2emu.Options{Model: m})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	md := httptest.NewServer(imdsemu.New(m, inst.ID, imdsemu.Options{}))
	t.Cleanup(md.Close)
	cfg := aws.Config{Region: "us-west-2", Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", "")}
	client := sdkec2.NewFromConfig(cfg, func(o *sdkec2.Options) {
		o.BaseEndpoint = aws.String(ts.URL)
		// Many injected faults would drain the standard retry quota; short
		// backoff keeps the tests quick.
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.RateLimiter = ratelimit.None
			so.MaxAttempts = 5
			so.Backoff = retry.NewExponentialJitterBackoff(5 * time.Millisecond)
		})
	})
	return &env{
		model: m, srv: srv, inst: inst, ec2: client, subnets: subnets,
		imds:   sdkimds.New(sdkimds.Options{Endpoint: md.URL}),
		clock:  &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		live:   &fakeSandboxes{live: map[string]bool{}},
		health: &healthtest.Recorder{},
		dir:    t.TempDir(),
	}
}

// config is a pool configuration for the env; change sets more.
func (e *env) config(change func(*Config)) Config {
	c := Config{
		EC2: e.ec2, IMDS: e.imds, Sandboxes: e.live, Health: e.health, Now: e.clock.Now,
		CheckpointPath: filepath.Join(e.dir, "ipam", "checkpoint.json"),
		Cluster:        "test", ShrinkDelay: time.Millisecond,
		DetachPollInitial: time.Millisecond, DetachPollMax: 10 * time.Millisecond,
		InitialBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond,
	}
	if change != nil {
		change(&c)
	}
	return c
}

// started returns a started pool.
func (e *env) started(t testing.TB, change func(*Config)) *Pool {
	t.Helper()
	p, err := New(e.config(change))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return p
}

// settle runs reconcile passes, a millisecond of fake time apart (so that
// ShrinkDelay passes but cooldowns do not), until nothing changes.
func (e *env) settle(t testing.TB, p *Pool) {
	t.Helper()
	mutating := []string{"CreateNetworkInterface", "AssignPrivateIpAddresses", "UnassignPrivateIpAddresses", "DeleteNetworkInterface"}
	calls := func() (n int) {
		for _, a := range mutating {
			n += e.srv.Calls(a)
		}
		return n
	}
	quiet := 0
	for range 50 {
		before := calls()
		if err := p.reconcile(t.Context()); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		e.clock.Advance(time.Millisecond)
		if calls() == before {
			if quiet++; quiet == 3 {
				return
			}
		} else {
			quiet = 0
		}
	}
	t.Fatal("pool did not settle in 50 passes")
}

// allocate allocates key, settling the pool while it is growing.
func (e *env) allocate(t testing.TB, p *Pool, id string) Allocation {
	t.Helper()
	for range 5 {
		a, err := p.Allocate(t.Context(), Key{ContainerID: id, IfName: "eth0"}, PodMeta{Namespace: "ns", Name: "pod-" + id})
		if errors.Is(err, ErrPoolGrowing) {
			e.settle(t, p)
			continue
		}
		if err != nil {
			t.Fatalf("Allocate(%s): %v", id, err)
		}
		e.live.set(id, true)
		return a
	}
	t.Fatalf("Allocate(%s): pool never grew", id)
	return Allocation{}
}

func key(id string) Key { return Key{ContainerID: id, IfName: "eth0"} }

// ec2Addrs returns the secondary addresses (prefixes expanded) EC2 assigns
// to the instance's ENIs, and the ENIs.
func (e *env) ec2Addrs(t testing.TB) (map[netip.Addr]string, []vpc.ENI) {
	t.Helper()
	enis, err := e.model.InstanceENIs(e.inst.ID)
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Addr]string{}
	for _, n := range enis {
		for _, ip := range n.PrivateIPs {
			if !ip.Primary {
				out[ip.Address] = n.ID
			}
		}
		for _, q := range n.IPv4Prefixes {
			for a := q.Addr(); q.Contains(a); a = a.Next() {
				out[a] = n.ID
			}
		}
	}
	return out, enis
}

// checkMatchesEC2 fails unless the pool's addresses are exactly EC2's.
func (e *env) checkMatchesEC2(t testing.TB, p *Pool) {
	t.Helper()
	want, _ := e.ec2Addrs(t)
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, s := range p.slots {
		if want[a] != s.eni.id {
			t.Errorf("pool has %s on %s; EC2 has it on %q", a, s.eni.id, want[a])
		}
	}
	for a, id := range want {
		if p.slots[a] == nil {
			t.Errorf("EC2 assigns %s on %s; the pool lacks it (leaked)", a, id)
		}
	}
}

func (p *Pool) statsNow() (stats, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.statsLocked(p.cfg.Now()), len(p.enis)
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type fakeSandboxes struct {
	mu    sync.Mutex
	live  map[string]bool
	addrs map[Key]netip.Addr // served only through withAddresses
}

func (f *fakeSandboxes) set(id string, live bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if live {
		f.live[id] = true
	} else {
		delete(f.live, id)
	}
}

func (f *fakeSandboxes) Live(context.Context) (map[string]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]bool, len(f.live))
	for k, v := range f.live {
		out[k] = v
	}
	return out, nil
}

// withAddresses is a runtime that also reports each sandbox's address.
type withAddresses struct{ *fakeSandboxes }

func (w withAddresses) Addresses(context.Context) (map[Key]netip.Addr, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[Key]netip.Addr{}
	for k, a := range w.addrs {
		if w.live[k.ContainerID] {
			out[k] = a
		}
	}
	return out, nil
}

// hasWarning reports whether r got a NetworkingReady warning for reason.
func hasWarning(r *healthtest.Recorder, reason string) bool {
	return slices.ContainsFunc(r.Signals(), func(s health.Signal) bool {
		return s.Reason == reason && !s.Cleared && s.Severity == health.Warning && s.Condition == health.NetworkingReady
	})
}
