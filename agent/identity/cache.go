package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/autonode/autonode/agent/backoff"
	"github.com/autonode/autonode/agent/identity/eksauth"
)

// CacheOptions tunes the credential cache. Zero values take the defaults.
type CacheOptions struct {
	// MaxEntries bounds the number of tokens whose credentials are kept; the
	// least recently used go first. Default is 2000 (the anchor's default).
	MaxEntries int
	// MinRemaining is how much validity cached credentials must have left to
	// be served from the cache without asking EKS Auth. Default is 5m. The
	// SDKs refresh credentials a few minutes before they expire, so a pod
	// must not be handed credentials it would at once ask for again.
	MinRemaining time.Duration
	// RefreshInterval is how often the cache looks for credentials due for
	// refresh. Default is 10s.
	RefreshInterval time.Duration
	// RefreshConcurrency bounds the refreshes in flight. Default is 4.
	RefreshConcurrency int
	// RefreshQPS bounds the rate of refresh calls to EKS Auth; requests for
	// credentials not in the cache are not held back by it. Default is 3
	// per second (the anchor's default), with a burst of the same size.
	RefreshQPS float64
	// RetryInitial and RetryMax shape the jittered exponential backoff
	// between failed refreshes of one entry. Defaults are 10s and 5m.
	RetryInitial, RetryMax time.Duration
	// FetchTimeout bounds one AssumeRoleForPodIdentity call, retries
	// included. Default is 10s.
	FetchTimeout time.Duration
}

func (o *CacheOptions) setDefaults() {
	if o.MaxEntries <= 0 {
		o.MaxEntries = 2000
	}
	if o.MinRemaining <= 0 {
		o.MinRemaining = 5 * time.Minute
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = 10 * time.Second
	}
	if o.RefreshConcurrency <= 0 {
		o.RefreshConcurrency = 4
	}
	if o.RefreshQPS <= 0 {
		o.RefreshQPS = 3
	}
	if o.RetryInitial <= 0 {
		o.RetryInitial = 10 * time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 5 * time.Minute
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 10 * time.Second
	}
}

// CredentialsFetcher is what the cache needs from EKS Auth;
// *eksauth.Client implements it.
type CredentialsFetcher interface {
	AssumeRoleForPodIdentity(ctx context.Context, clusterName, token string) (*eksauth.Output, error)
}

// tokenKey is the SHA-256 of a token: the cache key, so that the map holds
// no token as a key, and what logs show (a prefix of) instead of the token.
type tokenKey [sha256.Size]byte

// String returns the first 12 hex digits: enough to correlate log lines,
// far too few to recover anything.
func (k tokenKey) String() string { return hex.EncodeToString(k[:6]) }

// answer is one set of credentials, already encoded as served.
type answer struct {
	body       []byte
	expiration time.Time
	roleARN    string
}

// entry is the cached state of one token.
type entry struct {
	key   tokenKey
	token Token // the token itself is needed to refresh; it stays in memory
	ans   atomic.Pointer[answer]

	mu          sync.Mutex
	nextRefresh time.Time
	refreshing  bool
	retry       wait.Backoff
	evictReason string
}

func (e *entry) setEvictReason(r string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evictReason = r
}

// cache holds credentials per token and refreshes them ahead of expiry.
type cache struct {
	cluster string
	fetcher CredentialsFetcher
	opts    CacheOptions
	now     func() time.Time
	log     *slog.Logger
	m       *metrics

	lru     *lru.Cache[tokenKey, *entry]
	group   singleflight.Group
	limiter *rate.Limiter
	sem     chan struct{}
}

func newCache(cluster string, fetcher CredentialsFetcher, opts CacheOptions, now func() time.Time, log *slog.Logger, m *metrics) (*cache, error) {
	opts.setDefaults()
	burst := max(int(opts.RefreshQPS), 1)
	c := &cache{
		cluster: cluster, fetcher: fetcher, opts: opts, now: now, log: log, m: m,
		limiter: rate.NewLimiter(rate.Limit(opts.RefreshQPS), burst),
		sem:     make(chan struct{}, opts.RefreshConcurrency),
	}
	l, err := lru.NewWithEvict(opts.MaxEntries, c.onEvicted)
	if err != nil {
		return nil, fmt.Errorf("credential cache of %d entries: %w", opts.MaxEntries, err)
	}
	c.lru = l
	return c, nil
}

func (c *cache) onEvicted(k tokenKey, e *entry) {
	e.mu.Lock()
	reason := e.evictReason
	e.mu.Unlock()
	if reason == "" {
		reason = "capacity"
	}
	c.m.evictions.WithLabelValues(reason).Inc()
	c.log.Debug("credentials evicted", "token_hash", k, "reason", reason)
}

// evict removes e, unless its key now holds a newer entry.
func (c *cache) evict(e *entry, reason string) {
	if cur, ok := c.lru.Peek(e.key); ok && cur == e {
		e.setEvictReason(reason)
		c.lru.Remove(e.key)
	}
}

// fresh reports whether a can be served without asking EKS Auth.
func (c *cache) fresh(a *answer, now time.Time) bool {
	return a != nil && now.Add(c.opts.MinRemaining).Before(a.expiration)
}

// keyOf hashes the token in an Authorization header, normalized as
// ParseToken reads it, so that one token always has one key.
func keyOf(header string) tokenKey {
	return sha256.Sum256([]byte(normalizeToken(header)))
}

// get returns the credentials for the token in an Authorization header:
// from the cache when fresh, else from EKS Auth through one shared call per
// token. When EKS Auth fails with a recoverable error, credentials that
// have not expired yet are served instead.
func (c *cache) get(ctx context.Context, header string) (*answer, error) {
	key := keyOf(header)
	now := c.now()
	e, ok := c.lru.Get(key)
	if ok {
		if !now.Before(e.token.Expiry) {
			c.evict(e, "token-expired")
			return nil, fmt.Errorf("%w: expired at %s", ErrExpiredToken, e.token.Expiry.UTC().Format(time.RFC3339))
		}
		if a := e.ans.Load(); c.fresh(a, now) {
			c.m.hits.Inc()
			return a, nil
		}
	}
	tok, err := ParseToken(header, now)
	if err != nil {
		return nil, err
	}
	a, err := c.fetch(ctx, key, tok)
	if err == nil {
		return a, nil
	}
	if !eksauth.Unrecoverable(err) && ctx.Err() == nil {
		if e, ok := c.lru.Peek(key); ok {
			if a := e.ans.Load(); a != nil && c.now().Before(a.expiration) {
				c.m.stale.Inc()
				c.log.Warn("EKS Auth failed; serving cached credentials until they expire",
					"token_hash", key, "expiration", a.expiration, "err", err)
				return a, nil
			}
		}
	}
	return nil, err
}

// fetch calls EKS Auth once for all concurrent requests with the same token.
// The call runs detached from the first caller, so that its going away does
// not fail the others; each caller still stops waiting when its ctx ends.
func (c *cache) fetch(ctx context.Context, key tokenKey, tok Token) (*answer, error) {
	ch := c.group.DoChan(string(key[:]), func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.FetchTimeout)
		defer cancel()
		return c.load(fctx, key, tok, false)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*answer), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for credentials of token %s: %w", key, ctx.Err())
	}
}

// errGone stops a refresh of an entry that was evicted meanwhile.
var errGone = errors.New("entry left the cache")

// load asks EKS Auth and stores the answer. Unless refresh is set, it first
// looks again: a request that missed the cache just before another's call
// stored its answer must not make a second call.
func (c *cache) load(ctx context.Context, key tokenKey, tok Token, refresh bool) (*answer, error) {
	e, ok := c.lru.Peek(key)
	if refresh && !ok {
		return nil, errGone
	}
	if !refresh && ok && c.fresh(e.ans.Load(), c.now()) {
		return e.ans.Load(), nil
	}
	c.m.misses.Inc()
	out, err := c.fetcher.AssumeRoleForPodIdentity(ctx, c.cluster, tok.Raw)
	if err != nil {
		c.m.calls.WithLabelValues(errorCode(err)).Inc()
		if eksauth.Unrecoverable(err) && ok {
			c.evict(e, "unrecoverable")
		}
		return nil, err
	}
	c.m.calls.WithLabelValues("Success").Inc()
	now := c.now()
	a, err := newAnswer(out)
	if err != nil {
		return nil, err
	}
	if !now.Add(c.opts.MinRemaining).Before(a.expiration) {
		return nil, fmt.Errorf("credentials from EKS Auth for token %s expire at %s, within %s",
			key, a.expiration.Format(time.RFC3339), c.opts.MinRemaining)
	}
	if !ok {
		e = &entry{key: key, token: tok}
	}
	e.ans.Store(a)
	e.mu.Lock()
	e.nextRefresh = c.refreshTime(now, a.expiration)
	e.retry = backoff.New(c.opts.RetryInitial, c.opts.RetryMax)
	e.mu.Unlock()
	c.lru.Add(key, e)
	c.log.Debug("credentials fetched", "token_hash", key, "namespace", tok.Namespace,
		"service_account", tok.ServiceAccount, "pod", tok.Pod, "role", a.roleARN,
		"expiration", a.expiration, "request_id", out.RequestID)
	return a, nil
}

// refreshTime is halfway to expiry, jittered by ±10% so that entries
// fetched together do not all come due together.
func (c *cache) refreshTime(now, expiration time.Time) time.Time {
	half := expiration.Sub(now) / 2
	jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(half))
	return now.Add(half + jitter)
}

// newAnswer encodes EKS Auth's answer as the container credential
// providers of the SDKs expect it.
func newAnswer(out *eksauth.Output) (*answer, error) {
	exp := out.Credentials.Expiration.Time.UTC()
	body, err := json.Marshal(struct {
		AccessKeyID     string `json:"AccessKeyId"`
		SecretAccessKey string `json:"SecretAccessKey"`
		Token           string `json:"Token"`
		AccountID       string `json:"AccountId"`
		Expiration      string `json:"Expiration"`
	}{
		out.Credentials.AccessKeyID, out.Credentials.SecretAccessKey, out.Credentials.SessionToken,
		out.AccountID(), exp.Format(time.RFC3339),
	})
	if err != nil {
		return nil, fmt.Errorf("encoding credentials: %w", err)
	}
	return &answer{body: body, expiration: exp, roleARN: out.AssumedRoleUser.Arn}, nil
}

// run refreshes due entries every RefreshInterval until ctx ends.
func (c *cache) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(c.opts.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.scan(ctx, &wg)
	}
}

// scan drops entries whose token or credentials expired and starts a
// refresh, within the concurrency bound, for each entry that is due.
func (c *cache) scan(ctx context.Context, wg *sync.WaitGroup) {
	now := c.now()
	for _, e := range c.lru.Values() {
		a := e.ans.Load()
		switch {
		case !now.Before(e.token.Expiry):
			// kubelet rotated the token long ago; nobody can present it.
			c.evict(e, "token-expired")
			continue
		case a == nil || !now.Before(a.expiration):
			c.evict(e, "credentials-expired")
			continue
		}
		e.mu.Lock()
		due := !e.refreshing && !now.Before(e.nextRefresh)
		if due {
			e.refreshing = true
		}
		e.mu.Unlock()
		if !due {
			continue
		}
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			e.mu.Lock()
			e.refreshing = false
			e.mu.Unlock()
			return
		}
		wg.Go(func() {
			defer func() { <-c.sem }()
			c.refresh(ctx, e)
		})
	}
}

// refresh renews one entry's credentials. A recoverable failure keeps the
// old credentials and schedules a retry with jittered backoff; an
// unrecoverable one has evicted the entry.
func (c *cache) refresh(ctx context.Context, e *entry) {
	defer func() {
		e.mu.Lock()
		e.refreshing = false
		e.mu.Unlock()
	}()
	if err := c.limiter.Wait(ctx); err != nil {
		return // shutting down
	}
	_, err, _ := c.group.Do(string(e.key[:]), func() (any, error) {
		fctx, cancel := context.WithTimeout(ctx, c.opts.FetchTimeout)
		defer cancel()
		return c.load(fctx, e.key, e.token, true)
	})
	switch {
	case err == nil:
		c.m.refreshes.WithLabelValues("success").Inc()
	case errors.Is(err, errGone) || ctx.Err() != nil:
	case eksauth.Unrecoverable(err):
		c.m.refreshes.WithLabelValues("unrecoverable").Inc()
		c.log.Info("credentials dropped: EKS Auth refused the token", "token_hash", e.key,
			"namespace", e.token.Namespace, "service_account", e.token.ServiceAccount, "err", err)
	default:
		c.m.refreshes.WithLabelValues("recoverable").Inc()
		e.mu.Lock()
		delay := e.retry.Step()
		e.nextRefresh = c.now().Add(delay)
		e.mu.Unlock()
		c.log.Warn("refreshing credentials failed; keeping the cached ones", "token_hash", e.key,
			"namespace", e.token.Namespace, "service_account", e.token.ServiceAccount, "retry_in", delay, "err", err)
	}
}

// errorCode labels an EKS Auth failure for metrics.
func errorCode(err error) string {
	var ae *eksauth.APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "Timeout"
	}
	return "Other"
}
