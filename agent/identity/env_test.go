package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/autonode/autonode/agent/identity/eksauth"
	emulator "github.com/autonode/autonode/sandbox/eksauth"
)

const (
	testCluster = "sandbox"
	testRegion  = "us-west-2"
	roleA       = "arn:aws:iam::111122223333:role/role-a"
	roleB       = "arn:aws:iam::444455556666:role/role-b"
)

// syncBuffer collects logs written from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// envOptions shapes a test environment.
type envOptions struct {
	// credDuration is how long the emulator's credentials last. Default 6h.
	credDuration time.Duration
	cache        CacheOptions
	// server overrides Options fields that the env does not set itself.
	server func(*Options)
}

// env is an EKS Auth emulator and a Pod Identity endpoint using it, on a
// loopback address of its own, with the endpoint's logs captured.
type env struct {
	emu    *emulator.Server
	issuer *emulator.Issuer
	srv    *Server
	reg    *prometheus.Registry
	logs   *syncBuffer
	// host is the endpoint's host:port; url its credentials URL.
	host, url string
}

// uniqueLoopback returns a random 127.x.y.z, so that tests in packages
// running in parallel never share an address.
func uniqueLoopback() netip.Addr {
	return netip.AddrFrom4([4]byte{127, byte(rand.IntN(254) + 1), byte(rand.IntN(256)), byte(rand.IntN(253) + 2)})
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	iss, err := emulator.NewIssuer("https://oidc.sandbox.test")
	if err != nil {
		t.Fatal(err)
	}
	emu, err := emulator.New(emulator.Options{ClusterName: testCluster, Region: testRegion, Issuer: iss, CredentialDuration: o.credDuration})
	if err != nil {
		t.Fatal(err)
	}
	emu.Associate("ns-a", "sa-a", roleA)
	emu.Associate("ns-b", "sa-b", roleB)
	hs := httptest.NewServer(emu)
	t.Cleanup(hs.Close)

	client, err := eksauth.New(context.Background(), eksauth.Options{
		Region:   testRegion,
		Endpoint: hs.URL,
		Credentials: credentials.StaticCredentialsProvider{Value: aws.Credentials{
			AccessKeyID: emulator.TestAccessKeyID, SecretAccessKey: emulator.TestSecretAccessKey,
		}},
		// Short waits, and no retry quota, so that outage tests stay fast
		// and deterministic.
		Retryer: retry.NewStandard(func(so *retry.StandardOptions) {
			so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 5 * time.Millisecond, nil })
			so.RateLimiter = ratelimit.None
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	addr := uniqueLoopback()
	opts := Options{
		ClusterName: testCluster,
		EKSAuth:     client,
		Addresses:   []netip.Addr{addr},
		Port:        PortAny,
		NoLink:      true,
		Cache:       o.cache,
		Logger:      slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer:  reg,
	}
	if o.server != nil {
		o.server(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{emu: emu, issuer: iss, srv: srv, reg: reg, logs: logs}
	runServer(t, srv)
	if opts.NetNS == "" {
		e.host = srv.Addrs()[0].String()
		e.url = "http://" + e.host + CredentialsPath
	}
	return e
}

// runServer runs srv until the test ends and waits for it to serve.
func runServer(t testing.TB, srv *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() { defer close(done); runErr = srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if runErr != nil && ctx.Err() == nil {
			t.Errorf("Run: %v", runErr)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for srv.Ready() != nil {
		select {
		case <-done:
			t.Fatalf("Run returned before serving: %v", runErr)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint not ready: %v", srv.Ready())
		}
	}
}

func (e *env) mint(t testing.TB, ns, sa string) string {
	t.Helper()
	tok, err := e.issuer.Mint(emulator.Token{Namespace: ns, ServiceAccount: sa, Pod: sa + "-pod"})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// creds is the endpoint's answer.
type creds struct {
	AccessKeyID, SecretAccessKey, Token, AccountID, Expiration string
}

// get asks the endpoint for the credentials of token.
func (e *env) get(t testing.TB, token string) (int, creds, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var c creds
	if resp.StatusCode == http.StatusOK {
		var doc struct {
			AccessKeyID     string `json:"AccessKeyId"`
			SecretAccessKey string `json:"SecretAccessKey"`
			Token           string `json:"Token"`
			AccountID       string `json:"AccountId"`
			Expiration      string `json:"Expiration"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatalf("answer %s: %v", body, err)
		}
		c = creds(doc)
	}
	return resp.StatusCode, c, string(body)
}

func (e *env) calls() int { return e.emu.Calls(emulator.ActionAssumeRoleForPodIdentity) }

// eventually polls cond until it holds, failing the test after a generous
// deadline; it asserts an outcome, not a duration.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c creds) String() string { return fmt.Sprintf("{%s …}", c.AccessKeyID) }
