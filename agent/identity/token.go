package identity

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// maxTokenBytes bounds the token; projected tokens are 1-2 KiB, and the
// header limit stops anything much larger before it gets here.
const maxTokenBytes = 12 << 10

// The classes of token errors; all are answered with 400.
var (
	ErrMissingToken   = errors.New("service account token is missing")
	ErrMalformedToken = errors.New("service account token is malformed")
	ErrExpiredToken   = errors.New("service account token is expired")
)

// Token is a service-account token as read from the Authorization header.
// Its signature is not checked: EKS Auth does that.
type Token struct {
	// Raw is the token itself. It is a secret: never log it.
	Raw string
	// Namespace and ServiceAccount come from the subject
	// system:serviceaccount:<namespace>:<name>; empty for other subjects.
	Namespace, ServiceAccount string
	// Pod is the pod the token is bound to, when it says.
	Pod string
	// Expiry is the exp claim.
	Expiry time.Time
}

// tokenClaims are the claims read; unknown ones are ignored.
type tokenClaims struct {
	jwt.RegisteredClaims
	Kubernetes struct {
		Pod struct {
			Name string `json:"name"`
		} `json:"pod"`
	} `json:"kubernetes.io"`
}

// ParseToken reads the Authorization header's value: a JWT, with an optional
// "Bearer " prefix and surrounding spaces. It checks that the token parses,
// carries exp, and is neither expired nor not yet valid at now. Errors wrap
// ErrMissingToken, ErrMalformedToken or ErrExpiredToken and never contain
// the token.
func ParseToken(header string, now time.Time) (Token, error) {
	raw := normalizeToken(header)
	if raw == "" {
		return Token{}, ErrMissingToken
	}
	if len(raw) > maxTokenBytes {
		return Token{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformedToken, maxTokenBytes)
	}
	var c tokenClaims
	// The parser's own errors may quote parts of the token, so only their
	// class travels on.
	if _, _, err := jwt.NewParser().ParseUnverified(raw, &c); err != nil {
		return Token{}, fmt.Errorf("%w: %s", ErrMalformedToken, jwtReason(err))
	}
	if c.ExpiresAt == nil {
		return Token{}, fmt.Errorf("%w: no exp claim", ErrMalformedToken)
	}
	t := Token{Raw: raw, Expiry: c.ExpiresAt.Time, Pod: c.Kubernetes.Pod.Name}
	if !now.Before(t.Expiry) {
		return Token{}, fmt.Errorf("%w: expired at %s", ErrExpiredToken, t.Expiry.UTC().Format(time.RFC3339))
	}
	// A minute of leeway for clocks that differ between apiserver and node.
	if c.NotBefore != nil && now.Add(time.Minute).Before(c.NotBefore.Time) {
		return Token{}, fmt.Errorf("%w: not valid before %s", ErrMalformedToken, c.NotBefore.UTC().Format(time.RFC3339))
	}
	if rest, ok := strings.CutPrefix(c.Subject, "system:serviceaccount:"); ok {
		if ns, sa, ok := strings.Cut(rest, ":"); ok {
			t.Namespace, t.ServiceAccount = ns, sa
		}
	}
	return t, nil
}

// normalizeToken strips surrounding spaces and an optional "Bearer ".
func normalizeToken(header string) string {
	raw := strings.TrimSpace(header)
	if rest, ok := strings.CutPrefix(raw, "Bearer "); ok {
		raw = strings.TrimSpace(rest)
	}
	return raw
}

// jwtReason names the class of a jwt parse error without its details.
func jwtReason(err error) string {
	if errors.Is(err, jwt.ErrTokenUnverifiable) {
		return "unknown signing algorithm"
	}
	msg := err.Error()
	for _, r := range []struct{ match, reason string }{
		{"number of segments", "not three dot-separated segments"},
		{"decode header", "header is not base64url-encoded JSON"},
		{"decode claim", "claims are not base64url-encoded JSON"},
	} {
		if strings.Contains(msg, r.match) {
			return r.reason
		}
	}
	return "not a JWT"
}
