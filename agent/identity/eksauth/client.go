// Package eksauth is a client for the one operation of the EKS Auth API that
// the Pod Identity endpoint needs: AssumeRoleForPodIdentity, which trades a
// pod's projected service-account token for temporary credentials of the role
// associated with its service account.
//
// The SDK's service/eksauth module cannot be used here, so the client speaks
// the REST-JSON wire protocol itself: POST
// /clusters/{clusterName}/assume-role-for-pod-identity with {"token": …},
// signed with the SDK's SigV4 signer (service "eks-auth") using the node's
// credentials, and retried with the SDK's standard retryer, so that
// throttling, 5xx answers and connection errors behave as they would through
// a generated client. Errors come back as *APIError carrying the service's
// error code, HTTP status and request id.
package eksauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/autonode/autonode/agent/backoff"
)

// SigningName is the SigV4 service name of EKS Auth.
const SigningName = "eks-auth"

// Operation is the name of the one operation this client calls.
const Operation = "AssumeRoleForPodIdentity"

// maxResponseBytes bounds what the client reads from EKS Auth; an answer is
// well under 8 KiB, session tokens included.
const maxResponseBytes = 1 << 20

// Options configures a Client.
type Options struct {
	// Region is the AWS region of the cluster. Required.
	Region string
	// Endpoint overrides the base URL, which is otherwise
	// https://eks-auth.<region>.api.aws. The sandbox points it at its
	// emulator.
	Endpoint string
	// Credentials sign the requests: the node's own credentials. When nil,
	// New loads the SDK's default credential chain, which on an instance
	// ends at the instance role served by IMDS.
	Credentials aws.CredentialsProvider
	// HTTPClient sends the requests. Default has a 2s timeout per attempt,
	// so that a pod's SDK (whose own default timeout is 1-5s) gets an answer
	// while it still waits.
	HTTPClient *http.Client
	// Retryer decides which failures are retried and how long to wait.
	// Default is retry.NewStandard(): 3 attempts, jittered exponential
	// backoff, a retry quota.
	Retryer aws.RetryerV2
	// Now is the signing clock. Default is time.Now.
	Now func() time.Time
}

// Client calls EKS Auth's AssumeRoleForPodIdentity. It is safe for
// concurrent use.
type Client struct {
	endpoint *url.URL
	region   string
	creds    aws.CredentialsProvider
	http     *http.Client
	retryer  aws.RetryerV2
	signer   *v4.Signer
	now      func() time.Time
}

// New builds a Client. ctx bounds only the loading of the default
// credential chain when opts.Credentials is nil.
func New(ctx context.Context, opts Options) (*Client, error) {
	if opts.Region == "" {
		return nil, errors.New("eks auth client: no region")
	}
	endpoint := opts.Endpoint
	if endpoint == "" {
		endpoint = "https://eks-auth." + opts.Region + ".api.aws"
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("eks auth endpoint %q: %w", endpoint, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("eks auth endpoint %q: want an http(s)://host URL", endpoint)
	}
	if opts.Credentials == nil {
		cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(opts.Region))
		if err != nil {
			return nil, fmt.Errorf("loading the node's credential chain: %w", err)
		}
		opts.Credentials = cfg.Credentials
	}
	if !aws.IsCredentialsProvider(opts.Credentials, (*aws.CredentialsCache)(nil)) {
		// Without a cache every call would go back to IMDS for the node role.
		opts.Credentials = aws.NewCredentialsCache(opts.Credentials)
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{
			Timeout: 2 * time.Second,
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				DialContext:         (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
				TLSHandshakeTimeout: time.Second,
				MaxIdleConnsPerHost: 16,
				IdleConnTimeout:     90 * time.Second,
				ForceAttemptHTTP2:   true,
			},
		}
	}
	if opts.Retryer == nil {
		opts.Retryer = retry.NewStandard()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Client{
		endpoint: u,
		region:   opts.Region,
		creds:    opts.Credentials,
		http:     opts.HTTPClient,
		retryer:  opts.Retryer,
		signer:   v4.NewSigner(),
		now:      opts.Now,
	}, nil
}

// AssumeRoleForPodIdentity exchanges a service-account token of a pod in
// clusterName for the credentials of its associated role. Failed attempts are
// retried as the Retryer allows; the error of the last one is returned,
// an *APIError when EKS Auth answered.
func (c *Client) AssumeRoleForPodIdentity(ctx context.Context, clusterName, token string) (*Output, error) {
	if clusterName == "" {
		return nil, errors.New("AssumeRoleForPodIdentity: no cluster name")
	}
	body, err := json.Marshal(struct {
		Token string `json:"token"`
	}{token})
	if err != nil {
		return nil, fmt.Errorf("AssumeRoleForPodIdentity: encoding the request: %w", err)
	}
	release, err := c.retryer.GetAttemptToken(ctx)
	if err != nil {
		return nil, fmt.Errorf("AssumeRoleForPodIdentity: %w", err)
	}
	for attempt := 1; ; attempt++ {
		out, err := c.attempt(ctx, clusterName, body)
		_ = release(err)
		if err == nil {
			return out, nil
		}
		if ctx.Err() != nil || attempt >= c.retryer.MaxAttempts() || !c.retryer.IsErrorRetryable(err) {
			return nil, err
		}
		delay, derr := c.retryer.RetryDelay(attempt, err)
		if derr != nil {
			return nil, err
		}
		// The retry quota keeps a failing EKS Auth from being hammered by
		// every pod's retries at once.
		if release, derr = c.retryer.GetRetryToken(ctx, err); derr != nil {
			return nil, err
		}
		if backoff.Sleep(ctx, delay) != nil {
			return nil, err
		}
	}
}

// attempt sends one signed request.
func (c *Client) attempt(ctx context.Context, clusterName string, body []byte) (*Output, error) {
	u := *c.endpoint
	u.Path = strings.TrimSuffix(u.Path, "/") + "/clusters/" + clusterName + "/assume-role-for-pod-identity"
	u.RawPath = "" // let String escape the path as a whole
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%s for cluster %q: building the request: %w", Operation, clusterName, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	creds, err := c.creds.Retrieve(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: retrieving the node's credentials: %w", Operation, err)
	}
	sum := sha256.Sum256(body)
	if err := c.signer.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), SigningName, c.region, c.now()); err != nil {
		return nil, fmt.Errorf("%s: signing the request: %w", Operation, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s for cluster %q: %w", Operation, clusterName, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("%s for cluster %q: reading the response: %w", Operation, clusterName, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return nil, ParseError(resp.StatusCode, resp.Header, raw)
	}
	out, err := ParseResponse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s for cluster %q (request %s): %w", Operation, clusterName, resp.Header.Get(requestIDHeader), err)
	}
	out.RequestID = resp.Header.Get(requestIDHeader)
	return out, nil
}
