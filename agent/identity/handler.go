package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/autonode/autonode/agent/identity/eksauth"
)

// CredentialsPath is the one path served.
const CredentialsPath = "/v1/credentials"

// Local error codes, in the JSON body of the answers the endpoint makes
// without asking EKS Auth.
const (
	CodeInvalidToken     = "InvalidToken"
	CodeAccessDenied     = "AccessDenied"
	CodeMethodNotAllowed = "MethodNotAllowed"
	CodeNotFound         = "NotFound"
	CodeBodyTooLarge     = "RequestEntityTooLarge"
)

// ServeHTTP answers GET /v1/credentials; see docs/pod-identity.md for every
// status it returns.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	code := s.serve(w, r)
	if code == http.StatusOK {
		s.m.ok.Inc()
	} else {
		s.m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	}
	s.m.duration.Observe(time.Since(start).Seconds())
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) int {
	switch {
	case r.URL.Path != CredentialsPath:
		return localError(w, http.StatusNotFound, CodeNotFound, "no such path; credentials are at "+CredentialsPath)
	case r.Method != http.MethodGet:
		w.Header().Set("Allow", http.MethodGet)
		return localError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method "+r.Method+" not allowed; use GET")
	case !s.hostAllowed(r.Host):
		return localError(w, http.StatusForbidden, CodeAccessDenied,
			fmt.Sprintf("called through %q; use one of the endpoint's addresses %v", truncate(r.Host, 64), s.allowed))
	case r.ContentLength != 0:
		// A GET carries no body; one of unknown length is refused too.
		if r.ContentLength < 0 || r.ContentLength > maxBodyBytes {
			return localError(w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "request body not allowed")
		}
	}
	a, err := s.cache.get(r.Context(), r.Header.Get("Authorization"))
	if err != nil {
		return s.fetchError(w, r, err)
	}
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	_, _ = w.Write(a.body)
	return http.StatusOK
}

// hostAllowed reports whether the Host header names one of the served
// addresses, with or without a port, IPv6 in brackets.
func (s *Server) hostAllowed(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return false
	}
	for _, b := range s.allowed {
		if a == b {
			return true
		}
	}
	return false
}

// localErrorBody is what local errors answer with. The Go SDK reads code and
// message (case-insensitively), the JavaScript SDK Code and Message.
type localErrorBody struct {
	Code    string `json:"Code"`
	Message string `json:"Message"`
}

func localError(w http.ResponseWriter, status int, code, msg string) int {
	b, _ := json.Marshal(localErrorBody{Code: code, Message: msg}) // strings only: cannot fail
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return status
}

// fetchError answers a failure to get credentials: token problems found
// here are 400 with a JSON body; EKS Auth's errors pass its status through
// (500 when there is none, as for timeouts) with a plain-text body that
// names the error code and the request id, as the anchor writes it.
func (s *Server) fetchError(w http.ResponseWriter, r *http.Request, err error) int {
	if errors.Is(err, ErrMissingToken) || errors.Is(err, ErrMalformedToken) || errors.Is(err, ErrExpiredToken) {
		return localError(w, http.StatusBadRequest, CodeInvalidToken, err.Error())
	}
	status := http.StatusInternalServerError
	var msg string
	var ae *eksauth.APIError
	if errors.As(err, &ae) {
		if ae.StatusCode >= 400 && ae.StatusCode <= 599 {
			status = ae.StatusCode
		}
		msg = fmt.Sprintf("[%s]: (%s): %s, fault: %s", ae.RequestID, ae.Code, ae.Message, ae.ErrorFault())
	} else {
		msg = "unable to fetch credentials from EKS Auth: " + err.Error()
	}
	s.log.Warn("credentials request failed", "token_hash", keyOf(r.Header.Get("Authorization")),
		"remote", r.RemoteAddr, "status", status, "err", err)
	http.Error(w, msg, status)
	return status
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
