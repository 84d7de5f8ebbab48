// Package ec2 emulates the EC2 Query API over HTTP for the sandbox, backed
// by a vpc.Model and the sandbox catalog, so that aws-sdk-go-v2's EC2 client
// can be pointed at it with BaseEndpoint.
//
// Requests are form-encoded POSTs (Action=…&Version=…); answers are XML in
// EC2's 2016-11-15 namespace, and errors use EC2's <Response><Errors> document
// with the status EC2 sends, so the SDK's error codes and retryer behave as
// against AWS. Requests must carry a SigV4 Authorization header, but the
// signature itself is not verified: the sandbox checks that a client signs,
// not that it holds particular keys.
//
// Actions live in a registry: Handle adds one, and New registers the
// describe actions, the launch actions the provisioner uses (launch.go), and
// the network-interface actions that VPC IPAM uses
// (Create/Attach/Detach/DeleteNetworkInterface,
// ModifyNetworkInterfaceAttribute, Assign/UnassignPrivateIpAddresses). Those
// enforce the catalog's per-type limits (MaxENIs per network card,
// IPv4PerENI counting each /28 as one slot) through the model. SetFault injects throttling, server errors and latency
// per action from a seeded random source; Calls counts requests per action so
// tests can see the SDK retry.
package ec2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/autonode/autonode/sandbox/catalog"
	"github.com/autonode/autonode/sandbox/vpc"
)

// maxBodyBytes bounds a request body; EC2's own limit is lower for most calls.
const maxBodyBytes = 1 << 20

// HandlerFunc serves one action. It returns a struct whose fields become the
// children of <{Action}Response>, or an error (an *Error for client errors).
type HandlerFunc func(ctx context.Context, req *Request) (any, error)

// Fault is what SetFault injects into an action.
type Fault struct {
	// ThrottleFraction of calls fail with RequestLimitExceeded (503).
	ThrottleFraction float64
	// ServerErrorFraction of calls fail with InternalError (500).
	ServerErrorFraction float64
	// Latency delays every call; a cancelled request stops waiting.
	Latency time.Duration
}

// Options configures a Server.
type Options struct {
	// Model is the VPC the actions read and change. Required.
	Model *vpc.Model
	// Catalog answers DescribeInstanceTypes and gives each instance type's
	// ENI and address limits. Default is catalog.Default().
	Catalog []catalog.InstanceType
	// Rand drives fault injection and request ids. Default is a PCG with a
	// fixed seed, so runs repeat.
	Rand rand.Source
	// Logger receives internal errors. Default discards.
	Logger *slog.Logger
	// Launch configures the launch actions (CreateFleet, TerminateInstances,
	// launch templates, images, spot prices); see LaunchOptions.
	Launch LaunchOptions
}

// Server is the EC2 Query API handler.
type Server struct {
	model   *vpc.Model
	catalog []catalog.InstanceType
	logger  *slog.Logger

	mu       sync.Mutex
	rng      *rand.Rand
	handlers map[string]HandlerFunc
	faults   map[string]Fault
	calls    map[string]int

	launch *launchState
}

// New returns a server with the describe and network-interface actions registered.
func New(opts Options) (*Server, error) {
	if opts.Model == nil {
		return nil, errors.New("ec2 server: no vpc model")
	}
	if opts.Catalog == nil {
		opts.Catalog = catalog.Default()
	}
	if opts.Rand == nil {
		opts.Rand = rand.NewPCG(1, 2)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		model:    opts.Model,
		catalog:  opts.Catalog,
		logger:   opts.Logger,
		rng:      rand.New(opts.Rand),
		handlers: map[string]HandlerFunc{},
		faults:   map[string]Fault{},
		calls:    map[string]int{},
	}
	s.Handle("DescribeAvailabilityZones", s.describeAvailabilityZones)
	s.Handle("DescribeInstances", s.describeInstances)
	s.Handle("DescribeInstanceTypes", s.describeInstanceTypes)
	s.Handle("DescribeNetworkInterfaces", s.describeNetworkInterfaces)
	s.Handle("DescribeSubnets", s.describeSubnets)
	s.Handle("CreateNetworkInterface", s.createNetworkInterface)
	s.Handle("AttachNetworkInterface", s.attachNetworkInterface)
	s.Handle("ModifyNetworkInterfaceAttribute", s.modifyNetworkInterfaceAttribute)
	s.Handle("AssignPrivateIpAddresses", s.assignPrivateIPAddresses)
	s.Handle("UnassignPrivateIpAddresses", s.unassignPrivateIPAddresses)
	s.Handle("DetachNetworkInterface", s.detachNetworkInterface)
	s.Handle("DeleteNetworkInterface", s.deleteNetworkInterface)
	s.launch = newLaunchState(opts.Launch, s.model)
	s.registerLaunchActions()
	return s, nil
}

// Handle registers (or replaces) the handler of an action.
func (s *Server) Handle(action string, h HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers[action] = h
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

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	requestID := s.requestID()
	action, result, err := s.serve(ctx, r)
	if err != nil {
		e := apiError(err)
		if e.Code == CodeInternalError {
			s.logger.ErrorContext(ctx, "ec2 request failed", "action", action, "request_id", requestID, "err", err)
		}
		w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
		w.WriteHeader(e.Status)
		_, _ = w.Write(marshalError(e, requestID))
		return
	}
	body, err := marshalResponse(action, requestID, result)
	if err != nil {
		s.logger.ErrorContext(ctx, "ec2 response failed", "action", action, "request_id", requestID, "err", err)
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write(marshalError(Errorf(CodeInternalError, "An internal error has occurred"), requestID))
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	_, _ = w.Write(body)
}

// serve checks, parses, counts, injects faults and dispatches one request.
func (s *Server) serve(ctx context.Context, r *http.Request) (string, any, error) {
	if r.Method != http.MethodPost {
		return "", nil, &Error{Code: "UnsupportedHttpVerb", Message: "The EC2 Query API takes POST", Status: http.StatusMethodNotAllowed}
	}
	if !signed(r.Header.Get("Authorization")) {
		return "", nil, Errorf(CodeAuthFailure, "AWS was not able to validate the provided access credentials")
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		return "", nil, Errorf(CodeInvalidParameterValue, "Reading the request body: %v", err)
	}
	req, err := ParseQuery(string(body))
	if err != nil {
		return "", nil, Errorf(CodeMissingAction, "The request must contain the parameter Action")
	}

	s.mu.Lock()
	s.calls[req.Action]++
	h, ok := s.handlers[req.Action]
	fault := s.faults[req.Action]
	roll := s.rng.Float64()
	s.mu.Unlock()

	if !ok {
		return req.Action, nil, Errorf(CodeInvalidAction, "The action %s is not valid for this web service.", req.Action)
	}
	if fault.Latency > 0 {
		t := time.NewTimer(fault.Latency)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return req.Action, nil, fmt.Errorf("%s: waiting out injected latency: %w", req.Action, ctx.Err())
		case <-t.C:
		}
	}
	switch {
	case roll < fault.ThrottleFraction:
		return req.Action, nil, Errorf(CodeRequestLimitExceeded, "Request limit exceeded.")
	case roll < fault.ThrottleFraction+fault.ServerErrorFraction:
		return req.Action, nil, Errorf(CodeInternalError, "An internal error has occurred")
	}
	result, err := h(ctx, req)
	if err != nil {
		return req.Action, nil, fmt.Errorf("%s: %w", req.Action, err)
	}
	return req.Action, result, nil
}

// signed reports whether an Authorization header has SigV4's shape.
func signed(auth string) bool {
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	return ok && strings.Contains(rest, "Credential=") && strings.Contains(rest, "SignedHeaders=") && strings.Contains(rest, "Signature=")
}

// requestID returns a UUID-shaped id from the seeded source.
func (s *Server) requestID() string {
	s.mu.Lock()
	a, b := s.rng.Uint64(), s.rng.Uint64()
	s.mu.Unlock()
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", a>>32, a>>16&0xffff, a&0xffff, b>>48, b&0xffffffffffff)
}
