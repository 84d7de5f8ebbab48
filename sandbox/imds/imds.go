// Package imds serves the EC2 Instance Metadata Service (IMDSv2 only) for one
// instance of a vpc.Model, as an http.Handler.
//
// Clients first PUT /latest/api/token with a TTL header and then send the
// token on every GET; requests without a valid token get 401, as a real
// instance configured with HttpTokens=required answers. The metadata tree is
// built from the live model on every request, so ENIs and addresses that EC2
// attaches or assigns show up at once under network/interfaces/macs/, and
// those it detaches or unassigns are gone from the next read. The node role's credentials come from an
// aws.CredentialsProvider, which is what the SDK's ec2rolecreds provider and
// the default credential chain read back.
package imds

import (
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/autonode/autonode/sandbox/vpc"
)

// Header names of the IMDSv2 token flow.
const (
	tokenHeader    = "X-Aws-Ec2-Metadata-Token"
	ttlHeader      = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	maxTokenTTLSec = 21600
)

// Options configures a Server. Every field is optional.
type Options struct {
	// Now is the clock for token expiry and credential times. Default is time.Now.
	Now func() time.Time
	// RoleName is the node role under iam/security-credentials/. When empty,
	// the instance has no instance profile and the iam/ tree is absent.
	RoleName string
	// Credentials back the node role. Credentials that cannot expire are
	// served with an expiry six hours ahead, since the SDK requires one.
	Credentials aws.CredentialsProvider
	// Logger receives request errors. Default discards.
	Logger *slog.Logger
}

// Server is the IMDS handler for one instance.
type Server struct {
	model      *vpc.Model
	instanceID string
	opts       Options

	mu     sync.Mutex
	tokens map[string]time.Time // token -> expiry
}

// New returns the IMDS of instanceID in model.
func New(model *vpc.Model, instanceID string, opts Options) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{model: model, instanceID: instanceID, opts: opts, tokens: map[string]time.Time{}}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/latest/api/token" {
		s.serveToken(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !s.validToken(r.Header.Get(tokenHeader)) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	s.serveMetadata(w, r)
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// The real IMDS refuses token requests that went through a proxy, so a
	// token cannot leak off the instance.
	if r.Header.Get("X-Forwarded-For") != "" {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get(ttlHeader))
	if err != nil || ttl < 1 || ttl > maxTokenTTLSec {
		http.Error(w, "invalid "+ttlHeader, http.StatusBadRequest)
		return
	}
	buf := make([]byte, 32)
	_, _ = rand.Read(buf) // crypto/rand.Read never fails
	token := base64.RawURLEncoding.EncodeToString(buf)

	now := s.opts.Now()
	s.mu.Lock()
	for t, exp := range s.tokens { // drop expired tokens so the map stays small
		if !now.Before(exp) {
			delete(s.tokens, t)
		}
	}
	s.tokens[token] = now.Add(time.Duration(ttl) * time.Second)
	s.mu.Unlock()

	w.Header().Set(ttlHeader, strconv.Itoa(ttl))
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(token))
}

func (s *Server) validToken(token string) bool {
	if token == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.tokens[token]
	return ok && s.opts.Now().Before(exp)
}

func (s *Server) serveMetadata(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	root, err := s.tree()
	if err != nil {
		s.opts.Logger.ErrorContext(ctx, "building instance metadata", "instance", s.instanceID, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	n := root.lookup(r.URL.Path)
	if n == nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	body, err := n.text(ctx)
	if err != nil {
		s.opts.Logger.ErrorContext(ctx, "serving instance metadata", "instance", s.instanceID, "path", r.URL.Path, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	if n.json {
		w.Header().Set("Content-Type", "application/json")
	}
	_, _ = w.Write([]byte(body))
}
