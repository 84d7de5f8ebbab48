package eksauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// PodIdentityAudience is the audience of the tokens kubelet projects for
// Pod Identity, and the only one EKS Auth accepts.
const PodIdentityAudience = "pods.eks.amazonaws.com"

// Issuer is the sandbox's service-account token issuer: an ECDSA P-256 key,
// as a kube-apiserver's --service-account-signing-key-file holds, that mints
// tokens shaped like projected service-account tokens.
type Issuer struct {
	// URL is the iss claim.
	URL string
	key *ecdsa.PrivateKey
}

// NewIssuer creates an issuer with a fresh key.
func NewIssuer(url string) (*Issuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issuer %s: generating its key: %w", url, err)
	}
	return &Issuer{URL: url, key: key}, nil
}

// Token describes a token to mint.
type Token struct {
	Namespace      string
	ServiceAccount string
	// Pod names the pod the token is bound to; optional.
	Pod string
	// Audience is the aud claim. Default is PodIdentityAudience.
	Audience string
	// IssuedAt is the iat and nbf claims. Default is now.
	IssuedAt time.Time
	// TTL is how long the token lives. Default is 1h.
	TTL time.Duration
}

// Claims are the claims of a service-account token that EKS Auth reads.
type Claims struct {
	jwt.RegisteredClaims
	Kubernetes struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"serviceaccount"`
		Pod *struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod,omitempty"`
	} `json:"kubernetes.io"`
}

// Mint signs a service-account token: sub system:serviceaccount:<ns>:<sa>,
// aud pods.eks.amazonaws.com, and the kubernetes.io claims kubelet's
// projected tokens carry.
func (i *Issuer) Mint(t Token) (string, error) {
	if t.Namespace == "" || t.ServiceAccount == "" {
		return "", errors.New("minting a token: namespace and service account are required")
	}
	if t.Audience == "" {
		t.Audience = PodIdentityAudience
	}
	if t.IssuedAt.IsZero() {
		t.IssuedAt = time.Now()
	}
	if t.TTL == 0 {
		t.TTL = time.Hour
	}
	var c Claims
	c.Issuer = i.URL
	c.Subject = "system:serviceaccount:" + t.Namespace + ":" + t.ServiceAccount
	c.Audience = jwt.ClaimStrings{t.Audience}
	c.IssuedAt = jwt.NewNumericDate(t.IssuedAt)
	c.NotBefore = jwt.NewNumericDate(t.IssuedAt)
	c.ExpiresAt = jwt.NewNumericDate(t.IssuedAt.Add(t.TTL))
	c.ID = rand.Text()
	c.Kubernetes.Namespace = t.Namespace
	c.Kubernetes.ServiceAccount.Name = t.ServiceAccount
	c.Kubernetes.ServiceAccount.UID = rand.Text()
	if t.Pod != "" {
		c.Kubernetes.Pod = &struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		}{t.Pod, rand.Text()}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	tok.Header["kid"] = "sandbox"
	s, err := tok.SignedString(i.key)
	if err != nil {
		return "", fmt.Errorf("signing a token for %s/%s: %w", t.Namespace, t.ServiceAccount, err)
	}
	return s, nil
}

// errTokenExpired separates an expired token from an invalid one, since EKS
// Auth answers them with different codes.
var errTokenExpired = errors.New("token is expired")

// Verify checks a token's signature, issuer and audience, then its times
// against now. It returns the namespace and service account of its subject.
func (i *Issuer) Verify(token string, now time.Time) (namespace, serviceAccount string, err error) {
	var c Claims
	_, err = jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return &i.key.PublicKey, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithIssuer(i.URL),
		jwt.WithAudience(PodIdentityAudience),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	if errors.Is(err, jwt.ErrTokenExpired) {
		return "", "", errTokenExpired
	}
	if err != nil {
		return "", "", err
	}
	rest, ok := strings.CutPrefix(c.Subject, "system:serviceaccount:")
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || sa == "" {
		return "", "", fmt.Errorf("subject %q is no service account", c.Subject)
	}
	return ns, sa, nil
}
