package identity

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/autonode/autonode/agent/identity/eksauth"
	emulator "github.com/autonode/autonode/sandbox/eksauth"
)

func TestNewValidates(t *testing.T) {
	fetcher := &eksauth.Client{}
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no cluster", Options{EKSAuth: fetcher}},
		{"no client", Options{ClusterName: "c"}},
		{"zoned address", Options{ClusterName: "c", EKSAuth: fetcher, Addresses: []netip.Addr{netip.MustParseAddr("fe80::1%eth0")}}},
		{"port", Options{ClusterName: "c", EKSAuth: fetcher, Port: 70000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.opts); err == nil {
				t.Error("New accepted bad options")
			}
		})
	}
}

func TestHostAllowed(t *testing.T) {
	s, err := New(Options{ClusterName: "c", EKSAuth: &eksauth.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"169.254.170.23":       true,
		"169.254.170.23:80":    true,
		"169.254.170.23:8080":  true,
		"[fd00:ec2::23]":       true,
		"[fd00:ec2::23]:80":    true,
		"[fd00:ec2:0:0::23]":   true,
		"fd00:ec2::23":         true,
		"169.254.170.2":        false,
		"169.254.169.254":      false,
		"localhost":            false,
		"":                     false,
		"[fd00:ec2::23%eth0]":  false,
		"169.254.170.23.evil":  false,
		"evil:169.254.170.23":  false,
		"[::ffff:a9fe:aa17]":   false,
		"169.254.170.23:80:80": false,
	} {
		if got := s.hostAllowed(host); got != want {
			t.Errorf("hostAllowed(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestValidation(t *testing.T) {
	e := newEnv(t, envOptions{})
	good := e.mint(t, "ns-a", "sa-a")
	expired, err := e.issuer.Mint(emulator.Token{Namespace: "ns-a", ServiceAccount: "sa-a", IssuedAt: time.Now().Add(-2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	other, err := emulator.NewIssuer("https://elsewhere.test")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Mint(emulator.Token{Namespace: "ns-a", ServiceAccount: "sa-a"})
	if err != nil {
		t.Fatal(err)
	}
	const jsonType, textType = "application/json", "text/plain; charset=utf-8"
	for _, tc := range []struct {
		name        string
		method      string
		path        string
		host        string
		token       string
		body        string
		status      int
		contentType string
		contains    string
	}{
		{"ok", "GET", CredentialsPath, e.host, good, "", 200, jsonType, `"AccessKeyId":"ASIA`},
		{"host without port", "GET", CredentialsPath, strings.Split(e.host, ":")[0], good, "", 200, jsonType, `"AccountId":"111122223333"`},
		{"post", "POST", CredentialsPath, e.host, good, "", 405, jsonType, CodeMethodNotAllowed},
		{"put", "PUT", CredentialsPath, e.host, good, "", 405, jsonType, CodeMethodNotAllowed},
		{"head", "HEAD", CredentialsPath, e.host, good, "", 405, jsonType, ""},
		{"other path", "GET", "/v1/credentials/x", e.host, good, "", 404, jsonType, CodeNotFound},
		{"wrong host", "GET", CredentialsPath, "169.254.170.2", good, "", 403, jsonType, CodeAccessDenied},
		{"dns host", "GET", CredentialsPath, "localhost", good, "", 403, jsonType, CodeAccessDenied},
		{"missing token", "GET", CredentialsPath, e.host, "", "", 400, jsonType, CodeInvalidToken},
		{"malformed token", "GET", CredentialsPath, e.host, "not-a-jwt", "", 400, jsonType, "malformed"},
		{"expired token", "GET", CredentialsPath, e.host, expired, "", 400, jsonType, "expired"},
		{"small body ignored", "GET", CredentialsPath, e.host, good, "{}", 200, jsonType, "AccessKeyId"},
		{"body over the limit", "GET", CredentialsPath, e.host, good, strings.Repeat("x", maxBodyBytes+1), 413, jsonType, CodeBodyTooLarge},
		{"no association", "GET", CredentialsPath, e.host, e.mint(t, "ns-a", "nobody"), "", 400, textType, "(AccessDeniedException)"},
		{"foreign issuer", "GET", CredentialsPath, e.host, foreign, "", 400, textType, "(InvalidTokenException)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body *strings.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req := httptest.NewRequest(tc.method, "http://"+tc.host+tc.path, nil)
			if body != nil {
				req = httptest.NewRequest(tc.method, "http://"+tc.host+tc.path, body)
			}
			req.Host = tc.host
			if tc.token != "" {
				req.Header.Set("Authorization", tc.token)
			}
			rec := httptest.NewRecorder()
			e.srv.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tc.status, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != tc.contentType {
				t.Errorf("Content-Type = %q, want %q", ct, tc.contentType)
			}
			if !strings.Contains(rec.Body.String(), tc.contains) {
				t.Errorf("body %s does not contain %q", rec.Body, tc.contains)
			}
			if tc.contentType == jsonType && rec.Code != 200 {
				var doc localErrorBody
				if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || doc.Code == "" || doc.Message == "" {
					t.Errorf("error body %s: %v", rec.Body, err)
				}
			}
			if tc.status == 405 && rec.Header().Get("Allow") != "GET" {
				t.Errorf("Allow = %q", rec.Header().Get("Allow"))
			}
			if tc.contentType == textType && !regexp.MustCompile(`^\[[0-9a-f-]{36}\]: \(`).MatchString(rec.Body.String()) {
				t.Errorf("EKS Auth error body %q does not start with the request id", rec.Body)
			}
		})
	}
}

func TestEKSAuthStatusPassesThrough(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fault  emulator.Fault
		status int
		code   string
	}{
		{"throttling", emulator.Fault{ThrottleFraction: 1}, 429, emulator.CodeThrottling},
		{"server error", emulator.Fault{ServerErrorFraction: 1}, 500, emulator.CodeInternalServer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			e.emu.SetFault(emulator.ActionAssumeRoleForPodIdentity, tc.fault)
			status, _, body := e.get(t, e.mint(t, "ns-a", "sa-a"))
			if status != tc.status || !strings.Contains(body, "("+tc.code+")") {
				t.Errorf("answer %d %q, want %d naming %s", status, body, tc.status, tc.code)
			}
		})
	}
}

func TestTimeoutIs500(t *testing.T) {
	e := newEnv(t, envOptions{cache: CacheOptions{FetchTimeout: 50 * time.Millisecond}})
	e.emu.SetFault(emulator.ActionAssumeRoleForPodIdentity, emulator.Fault{Latency: time.Hour})
	status, _, body := e.get(t, e.mint(t, "ns-a", "sa-a"))
	if status != 500 || !strings.Contains(body, "unable to fetch credentials") {
		t.Errorf("answer %d %q, want 500", status, body)
	}
}

// TestConcurrentRequestsOneCall sends 1,000 requests for one token at once:
// EKS Auth must see exactly one call, and every request the same answer.
func TestConcurrentRequestsOneCall(t *testing.T) {
	e := newEnv(t, envOptions{})
	// Latency keeps the first call in flight while the others arrive.
	e.emu.SetFault(emulator.ActionAssumeRoleForPodIdentity, emulator.Fault{Latency: 200 * time.Millisecond})
	token := e.mint(t, "ns-a", "sa-a")
	const n = 1000
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 0}}
	defer client.CloseIdleConnections()
	keys := make([]string, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest(http.MethodGet, e.url, nil)
			req.Header.Set("Authorization", token)
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			var doc struct{ AccessKeyId string }
			if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&doc) != nil {
				t.Errorf("request %d: status %d", i, resp.StatusCode)
				return
			}
			keys[i] = doc.AccessKeyId
		})
	}
	close(start)
	wg.Wait()
	if got := e.calls(); got != 1 {
		t.Errorf("EKS Auth calls = %d, want 1", got)
	}
	for i, k := range keys {
		if k != keys[0] {
			t.Fatalf("request %d got %q, request 0 got %q", i, k, keys[0])
		}
	}
}

// TestOutage: while EKS Auth fails, cached credentials are served until they
// expire; then the pod gets EKS Auth's 5xx, naming the error.
func TestOutage(t *testing.T) {
	e := newEnv(t, envOptions{
		credDuration: 3 * time.Second,
		cache: CacheOptions{
			MinRemaining: 500 * time.Millisecond, RefreshInterval: 50 * time.Millisecond,
			RetryInitial: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond, RefreshQPS: 100,
		},
	})
	token := e.mint(t, "ns-a", "sa-a")
	status, first, body := e.get(t, token)
	if status != 200 {
		t.Fatalf("first request: %d %s", status, body)
	}
	exp, err := time.Parse(time.RFC3339, first.Expiration)
	if err != nil {
		t.Fatal(err)
	}
	e.emu.SetFault(emulator.ActionAssumeRoleForPodIdentity, emulator.Fault{ServerErrorFraction: 1})
	callsBefore := e.calls()
	var last string
	eventually(t, "credentials to expire and the outage to show", func() bool {
		before := time.Now()
		status, c, body := e.get(t, token)
		if status == 200 {
			if c.AccessKeyID != first.AccessKeyID {
				t.Fatalf("during the outage got new credentials %v", c)
			}
			if before.After(exp) {
				t.Fatalf("served credentials that expired at %s", exp)
			}
			return false
		}
		last = body
		if status != 500 || !strings.Contains(body, "(InternalServerException)") {
			t.Fatalf("after expiry: %d %q, want 500 naming InternalServerException", status, body)
		}
		return true
	})
	if e.calls() == callsBefore {
		t.Error("no refresh was attempted during the outage")
	}
	if got := testutil.ToFloat64(e.srv.m.refreshes.WithLabelValues("recoverable")); got == 0 {
		t.Error("no recoverable refresh failure counted")
	}
	t.Logf("after expiry: %s", last)

	e.emu.SetFault(emulator.ActionAssumeRoleForPodIdentity, emulator.Fault{})
	if status, c, body := e.get(t, token); status != 200 || c.AccessKeyID == first.AccessKeyID {
		t.Errorf("after the outage: %d %s", status, body)
	}
}

// TestBackgroundRefresh: credentials are renewed before they expire without
// a request asking, and later requests get the new ones from the cache.
func TestBackgroundRefresh(t *testing.T) {
	e := newEnv(t, envOptions{
		credDuration: 2 * time.Second,
		cache:        CacheOptions{MinRemaining: 100 * time.Millisecond, RefreshInterval: 20 * time.Millisecond, RefreshQPS: 100},
	})
	token := e.mint(t, "ns-a", "sa-a")
	_, first, _ := e.get(t, token)
	// The emulator counts a call before the cache has stored its answer, so
	// wait for the refresh to be counted as done.
	eventually(t, "a successful background refresh", func() bool {
		return testutil.ToFloat64(e.srv.m.refreshes.WithLabelValues("success")) >= 1
	})
	if e.calls() < 2 {
		t.Errorf("EKS Auth saw %d calls, want the first and a refresh", e.calls())
	}
	_, second, _ := e.get(t, token)
	if second.AccessKeyID == first.AccessKeyID {
		t.Errorf("still serving the first credentials after a refresh")
	}
}

// TestUnrecoverableEvicts: when EKS Auth refuses the token for good during a
// refresh, the entry goes at once rather than at expiry.
func TestUnrecoverableEvicts(t *testing.T) {
	e := newEnv(t, envOptions{
		credDuration: time.Hour,
		cache:        CacheOptions{RefreshInterval: 20 * time.Millisecond, RefreshQPS: 100},
	})
	token := e.mint(t, "ns-a", "sa-a")
	if status, _, body := e.get(t, token); status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	e.emu.Disassociate("ns-a", "sa-a")
	// Make the entry due now rather than in half an hour.
	for _, en := range e.srv.cache.lru.Values() {
		en.mu.Lock()
		en.nextRefresh = time.Time{}
		en.mu.Unlock()
	}
	eventually(t, "the entry's eviction", func() bool { return e.srv.cache.lru.Len() == 0 })
	if got := testutil.ToFloat64(e.srv.m.evictions.WithLabelValues("unrecoverable")); got != 1 {
		t.Errorf("unrecoverable evictions = %v, want 1", got)
	}
	if status, _, body := e.get(t, token); status != 400 || !strings.Contains(body, "(AccessDeniedException)") {
		t.Errorf("after disassociation: %d %q", status, body)
	}
}

func TestLRUBound(t *testing.T) {
	e := newEnv(t, envOptions{cache: CacheOptions{MaxEntries: 2}})
	for _, sa := range []string{"sa-a", "sa-a", "sa-a"} {
		if status, _, body := e.get(t, e.mint(t, "ns-a", sa)); status != 200 {
			t.Fatalf("%d %s", status, body)
		}
	}
	if n := e.srv.cache.lru.Len(); n != 2 {
		t.Errorf("entries = %d, want 2", n)
	}
	if got := testutil.ToFloat64(e.srv.m.evictions.WithLabelValues("capacity")); got != 1 {
		t.Errorf("capacity evictions = %v, want 1", got)
	}
}

// TestTokensIsolated: interleaved requests for two service accounts each get
// their own role's credentials, never the other's.
func TestTokensIsolated(t *testing.T) {
	e := newEnv(t, envOptions{})
	tokA, tokB := e.mint(t, "ns-a", "sa-a"), e.mint(t, "ns-b", "sa-b")
	_, a, _ := e.get(t, tokA)
	_, b, _ := e.get(t, tokB)
	if a.AccessKeyID == b.AccessKeyID || a.AccountID != "111122223333" || b.AccountID != "444455556666" {
		t.Fatalf("A = %v (account %s), B = %v (account %s)", a, a.AccountID, b, b.AccountID)
	}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			tok, want := tokA, a
			if i%2 == 1 {
				tok, want = tokB, b
			}
			if status, got, body := e.get(t, tok); status != 200 || got != want {
				t.Errorf("request %d: %d %v, want %v (%s)", i, status, got, want, body)
			}
		})
	}
	wg.Wait()
	// A token that differs from A's in one character is another token.
	forged := tokA[:len(tokA)-2] + "xx"
	if status, got, _ := e.get(t, forged); status == 200 && got.AccessKeyID == a.AccessKeyID {
		t.Error("a forged token got A's credentials")
	}
}

// TestNoSecretsInLogs runs successes, failures, refreshes and an outage with
// debug logs on, then looks for every token and secret in them.
func TestNoSecretsInLogs(t *testing.T) {
	e := newEnv(t, envOptions{
		credDuration: 2 * time.Second,
		cache: CacheOptions{MinRemaining: 200 * time.Millisecond, RefreshInterval: 20 * time.Millisecond,
			RetryInitial: 20 * time.Millisecond, RefreshQPS: 100},
	})
	tokens := []string{e.mint(t, "ns-a", "sa-a"), e.mint(t, "ns-b", "sa-b"), e.mint(t, "ns-a", "nobody"), "Bearer not.a.jwt"}
	for _, tok := range tokens {
		e.get(t, tok)
	}
	eventually(t, "a background refresh", func() bool { return testutil.ToFloat64(e.srv.m.refreshes.WithLabelValues("success")) > 0 })
	e.emu.SetFault(emulator.ActionAssumeRoleForPodIdentity, emulator.Fault{ServerErrorFraction: 1})
	eventually(t, "a failed refresh", func() bool { return testutil.ToFloat64(e.srv.m.refreshes.WithLabelValues("recoverable")) > 0 })
	for _, tok := range tokens {
		e.get(t, tok)
	}

	logs := e.logs.String()
	if !strings.Contains(logs, "token_hash") {
		t.Fatalf("the logs name no token hash; did logging work? %q", logs)
	}
	secrets := map[string]string{}
	for i, tok := range tokens {
		secrets["token "+string(rune('0'+i))] = normalizeToken(tok)
		// Parts of a JWT are secret too: its signature authenticates it.
		if parts := strings.Split(normalizeToken(tok), "."); len(parts) == 3 && len(parts[2]) > 16 {
			secrets["token signature "+string(rune('0'+i))] = parts[2]
		}
	}
	issued := e.emu.Issued()
	if len(issued) < 3 {
		t.Fatalf("only %d credentials issued", len(issued))
	}
	for _, c := range issued {
		secrets["secret of "+c.AccessKeyID] = c.SecretAccessKey
		secrets["session token of "+c.AccessKeyID] = c.SessionToken
	}
	for what, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the logs contain the %s", what)
		}
	}
}

func TestReadyAndMetrics(t *testing.T) {
	s, err := New(Options{ClusterName: "c", EKSAuth: &eksauth.Client{}, NoLink: true,
		Addresses: []netip.Addr{uniqueLoopback()}, Port: PortAny})
	if err != nil {
		t.Fatal(err)
	}
	if s.Ready() == nil {
		t.Error("ready before Run")
	}
	if s.Name() != "identity" || len(s.Collectors()) == 0 {
		t.Errorf("Name %q, %d collectors", s.Name(), len(s.Collectors()))
	}
	e := newEnv(t, envOptions{})
	e.get(t, e.mint(t, "ns-a", "sa-a"))
	e.get(t, e.mint(t, "ns-a", "sa-a")+"x")
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"autonode_identity_requests_total", "autonode_identity_request_duration_seconds",
		"autonode_identity_cache_lookups_total", "autonode_identity_eksauth_calls_total", "autonode_identity_cache_entries"} {
		if !names[n] {
			t.Errorf("metric %s not registered", n)
		}
	}
}

func TestRunFailsOnBusyAddress(t *testing.T) {
	e := newEnv(t, envOptions{})
	ap := netip.MustParseAddrPort(e.host)
	s, err := New(Options{ClusterName: "c", EKSAuth: &eksauth.Client{}, NoLink: true,
		Addresses: []netip.Addr{ap.Addr()}, Port: int(ap.Port())})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Fatal("Run on a busy address succeeded")
	}
	if s.Ready() == nil {
		t.Error("ready after a failed Run")
	}
}
