package s3_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/autonode/autonode/sandbox/s3"
)

const (
	testKeyID  = "AKIDEXAMPLE"
	testSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	testBucket = "support-bundles"
)

// clock is a settable time source, so expiry is tested without sleeping.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

// start serves an emulator on 127.0.0.1 and returns it with a presigner
// bound to it.
func start(t *testing.T, clk *clock) (*s3.Server, *awss3.PresignClient, string) {
	t.Helper()
	srv, err := s3.New(s3.Options{
		Credentials: map[string]string{testKeyID: testSecret},
		Buckets:     []string{testBucket},
		Now:         clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	client := awss3.New(awss3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(ts.URL),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(testKeyID, testSecret, ""),
	})
	return srv, awss3.NewPresignClient(client), ts.URL
}

func presignPut(t *testing.T, p *awss3.PresignClient, key string, expires time.Duration) string {
	t.Helper()
	req, err := p.PresignPutObject(context.Background(), &awss3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)},
		awss3.WithPresignExpires(expires))
	if err != nil {
		t.Fatalf("presigning PUT %s: %v", key, err)
	}
	if req.Method != http.MethodPut {
		t.Fatalf("presigned method %s", req.Method)
	}
	return req.URL
}

func put(t *testing.T, rawURL string, body []byte) (int, *s3.Error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, rawURL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, s3.ParseError(data)
}

func TestPresignedPut(t *testing.T) {
	tamper := func(param, value string) func(string) string {
		return func(raw string) string {
			u, _ := url.Parse(raw)
			q := u.Query()
			q.Set(param, value)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	tests := []struct {
		name     string
		key      string
		edit     func(string) string
		advance  time.Duration
		wantCode string // empty: stored
		status   int
	}{
		{name: "stored", key: "node-a/bundle.tar.gz"},
		{name: "key needing escapes", key: "node a/b+c (1)/ü.tar.gz"},
		{name: "within expiry", key: "k1", advance: 14 * time.Minute},
		{name: "expired", key: "k2", advance: 16 * time.Minute, wantCode: "AccessDenied", status: 403},
		{name: "tampered signature", key: "k3", edit: tamper("X-Amz-Signature", strings.Repeat("0", 64)), wantCode: "SignatureDoesNotMatch", status: 403},
		{name: "extended expiry", key: "k4", edit: tamper("X-Amz-Expires", "3600"), wantCode: "SignatureDoesNotMatch", status: 403},
		{name: "other key", key: "k5", edit: func(s string) string { return strings.Replace(s, "/k5?", "/k6?", 1) }, wantCode: "SignatureDoesNotMatch", status: 403},
		{name: "unknown access key", key: "k7", edit: func(s string) string { return strings.Replace(s, testKeyID, "AKIDOTHER", 1) }, wantCode: "InvalidAccessKeyId", status: 403},
		{name: "unsigned", key: "k8", edit: func(s string) string { return strings.Split(s, "?")[0] }, wantCode: "AccessDenied", status: 403},
		{name: "malformed date", key: "k9", edit: tamper("X-Amz-Date", "yesterday"), wantCode: "AuthorizationQueryParametersError", status: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &clock{now: time.Now()}
			srv, presigner, _ := start(t, clk)
			raw := presignPut(t, presigner, tc.key, 15*time.Minute)
			if tc.edit != nil {
				raw = tc.edit(raw)
			}
			clk.Add(tc.advance)
			body := []byte("bundle bytes for " + tc.name)
			status, apiErr := put(t, raw, body)
			if tc.wantCode == "" {
				if status != http.StatusOK {
					t.Fatalf("PUT: status %d, error %+v", status, apiErr)
				}
				got, ok := srv.Object(testBucket, tc.key)
				if !ok || !bytes.Equal(got, body) {
					t.Fatalf("stored %q (found %v), want %q", got, ok, body)
				}
				return
			}
			if status != tc.status || apiErr == nil || apiErr.Code != tc.wantCode {
				t.Fatalf("PUT: status %d, error %+v; want %d %s", status, apiErr, tc.status, tc.wantCode)
			}
			if keys := srv.Keys(testBucket); len(keys) != 0 {
				t.Fatalf("refused PUT stored %v", keys)
			}
		})
	}
}

func TestPresignedGetRoundTrip(t *testing.T) {
	clk := &clock{now: time.Now()}
	_, presigner, _ := start(t, clk)
	body := bytes.Repeat([]byte{0, 1, 2, 255}, 1000)
	if status, e := put(t, presignPut(t, presigner, "obj", time.Minute), body); status != 200 {
		t.Fatalf("PUT: %d %+v", status, e)
	}
	req, err := presigner.PresignGetObject(context.Background(), &awss3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String("obj")})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(req.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Equal(got, body) {
		t.Fatalf("GET: status %d, %d bytes", resp.StatusCode, len(got))
	}
}

func TestFaultsAndLimits(t *testing.T) {
	clk := &clock{now: time.Now()}
	srv, presigner, base := start(t, clk)
	srv.SetFault(s3.Fault{ServerErrorFraction: 1})
	if status, e := put(t, presignPut(t, presigner, "f", time.Minute), []byte("x")); status != 500 || e == nil || e.Code != "InternalError" {
		t.Fatalf("with a fault: %d %+v", status, e)
	}
	srv.SetFault(s3.Fault{UnavailableFraction: 1})
	if status, e := put(t, presignPut(t, presigner, "f", time.Minute), []byte("x")); status != 503 || e == nil || e.Code != "SlowDown" {
		t.Fatalf("with a fault: %d %+v", status, e)
	}
	srv.SetFault(s3.Fault{})
	if status, e := put(t, presignPut(t, presigner, "f", time.Minute), []byte("x")); status != 200 {
		t.Fatalf("fault cleared: %d %+v", status, e)
	}
	if n := srv.Calls(http.MethodPut); n != 3 {
		t.Fatalf("Calls(PUT) = %d, want 3", n)
	}
	raw := presignPut(t, presigner, "f", time.Minute)
	if status, e := put(t, strings.Replace(raw, "/"+testBucket+"/", "/nobucket/", 1), nil); status != 403 || e.Code != "SignatureDoesNotMatch" {
		t.Fatalf("moved bucket: %d %+v", status, e)
	}
	if status, e := put(t, base+"/", nil); status != 501 || e.Code != "NotImplemented" {
		t.Fatalf("service request: %d %+v", status, e)
	}
}

func TestNewNeedsCredentials(t *testing.T) {
	if _, err := s3.New(s3.Options{}); err == nil {
		t.Fatal("New without credentials succeeded")
	}
}
