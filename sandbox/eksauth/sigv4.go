package eksauth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// signingService is the SigV4 service name of EKS Auth.
const signingService = "eks-auth"

// maxClockSkew is how far X-Amz-Date may be from the server's clock.
const maxClockSkew = 5 * time.Minute

// authHeader is a parsed SigV4 Authorization header.
type authHeader struct {
	accessKeyID, date, region, service string
	signedHeaders                      []string
	signature                          string
}

// parseAuthorization splits "AWS4-HMAC-SHA256 Credential=AKID/date/region/
// service/aws4_request, SignedHeaders=a;b, Signature=hex".
func parseAuthorization(v string) (authHeader, bool) {
	rest, ok := strings.CutPrefix(v, "AWS4-HMAC-SHA256 ")
	if !ok {
		return authHeader{}, false
	}
	var h authHeader
	var cred string
	for part := range strings.SplitSeq(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return authHeader{}, false
		}
		switch k {
		case "Credential":
			cred = val
		case "SignedHeaders":
			h.signedHeaders = strings.Split(val, ";")
		case "Signature":
			h.signature = val
		}
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || len(h.signedHeaders) == 0 || h.signature == "" {
		return authHeader{}, false
	}
	h.accessKeyID, h.date, h.region, h.service = scope[0], scope[1], scope[2], scope[3]
	return h, true
}

// verifySignature recomputes the request's SigV4 signature with the SDK's
// signer over the headers the client says it signed, and compares.
func verifySignature(ctx context.Context, r *http.Request, body []byte, creds aws.Credentials, region string, now time.Time) error {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return errorf(CodeMissingAuthToken, http.StatusForbidden, "Missing Authentication Token")
	}
	h, ok := parseAuthorization(auth)
	if !ok {
		return errorf(codeIncompleteSignature, http.StatusForbidden, "The Authorization header is not a complete SigV4 signature")
	}
	if h.accessKeyID != creds.AccessKeyID {
		return errorf(CodeUnrecognizedClient, http.StatusForbidden, "The security token included in the request is invalid.")
	}
	if h.service != signingService || h.region != region {
		return errorf(CodeInvalidSignature, http.StatusForbidden,
			"Credential should be scoped to a valid region and service %s, not %s/%s.", signingService, h.region, h.service)
	}
	if creds.SessionToken != "" && r.Header.Get("X-Amz-Security-Token") != creds.SessionToken {
		return errorf(CodeUnrecognizedClient, http.StatusForbidden, "The security token included in the request is invalid.")
	}
	signedAt, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil || !strings.HasPrefix(r.Header.Get("X-Amz-Date"), h.date) {
		return errorf(codeIncompleteSignature, http.StatusForbidden, "X-Amz-Date is missing or does not match the credential scope")
	}
	if d := now.Sub(signedAt); d > maxClockSkew || d < -maxClockSkew {
		return errorf(CodeInvalidSignature, http.StatusForbidden, "%s", signatureExpiredMessage)
	}

	// Rebuild the request from what the client signed only: the signer
	// signs every header it is given, so extra ones (User-Agent is ignored
	// anyway, but proxies add others) must not be handed to it.
	clone, err := http.NewRequestWithContext(ctx, r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return errorf(CodeInvalidRequest, http.StatusBadRequest, "Malformed request URI")
	}
	clone.Host = r.Host
	clone.ContentLength = r.ContentLength
	for _, name := range h.signedHeaders {
		switch name {
		case "host", "content-length", "x-amz-date", "x-amz-security-token":
			continue // the signer derives these itself
		}
		for _, v := range r.Header.Values(name) {
			clone.Header.Add(name, v)
		}
	}
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	if got := r.Header.Get("X-Amz-Content-Sha256"); got != "" && got != payloadHash {
		return errorf(CodeInvalidSignature, http.StatusForbidden, "The provided x-amz-content-sha256 does not match the body")
	}
	if err := v4.NewSigner().SignHTTP(ctx, creds, clone, payloadHash, signingService, region, signedAt); err != nil {
		return errorf(CodeInternalServer, http.StatusInternalServerError, "recomputing the signature: %v", err)
	}
	want, ok := parseAuthorization(clone.Header.Get("Authorization"))
	if !ok || strings.Join(want.signedHeaders, ";") != strings.Join(h.signedHeaders, ";") ||
		!hmac.Equal([]byte(want.signature), []byte(h.signature)) {
		return errorf(CodeInvalidSignature, http.StatusForbidden, "%s", signatureMismatchMessage)
	}
	return nil
}
