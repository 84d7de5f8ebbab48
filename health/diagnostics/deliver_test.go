package diagnostics

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/autonode/autonode/sandbox/s3"
)

const (
	testKeyID  = "AKIDDIAGNOSTICS"
	testSecret = "diagnostics/test/secret/key"
	testBucket = "support"
)

// s3Fixture is an S3 emulator on 127.0.0.1 and a real SDK presigner bound
// to it.
type s3Fixture struct {
	server    *s3.Server
	presigner *awss3.PresignClient
}

func newS3(t *testing.T) *s3Fixture {
	t.Helper()
	srv, err := s3.New(s3.Options{Credentials: map[string]string{testKeyID: testSecret}, Buckets: []string{testBucket}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	c := awss3.New(awss3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(ts.URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(testKeyID, testSecret, ""),
	})
	return &s3Fixture{server: srv, presigner: awss3.NewPresignClient(c)}
}

func (f *s3Fixture) presign(t *testing.T, key string) string {
	t.Helper()
	req, err := f.presigner.PresignPutObject(context.Background(), &awss3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)},
		awss3.WithPresignExpires(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return req.URL
}

func TestUpload(t *testing.T) {
	body := bytes.Repeat([]byte("bundle\x00\xff"), 4096)
	tests := []struct {
		name     string
		edit     func(string) string
		fault    s3.Fault
		wantCode string
		puts     int
	}{
		{name: "stored", puts: 1},
		{name: "tampered signature", edit: tamperSignature, wantCode: "SignatureDoesNotMatch", puts: 1},
		{name: "server error retried", fault: s3.Fault{ServerErrorFraction: 1}, wantCode: "InternalError", puts: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newS3(t)
			f.server.SetFault(tc.fault)
			path := filepath.Join(t.TempDir(), "b.tar.gz")
			if err := os.WriteFile(path, body, 0o600); err != nil {
				t.Fatal(err)
			}
			dest := f.presign(t, "node/b.tar.gz")
			if tc.edit != nil {
				dest = tc.edit(dest)
			}
			u := &uploader{client: http.DefaultClient, attempts: 3, backoff: time.Millisecond}
			err := u.upload(context.Background(), dest, path)
			if n := f.server.Calls(http.MethodPut); n != tc.puts {
				t.Errorf("%d PUTs, want %d", n, tc.puts)
			}
			if tc.wantCode == "" {
				if err != nil {
					t.Fatal(err)
				}
				got, _ := f.server.Object(testBucket, "node/b.tar.gz")
				if !bytes.Equal(got, body) {
					t.Fatalf("stored %d bytes, want the %d bytes of the file", len(got), len(body))
				}
				return
			}
			var ue *UploadError
			if !errors.As(err, &ue) || ue.Code != tc.wantCode {
				t.Fatalf("upload: %v, want code %s", err, tc.wantCode)
			}
			if strings.Contains(err.Error(), "X-Amz-Signature") {
				t.Fatalf("error leaks the presigned URL: %v", err)
			}
			if keys := f.server.Keys(testBucket); len(keys) != 0 {
				t.Fatalf("refused upload stored %v", keys)
			}
		})
	}
}

// tamperSignature replaces a presigned URL's signature with another
// well-formed one.
func tamperSignature(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	q := u.Query()
	q.Set("X-Amz-Signature", strings.Repeat("0", 64))
	u.RawQuery = q.Encode()
	return u.String()
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://b.s3.amazonaws.com/k/x.tar.gz?X-Amz-Signature=abc&X-Amz-Credential=AKID": "https://b.s3.amazonaws.com/k/x.tar.gz",
		"http://user:pw@127.0.0.1:9000/b/k?x=1":                                           "http://127.0.0.1:9000/b/k",
		"::bad":                                                                           "(unparseable URL)",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var names []string
	for i := range 5 {
		name := bundleName("node1", int64(i+1), base.Add(time.Duration(i)*time.Minute)) + bundleSuffix
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		mod := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	for _, other := range []string{"kubelet.log", partialPrefix + "left-behind"} {
		if err := os.WriteFile(filepath.Join(dir, other), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := prune(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{names[2], names[1], names[0]}) {
		t.Errorf("removed %v", removed)
	}
	entries, _ := os.ReadDir(dir)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{"kubelet.log", names[3], names[4]}; !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
}
