// Package s3 emulates the part of Amazon S3 that the agent's diagnostics
// use: PUT and GET of objects through SigV4 presigned URLs, as made by
// aws-sdk-go-v2's s3.PresignClient, with path-style addressing
// (http://host/<bucket>/<key>).
//
// Unlike the EC2 emulator, this one verifies signatures against its static
// credentials: a presigned URL is a bearer token, and the tests must prove
// that what the agent sends is exactly what was signed. Expired or tampered
// URLs are refused with S3's XML errors (AccessDenied "Request has expired",
// SignatureDoesNotMatch, InvalidAccessKeyId) and their HTTP statuses.
// Objects live in memory. SetFault injects 5xx answers from a seeded random
// source; Calls counts requests.
package s3

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultMaxObjectBytes bounds one PUT: S3's single-PUT limit is 5 GiB, but
// the emulator holds objects in memory.
const DefaultMaxObjectBytes = 64 << 20

// maxClockSkew is how far in the future X-Amz-Date may be.
const maxClockSkew = 15 * time.Minute

// Fault is what SetFault injects.
type Fault struct {
	// ServerErrorFraction of requests fail with 500 InternalError.
	ServerErrorFraction float64
	// UnavailableFraction of requests fail with 503 SlowDown.
	UnavailableFraction float64
}

// Options configures a Server.
type Options struct {
	// Credentials maps access key ids to secret keys. Required.
	Credentials map[string]string
	// Region the signatures must be scoped to. Default is "us-east-1".
	Region string
	// Buckets exist from the start; others can be added with CreateBucket.
	Buckets []string
	// MaxObjectBytes bounds one object. Default is DefaultMaxObjectBytes.
	MaxObjectBytes int64
	// Now is the clock for expiry. Default is time.Now.
	Now func() time.Time
	// Rand drives fault injection and request ids. Default is a PCG with a
	// fixed seed, so runs repeat.
	Rand rand.Source
	// Logger receives refused requests. Default discards.
	Logger *slog.Logger
}

// Server is an http.Handler serving S3 objects.
type Server struct {
	creds  map[string]string
	region string
	max    int64
	now    func() time.Time
	logger *slog.Logger

	mu      sync.Mutex
	rng     *rand.Rand
	buckets map[string]map[string][]byte
	fault   Fault
	calls   map[string]int
}

// New returns a server with opts.Buckets created.
func New(opts Options) (*Server, error) {
	if len(opts.Credentials) == 0 {
		return nil, errors.New("s3 server: no credentials")
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.MaxObjectBytes <= 0 {
		opts.MaxObjectBytes = DefaultMaxObjectBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.NewPCG(1, 2)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		creds: opts.Credentials, region: opts.Region, max: opts.MaxObjectBytes, now: opts.Now, logger: opts.Logger,
		rng: rand.New(opts.Rand), buckets: map[string]map[string][]byte{}, calls: map[string]int{},
	}
	for _, b := range opts.Buckets {
		s.CreateBucket(b)
	}
	return s, nil
}

// CreateBucket adds an empty bucket; an existing one is kept as it is.
func (s *Server) CreateBucket(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.buckets[name]; !ok {
		s.buckets[name] = map[string][]byte{}
	}
}

// Object returns a copy of a stored object.
func (s *Server) Object(bucket, key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.buckets[bucket][key]
	return append([]byte(nil), data...), ok
}

// Keys returns the keys in a bucket, in no particular order.
func (s *Server) Keys(bucket string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.buckets[bucket] {
		keys = append(keys, k)
	}
	return keys
}

// SetFault sets the faults injected into every request; the zero Fault
// clears them.
func (s *Server) SetFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Calls returns how many requests used an HTTP method, refused ones included.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	requestID := s.requestID()
	w.Header().Set("x-amz-request-id", requestID)
	if err := s.serve(w, r); err != nil {
		e := asError(err)
		s.logger.InfoContext(r.Context(), "s3 request refused", "method", r.Method, "path", r.URL.Path,
			"code", e.Code, "request_id", requestID, "err", err)
		writeError(w, e, r.URL.Path, requestID)
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) error {
	s.mu.Lock()
	s.calls[r.Method]++
	fault := s.fault
	roll := s.rng.Float64()
	s.mu.Unlock()

	switch {
	case roll < fault.ServerErrorFraction:
		return &Error{Code: "InternalError", Message: "We encountered an internal error. Please try again.", Status: http.StatusInternalServerError}
	case roll < fault.ServerErrorFraction+fault.UnavailableFraction:
		return &Error{Code: "SlowDown", Message: "Please reduce your request rate.", Status: http.StatusServiceUnavailable}
	}

	bucket, key, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if bucket == "" || !ok || key == "" {
		return &Error{Code: "NotImplemented", Message: "Only object requests with path-style URLs are implemented", Status: http.StatusNotImplemented}
	}
	if err := s.authenticate(r); err != nil {
		return err
	}

	switch r.Method {
	case http.MethodPut:
		return s.put(w, r, bucket, key)
	case http.MethodGet, http.MethodHead:
		return s.get(w, r, bucket, key)
	}
	return &Error{Code: "MethodNotAllowed", Message: "The specified method is not allowed against this resource.", Status: http.StatusMethodNotAllowed}
}

// authenticate checks a presigned request's signature and expiry.
func (s *Server) authenticate(r *http.Request) error {
	if r.URL.Query().Get(qSignature) == "" {
		if r.Header.Get("Authorization") != "" {
			return &Error{Code: "NotImplemented", Message: "Only presigned (query-string) authentication is implemented", Status: http.StatusNotImplemented}
		}
		return &Error{Code: "AccessDenied", Message: "Access Denied", Status: http.StatusForbidden}
	}
	p, err := ParsePresigned(r.URL.RawQuery)
	if err != nil {
		return &Error{Code: "AuthorizationQueryParametersError", Message: err.Error(), Status: http.StatusBadRequest}
	}
	secret, ok := s.creds[p.AccessKeyID]
	if !ok {
		return &Error{Code: "InvalidAccessKeyId", Message: "The AWS Access Key Id you provided does not exist in our records.", Status: http.StatusForbidden}
	}
	if p.Service != "s3" || p.Region != s.region {
		return &Error{Code: "AuthorizationQueryParametersError",
			Message: fmt.Sprintf("Error parsing the X-Amz-Credential parameter; the scope must be %s/s3", s.region), Status: http.StatusBadRequest}
	}
	// The signature comes first: an expiry that was tampered with must read
	// as a bad signature, not as expired.
	want := p.ComputeSignature(r, secret)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(p.Signature))) {
		return &Error{Code: "SignatureDoesNotMatch",
			Message: "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
			Status:  http.StatusForbidden}
	}
	now := s.now()
	if now.After(p.Time.Add(p.Expires)) {
		return &Error{Code: "AccessDenied", Message: "Request has expired", Status: http.StatusForbidden}
	}
	if p.Time.After(now.Add(maxClockSkew)) {
		return &Error{Code: "AccessDenied", Message: "Request is not valid yet", Status: http.StatusForbidden}
	}
	return nil
}

func (s *Server) put(w http.ResponseWriter, r *http.Request, bucket, key string) error {
	if r.ContentLength < 0 {
		return &Error{Code: "MissingContentLength", Message: "You must provide the Content-Length HTTP header.", Status: http.StatusLengthRequired}
	}
	if r.ContentLength > s.max {
		return &Error{Code: "EntityTooLarge", Message: "Your proposed upload exceeds the maximum allowed size", Status: http.StatusBadRequest}
	}
	if !s.bucketExists(bucket) {
		return noSuchBucket()
	}
	data := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, data); err != nil {
		return &Error{Code: "IncompleteBody", Message: "You did not provide the number of bytes specified by the Content-Length HTTP header", Status: http.StatusBadRequest}
	}
	s.mu.Lock()
	objects, ok := s.buckets[bucket]
	if ok {
		objects[key] = data
	}
	s.mu.Unlock()
	if !ok {
		return noSuchBucket() // deleted while the body was read
	}
	w.Header().Set("ETag", etag(data))
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, bucket, key string) error {
	s.mu.Lock()
	objects, bucketOK := s.buckets[bucket]
	data, ok := objects[key]
	s.mu.Unlock()
	if !bucketOK {
		return noSuchBucket()
	}
	if !ok {
		return &Error{Code: "NoSuchKey", Message: "The specified key does not exist.", Status: http.StatusNotFound}
	}
	w.Header().Set("ETag", etag(data))
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Header().Set("Content-Type", "binary/octet-stream")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(data)
	}
	return nil
}

func (s *Server) bucketExists(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.buckets[name]
	return ok
}

func (s *Server) requestID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%016X", s.rng.Uint64())
}

func etag(data []byte) string {
	sum := md5.Sum(data)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}

// Error is an S3 error answer.
type Error struct {
	Code    string
	Message string
	Status  int
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func noSuchBucket() error {
	return &Error{Code: "NoSuchBucket", Message: "The specified bucket does not exist", Status: http.StatusNotFound}
}

func asError(err error) *Error {
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	return &Error{Code: "InternalError", Message: "We encountered an internal error. Please try again.", Status: http.StatusInternalServerError}
}

// errorDocument is S3's <Error> body.
type errorDocument struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string
	Message   string
	Resource  string
	RequestID string `xml:"RequestId"`
}

func writeError(w http.ResponseWriter, e *Error, resource, requestID string) {
	body, err := xml.Marshal(errorDocument{Code: e.Code, Message: e.Message, Resource: resource, RequestID: requestID})
	if err != nil {
		body = nil // a struct of strings always marshals
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(e.Status)
	_, _ = io.WriteString(w, xml.Header)
	_, _ = w.Write(body)
}

// ParseError decodes an S3 <Error> body, as a client sees it; it returns
// nil when body is not one.
func ParseError(body []byte) *Error {
	var doc errorDocument
	if xml.Unmarshal(body, &doc) != nil || doc.Code == "" {
		return nil
	}
	return &Error{Code: doc.Code, Message: doc.Message}
}
