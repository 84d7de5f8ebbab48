package identity

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/autonode/autonode/sandbox/eksauth"
)

// rawJWT assembles a token from JSON header and claims, signature "sig".
func rawJWT(header, claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(claims)) + ".c2ln"
}

func TestParseToken(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	iss, err := eksauth.NewIssuer("https://oidc.test")
	if err != nil {
		t.Fatal(err)
	}
	minted, err := iss.Mint(eksauth.Token{Namespace: "team", ServiceAccount: "app", Pod: "app-0", IssuedAt: now.Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	es := `{"alg":"ES256","typ":"JWT"}`
	for _, tc := range []struct {
		name    string
		header  string
		wantErr error
		wantNS  string
	}{
		{"minted", minted, nil, "team"},
		{"bearer prefix and spaces", "  Bearer " + minted + " ", nil, "team"},
		{"empty", "", ErrMissingToken, ""},
		{"spaces only", "   ", ErrMissingToken, ""},
		{"one segment", "abc", ErrMalformedToken, ""},
		{"two segments", "abc.def", ErrMalformedToken, ""},
		{"header not base64", "!!!.e30.c2ln", ErrMalformedToken, ""},
		{"header not json", rawJWT(`nope`, `{}`), ErrMalformedToken, ""},
		{"claims not json", rawJWT(es, `nope`), ErrMalformedToken, ""},
		{"unknown alg", rawJWT(`{"alg":"XX256"}`, `{"exp":1900000000}`), ErrMalformedToken, ""},
		{"no exp", rawJWT(es, `{"sub":"system:serviceaccount:a:b"}`), ErrMalformedToken, ""},
		{"exp not a number", rawJWT(es, `{"exp":"soon"}`), ErrMalformedToken, ""},
		{"expired", rawJWT(es, `{"exp":1799999999}`), ErrExpiredToken, ""},
		{"expires now", rawJWT(es, `{"exp":1800000000}`), ErrExpiredToken, ""},
		{"not yet valid", rawJWT(es, `{"exp":1900000000,"nbf":1800000600}`), ErrMalformedToken, ""},
		{"nbf within leeway", rawJWT(es, `{"exp":1900000000,"nbf":1800000030}`), nil, ""},
		{"other subject", rawJWT(es, `{"exp":1900000000,"sub":"user"}`), nil, ""},
		{"too long", rawJWT(es, `{"exp":1900000000,"x":"`+strings.Repeat("a", maxTokenBytes)+`"}`), ErrMalformedToken, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := ParseToken(tc.header, now)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("ParseToken err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if raw := normalizeToken(tc.header); len(raw) > 8 && strings.Contains(err.Error(), raw) {
					t.Errorf("error %q quotes the token", err)
				}
				return
			}
			if tok.Namespace != tc.wantNS {
				t.Errorf("namespace = %q, want %q", tok.Namespace, tc.wantNS)
			}
			if tok.Raw != normalizeToken(tc.header) {
				t.Errorf("raw token not the normalized header")
			}
		})
	}
	tok, err := ParseToken(minted, now)
	if err != nil || tok.ServiceAccount != "app" || tok.Pod != "app-0" || !tok.Expiry.Equal(now.Add(59*time.Minute)) {
		t.Errorf("ParseToken(minted) = %+v, %v", tok, err)
	}
}

func FuzzParseToken(f *testing.F) {
	iss, err := eksauth.NewIssuer("https://oidc.test")
	if err != nil {
		f.Fatal(err)
	}
	minted, err := iss.Mint(eksauth.Token{Namespace: "team", ServiceAccount: "app", IssuedAt: time.Unix(1_800_000_000, 0)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(minted)
	f.Add("Bearer " + minted)
	f.Add(rawJWT(`{"alg":"RS256"}`, `{"exp":1900000000,"sub":"system:serviceaccount::"}`))
	f.Add("a.b.c")
	f.Add("")
	now := time.Unix(1_800_000_060, 0)
	f.Fuzz(func(t *testing.T, header string) {
		tok, err := ParseToken(header, now)
		if err != nil {
			if !errors.Is(err, ErrMissingToken) && !errors.Is(err, ErrMalformedToken) && !errors.Is(err, ErrExpiredToken) {
				t.Fatalf("error %v has no class", err)
			}
			return
		}
		if tok.Raw == "" || !now.Before(tok.Expiry) {
			t.Fatalf("accepted %+v", tok)
		}
		if keyOf(header) != keyOf(tok.Raw) {
			t.Fatal("the header and its token hash differently")
		}
	})
}
