package eksauth_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"

	client "github.com/autonode/autonode/agent/identity/eksauth"
	"github.com/autonode/autonode/sandbox/eksauth"
)

const (
	cluster = "sandbox-cluster"
	region  = "us-west-2"
	role    = "arn:aws:iam::111122223333:role/app-role"
)

type fixture struct {
	srv    *eksauth.Server
	issuer *eksauth.Issuer
	url    string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	iss, err := eksauth.NewIssuer("https://oidc.sandbox.test/" + t.Name())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := eksauth.New(eksauth.Options{ClusterName: cluster, Region: region, Issuer: iss})
	if err != nil {
		t.Fatal(err)
	}
	srv.Associate("default", "app", role)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return fixture{srv: srv, issuer: iss, url: hs.URL}
}

// newClient returns the agent's EKS Auth client, signing with creds and
// retrying without waiting long.
func (f fixture) newClient(t *testing.T, creds aws.Credentials) *client.Client {
	t.Helper()
	c, err := client.New(t.Context(), client.Options{
		Region:      region,
		Endpoint:    f.url,
		Credentials: credentials.StaticCredentialsProvider{Value: creds},
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return time.Millisecond, nil })
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f fixture) mint(t *testing.T, tok eksauth.Token) string {
	t.Helper()
	s, err := f.issuer.Mint(tok)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var nodeCreds = aws.Credentials{AccessKeyID: eksauth.TestAccessKeyID, SecretAccessKey: eksauth.TestSecretAccessKey}

func TestAssumeRoleForPodIdentity(t *testing.T) {
	f := newFixture(t)
	c := f.newClient(t, nodeCreds)
	out, err := c.AssumeRoleForPodIdentity(t.Context(), cluster, f.mint(t, eksauth.Token{Namespace: "default", ServiceAccount: "app"}))
	if err != nil {
		t.Fatal(err)
	}
	issued := f.srv.Issued()
	if len(issued) != 1 {
		t.Fatalf("issued %d credentials, want 1", len(issued))
	}
	want := issued[0]
	if out.Credentials.AccessKeyID != want.AccessKeyID || out.Credentials.SecretAccessKey != want.SecretAccessKey ||
		out.Credentials.SessionToken != want.SessionToken || !out.Credentials.Expiration.Equal(want.Expiration) {
		t.Errorf("credentials = %+v, want those issued %+v", out.Credentials, want)
	}
	if out.Subject != (client.Subject{Namespace: "default", ServiceAccount: "app"}) || out.Audience != eksauth.PodIdentityAudience {
		t.Errorf("subject, audience = %+v, %q", out.Subject, out.Audience)
	}
	if out.AccountID() != "111122223333" || out.PodIdentityAssociation.AssociationID == "" || out.RequestID == "" {
		t.Errorf("account %q, association %+v, request id %q", out.AccountID(), out.PodIdentityAssociation, out.RequestID)
	}
	if got := f.srv.Calls(eksauth.ActionAssumeRoleForPodIdentity); got != 1 {
		t.Errorf("calls = %d, want 1", got)
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t)
	other, err := eksauth.NewIssuer("https://elsewhere.test")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Mint(eksauth.Token{Namespace: "default", ServiceAccount: "app"})
	if err != nil {
		t.Fatal(err)
	}
	good := f.mint(t, eksauth.Token{Namespace: "default", ServiceAccount: "app"})
	for _, tc := range []struct {
		name          string
		creds         aws.Credentials
		cluster       string
		token         string
		code          string
		status        int
		unrecoverable bool
	}{
		{"wrong secret", aws.Credentials{AccessKeyID: eksauth.TestAccessKeyID, SecretAccessKey: "nope"}, cluster, good, eksauth.CodeInvalidSignature, 403, false},
		{"unknown access key", aws.Credentials{AccessKeyID: "AKIDOTHER", SecretAccessKey: eksauth.TestSecretAccessKey}, cluster, good, eksauth.CodeUnrecognizedClient, 403, false},
		{"unknown cluster", nodeCreds, "other", good, eksauth.CodeResourceNotFound, 404, true},
		{"foreign issuer", nodeCreds, cluster, foreign, eksauth.CodeInvalidToken, 400, true},
		{"not a jwt", nodeCreds, cluster, "garbage", eksauth.CodeInvalidToken, 400, true},
		{"empty token", nodeCreds, cluster, "", eksauth.CodeInvalidParameter, 400, false},
		{"expired", nodeCreds, cluster, f.mint(t, eksauth.Token{Namespace: "default", ServiceAccount: "app", IssuedAt: time.Now().Add(-2 * time.Hour)}), eksauth.CodeExpiredToken, 400, true},
		{"wrong audience", nodeCreds, cluster, f.mint(t, eksauth.Token{Namespace: "default", ServiceAccount: "app", Audience: "sts.amazonaws.com"}), eksauth.CodeInvalidToken, 400, true},
		{"no association", nodeCreds, cluster, f.mint(t, eksauth.Token{Namespace: "default", ServiceAccount: "other"}), eksauth.CodeAccessDenied, 400, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.newClient(t, tc.creds).AssumeRoleForPodIdentity(t.Context(), tc.cluster, tc.token)
			var ae *client.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v, want an *APIError", err)
			}
			if ae.Code != tc.code || ae.StatusCode != tc.status || ae.RequestID == "" {
				t.Errorf("error = %s %d (request %q), want %s %d", ae.Code, ae.StatusCode, ae.RequestID, tc.code, tc.status)
			}
			if got := client.Unrecoverable(err); got != tc.unrecoverable {
				t.Errorf("Unrecoverable = %v, want %v", got, tc.unrecoverable)
			}
		})
	}
}

func TestSessionTokenIsSigned(t *testing.T) {
	iss, err := eksauth.NewIssuer("https://oidc.sandbox.test")
	if err != nil {
		t.Fatal(err)
	}
	creds := aws.Credentials{AccessKeyID: "ASIANODE", SecretAccessKey: "s", SessionToken: "node-session"}
	srv, err := eksauth.New(eksauth.Options{ClusterName: cluster, Region: region, Issuer: iss, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	srv.Associate("default", "app", role)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	f := fixture{srv: srv, issuer: iss, url: hs.URL}
	tok := f.mint(t, eksauth.Token{Namespace: "default", ServiceAccount: "app"})
	if _, err := f.newClient(t, creds).AssumeRoleForPodIdentity(t.Context(), cluster, tok); err != nil {
		t.Fatalf("with the session token: %v", err)
	}
	wrong := creds
	wrong.SessionToken = "other-session"
	if _, err := f.newClient(t, wrong).AssumeRoleForPodIdentity(t.Context(), cluster, tok); err == nil {
		t.Fatal("a request with the wrong session token succeeded")
	}
}

func TestFaultsAreRetried(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault eksauth.Fault
		code  string
	}{
		{"throttling", eksauth.Fault{ThrottleFraction: 1}, eksauth.CodeThrottling},
		{"server error", eksauth.Fault{ServerErrorFraction: 1}, eksauth.CodeInternalServer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.srv.SetFault(eksauth.ActionAssumeRoleForPodIdentity, tc.fault)
			c := f.newClient(t, nodeCreds)
			_, err := c.AssumeRoleForPodIdentity(t.Context(), cluster, f.mint(t, eksauth.Token{Namespace: "default", ServiceAccount: "app"}))
			var ae *client.APIError
			if !errors.As(err, &ae) || ae.Code != tc.code {
				t.Fatalf("err = %v, want %s", err, tc.code)
			}
			if got := f.srv.Calls(eksauth.ActionAssumeRoleForPodIdentity); got != retry.DefaultMaxAttempts {
				t.Errorf("calls = %d, want %d: the standard retryer retries %s", got, retry.DefaultMaxAttempts, tc.code)
			}
			f.srv.SetFault(eksauth.ActionAssumeRoleForPodIdentity, eksauth.Fault{})
			if _, err := c.AssumeRoleForPodIdentity(t.Context(), cluster, f.mint(t, eksauth.Token{Namespace: "default", ServiceAccount: "app"})); err != nil {
				t.Errorf("after clearing the fault: %v", err)
			}
		})
	}
}

func TestLatencyHonoursCancellation(t *testing.T) {
	f := newFixture(t)
	f.srv.SetFault(eksauth.ActionAssumeRoleForPodIdentity, eksauth.Fault{Latency: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := f.newClient(t, nodeCreds).AssumeRoleForPodIdentity(ctx, cluster, f.mint(t, eksauth.Token{Namespace: "default", ServiceAccount: "app"}))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline", err)
	}
}

func TestIssuerVerify(t *testing.T) {
	iss, err := eksauth.NewIssuer("https://oidc.sandbox.test")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.Mint(eksauth.Token{Namespace: "ns", ServiceAccount: "sa", Pod: "p"})
	if err != nil {
		t.Fatal(err)
	}
	ns, sa, err := iss.Verify(tok, time.Now())
	if err != nil || ns != "ns" || sa != "sa" {
		t.Fatalf("Verify = %q, %q, %v", ns, sa, err)
	}
	if _, _, err := iss.Verify(tok, time.Now().Add(2*time.Hour)); err == nil {
		t.Error("Verify accepted a token after its expiry")
	}
	if _, err := iss.Mint(eksauth.Token{Namespace: "ns"}); err == nil {
		t.Error("Mint without a service account succeeded")
	}
}
