// Package eksauth emulates the EKS Auth API for the sandbox: the REST-JSON
// operation AssumeRoleForPodIdentity, which trades a pod's service-account
// token for temporary credentials of the role associated with its service
// account.
//
// Unlike the EC2 emulator, this one verifies SigV4 signatures: it recomputes
// each request's signature with the SDK's signer and the static credentials
// it was given, so a client that signs the wrong thing fails here as it would
// against AWS. It issues credentials only for tokens signed by its own
// Issuer, for the cluster it serves, to service accounts in its association
// table, and each call issues fresh credentials that last CredentialDuration.
//
// SetFault injects throttling (ThrottlingException, 429), server errors
// (InternalServerException, 500) and latency; Calls counts requests per
// action, failed ones included; Issued lists every credential handed out, so
// tests can look for leaks.
package eksauth

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// ActionAssumeRoleForPodIdentity is the one action served; it names the
// action in SetFault and Calls.
const ActionAssumeRoleForPodIdentity = "AssumeRoleForPodIdentity"

// The static credentials that requests must be signed with unless Options
// says otherwise; the IMDS emulator can serve them as the node role.
const (
	TestAccessKeyID     = "AKIDSANDBOXNODE"
	TestSecretAccessKey = "sandbox-node-secret-key"
)

// maxBodyBytes bounds a request body; a token is a few KiB at most.
const maxBodyBytes = 64 << 10

// Fault is what SetFault injects into an action.
type Fault struct {
	// ThrottleFraction of calls fail with ThrottlingException (429).
	ThrottleFraction float64
	// ServerErrorFraction of calls fail with InternalServerException (500).
	ServerErrorFraction float64
	// Latency delays every call; a cancelled request stops waiting.
	Latency time.Duration
}

// Options configures a Server.
type Options struct {
	// ClusterName is the cluster served; other names get
	// ResourceNotFoundException. Required.
	ClusterName string
	// Region is the signing region requests must use. Required.
	Region string
	// Issuer signs the tokens accepted. Required.
	Issuer *Issuer
	// Credentials are the node credentials requests must be signed with.
	// Default is TestAccessKeyID / TestSecretAccessKey without a session token.
	Credentials aws.Credentials
	// CredentialDuration is how long issued credentials last. Default is 6h,
	// as EKS Auth issues them.
	CredentialDuration time.Duration
	// Now is the clock for token and signature checks and expirations.
	// Default is time.Now.
	Now func() time.Time
	// Rand drives fault injection and request ids. Default is a PCG with a
	// fixed seed, so runs repeat.
	Rand mrand.Source
	// Logger receives request failures. Default discards.
	Logger *slog.Logger
}

// Issued is one set of credentials the emulator handed out.
type Issued struct {
	Namespace, ServiceAccount, RoleARN string
	AccessKeyID, SecretAccessKey       string
	SessionToken                       string
	Expiration                         time.Time
}

// Server is the EKS Auth handler.
type Server struct {
	opts Options

	mu           sync.Mutex
	rng          *mrand.Rand
	associations map[string]string // "ns/sa" -> role ARN
	faults       map[string]Fault
	calls        map[string]int
	issued       []Issued
}

// New returns an emulator with an empty association table.
func New(opts Options) (*Server, error) {
	if opts.ClusterName == "" || opts.Region == "" || opts.Issuer == nil {
		return nil, errors.New("eks auth emulator: cluster name, region and issuer are required")
	}
	if opts.Credentials.AccessKeyID == "" {
		opts.Credentials = aws.Credentials{AccessKeyID: TestAccessKeyID, SecretAccessKey: TestSecretAccessKey}
	}
	if opts.CredentialDuration <= 0 {
		opts.CredentialDuration = 6 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = mrand.NewPCG(1, 2)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		opts:         opts,
		rng:          mrand.New(opts.Rand),
		associations: map[string]string{},
		faults:       map[string]Fault{},
		calls:        map[string]int{},
	}, nil
}

// Associate maps a service account to a role, as a Pod Identity association
// does; a second call replaces the role.
func (s *Server) Associate(namespace, serviceAccount, roleARN string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.associations[namespace+"/"+serviceAccount] = roleARN
}

// Disassociate removes a service account's association.
func (s *Server) Disassociate(namespace, serviceAccount string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.associations, namespace+"/"+serviceAccount)
}

// SetFault sets the faults injected into an action; the zero Fault clears them.
func (s *Server) SetFault(action string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[action] = f
}

// Calls returns how many requests named action, failed ones included.
func (s *Server) Calls(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[action]
}

// Issued returns every credential handed out so far, oldest first.
func (s *Server) Issued() []Issued {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Issued(nil), s.issued...)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	requestID := s.requestID()
	w.Header().Set("X-Amzn-Requestid", requestID)
	body, err := s.serve(ctx, r)
	if err != nil {
		e := apiError(err)
		if e.Status >= 500 {
			s.opts.Logger.ErrorContext(ctx, "eks auth request failed", "request_id", requestID, "err", err)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Amzn-Errortype", e.Code)
		w.WriteHeader(e.Status)
		_ = json.NewEncoder(w).Encode(map[string]string{"__type": e.Code, "message": e.Message})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// serve checks, counts, injects faults and answers one request.
func (s *Server) serve(ctx context.Context, r *http.Request) ([]byte, error) {
	cluster, ok := parsePath(r.URL.Path)
	if !ok {
		return nil, errorf(codeUnknownOperation, http.StatusNotFound, "No operation matches %s %s", r.Method, r.URL.Path)
	}
	if r.Method != http.MethodPost {
		return nil, errorf(codeUnknownOperation, http.StatusMethodNotAllowed, "AssumeRoleForPodIdentity takes POST")
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		return nil, errorf(CodeInvalidRequest, http.StatusBadRequest, "Reading the request body: %v", err)
	}
	action := ActionAssumeRoleForPodIdentity
	s.mu.Lock()
	s.calls[action]++
	fault := s.faults[action]
	roll := s.rng.Float64()
	s.mu.Unlock()

	if err := verifySignature(ctx, r, body, s.opts.Credentials, s.opts.Region, s.opts.Now()); err != nil {
		return nil, err
	}
	if fault.Latency > 0 {
		t := time.NewTimer(fault.Latency)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: waiting out injected latency: %w", action, ctx.Err())
		case <-t.C:
		}
	}
	switch {
	case roll < fault.ThrottleFraction:
		return nil, errorf(CodeThrottling, http.StatusTooManyRequests, "Rate exceeded")
	case roll < fault.ThrottleFraction+fault.ServerErrorFraction:
		return nil, errorf(CodeInternalServer, http.StatusInternalServerError, "An internal error occurred")
	}
	return s.assumeRole(cluster, body)
}

// parsePath matches /clusters/{clusterName}/assume-role-for-pod-identity.
func parsePath(p string) (cluster string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/clusters/")
	if !ok {
		return "", false
	}
	cluster, ok = strings.CutSuffix(rest, "/assume-role-for-pod-identity")
	return cluster, ok && cluster != "" && !strings.Contains(cluster, "/")
}

func (s *Server) assumeRole(cluster string, body []byte) ([]byte, error) {
	var in struct {
		Token *string `json:"token"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, errorf(CodeInvalidRequest, http.StatusBadRequest, "The request body is not valid JSON")
	}
	if in.Token == nil || *in.Token == "" {
		return nil, errorf(CodeInvalidParameter, http.StatusBadRequest, "token is required")
	}
	if cluster != s.opts.ClusterName {
		return nil, errorf(CodeResourceNotFound, http.StatusNotFound, "No cluster found for name: %s.", cluster)
	}
	now := s.opts.Now()
	ns, sa, err := s.opts.Issuer.Verify(*in.Token, now)
	if errors.Is(err, errTokenExpired) {
		return nil, errorf(CodeExpiredToken, http.StatusBadRequest, "The service account token is expired")
	}
	if err != nil {
		// The reason stays here: AWS does not say why a token failed.
		return nil, errorf(CodeInvalidToken, http.StatusBadRequest, "The service account token is not valid")
	}
	s.mu.Lock()
	role, ok := s.associations[ns+"/"+sa]
	s.mu.Unlock()
	if !ok {
		return nil, errorf(CodeAccessDenied, http.StatusBadRequest,
			"No Pod Identity association for service account %s/%s in cluster %s", ns, sa, cluster)
	}
	account, roleName := roleParts(role)
	iss := Issued{
		Namespace: ns, ServiceAccount: sa, RoleARN: role,
		AccessKeyID:     "ASIA" + strings.ToUpper(rand.Text()[:16]),
		SecretAccessKey: rand.Text() + rand.Text()[:14],
		SessionToken:    "IQoJb3JpZ2luX2VjE" + rand.Text() + rand.Text() + rand.Text(),
		Expiration:      now.Add(s.opts.CredentialDuration).Truncate(time.Second),
	}
	s.mu.Lock()
	s.issued = append(s.issued, iss)
	assocID := fmt.Sprintf("a-%013x", s.rng.Uint64()>>12)
	s.mu.Unlock()
	session := "eks-" + cluster + "-" + ns + "-" + sa
	out := map[string]any{
		"subject":  map[string]string{"namespace": ns, "serviceAccount": sa},
		"audience": PodIdentityAudience,
		"podIdentityAssociation": map[string]string{
			"associationArn": fmt.Sprintf("arn:aws:eks:%s:%s:podidentityassociation/%s/%s", s.opts.Region, account, cluster, assocID),
			"associationId":  assocID,
		},
		"assumedRoleUser": map[string]string{
			"arn":          fmt.Sprintf("arn:aws:sts::%s:assumed-role/%s/%s", account, roleName, session),
			"assumeRoleId": "AROA" + strings.ToUpper(rand.Text()[:17]) + ":" + session,
		},
		"credentials": map[string]any{
			"accessKeyId":     iss.AccessKeyID,
			"secretAccessKey": iss.SecretAccessKey,
			"sessionToken":    iss.SessionToken,
			"expiration":      iss.Expiration.Unix(),
		},
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encoding the answer: %w", err)
	}
	return b, nil
}

// roleParts splits arn:aws:iam::<account>:role/<path/name> into the account
// and the role name, with fallbacks for malformed test input.
func roleParts(roleARN string) (account, name string) {
	parts := strings.SplitN(roleARN, ":", 6)
	account, name = "000000000000", "role"
	if len(parts) == 6 {
		if parts[4] != "" {
			account = parts[4]
		}
		res := parts[5]
		if i := strings.LastIndexByte(res, '/'); i >= 0 {
			res = res[i+1:]
		}
		if res != "" {
			name = res
		}
	}
	return account, name
}

// requestID returns a UUID-shaped id from the seeded source.
func (s *Server) requestID() string {
	s.mu.Lock()
	a, b := s.rng.Uint64(), s.rng.Uint64()
	s.mu.Unlock()
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", a>>32, a>>16&0xffff, a&0xffff, b>>48, b&0xffffffffffff)
}
