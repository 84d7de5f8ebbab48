package s3

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// A query as aws-sdk-go-v2's presigner writes it.
const seedQuery = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261125%2Fus-east-1%2Fs3%2Faws4_request" +
	"&X-Amz-Date=20261125T101500Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&x-id=PutObject" +
	"&X-Amz-Signature=9b6c3f0b8d0a3f6b2c1e4d5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8"

func TestParsePresigned(t *testing.T) {
	tests := []struct {
		name, query string
		ok          bool
	}{
		{"sdk", seedQuery, true},
		{"empty", "", false},
		{"other algorithm", "X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256", false},
		{"short credential", replace(seedQuery, "%2Fs3%2Faws4_request", "%2Fs3"), false},
		{"date mismatch", replace(seedQuery, "20261125T101500Z", "20261126T101500Z"), false},
		{"expiry zero", replace(seedQuery, "X-Amz-Expires=900", "X-Amz-Expires=0"), false},
		{"expiry max", replace(seedQuery, "X-Amz-Expires=900", "X-Amz-Expires=604800"), true},
		{"expiry max+1", replace(seedQuery, "X-Amz-Expires=900", "X-Amz-Expires=604801"), false},
		{"no host", replace(seedQuery, "SignedHeaders=host", "SignedHeaders=x-amz-meta"), false},
		{"unsorted headers", replace(seedQuery, "SignedHeaders=host", "SignedHeaders=host%3Bcontent-type"), false},
		{"sorted headers", replace(seedQuery, "SignedHeaders=host", "SignedHeaders=content-type%3Bhost"), true},
		{"short signature", replace(seedQuery, "c5d6e7f8", "c5d6"), false},
		{"repeated", seedQuery + "&X-Amz-Date=20261125T101500Z", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePresigned(tc.query)
			if (err == nil) != tc.ok {
				t.Fatalf("ParsePresigned: err %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func replace(s, old, new string) string {
	if !strings.Contains(s, old) {
		panic("seed does not contain " + old)
	}
	return strings.Replace(s, old, new, 1)
}

// FuzzParsePresigned feeds arbitrary query strings to the parser and, when
// one parses, to the signature computation: neither may panic, and what
// parses must satisfy the invariants authenticate relies on.
func FuzzParsePresigned(f *testing.F) {
	f.Add(seedQuery)
	f.Add("X-Amz-Signature=%zz")
	f.Add("a=b&&c=%20;d")
	f.Fuzz(func(t *testing.T, q string) {
		p, err := ParsePresigned(q)
		if err != nil {
			return
		}
		if p.Expires <= 0 || p.Expires > maxPresignExpiry || len(p.Signature) != 64 || p.AccessKeyID == "" {
			t.Fatalf("accepted %q with %+v", q, p)
		}
		r := httptest.NewRequest("PUT", "http://127.0.0.1/b/k?"+q, nil)
		_ = p.ComputeSignature(r, "secret")
	})
}
