package s3

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The SigV4 query parameters of a presigned URL.
const (
	qAlgorithm     = "X-Amz-Algorithm"
	qCredential    = "X-Amz-Credential"
	qDate          = "X-Amz-Date"
	qExpires       = "X-Amz-Expires"
	qSignedHeaders = "X-Amz-SignedHeaders"
	qSignature     = "X-Amz-Signature"
	qSecurityToken = "X-Amz-Security-Token"
	qContentSHA256 = "X-Amz-Content-Sha256"

	algorithm       = "AWS4-HMAC-SHA256"
	amzDateLayout   = "20060102T150405Z"
	unsignedPayload = "UNSIGNED-PAYLOAD"
	// maxPresignExpiry is S3's limit on X-Amz-Expires: seven days.
	maxPresignExpiry = 7 * 24 * time.Hour
)

// Presigned is a parsed SigV4 query-string signature.
type Presigned struct {
	AccessKeyID string
	// Date is the scope date, YYYYMMDD.
	Date, Region, Service string
	Time                  time.Time
	Expires               time.Duration
	// SignedHeaders are lower-case and in the order given, which SigV4
	// requires to be sorted.
	SignedHeaders []string
	Signature     string
	SecurityToken string
	// Query is every query parameter, decoded; X-Amz-Signature included.
	Query url.Values
}

// ParsePresigned parses the raw query string of a presigned request. It
// checks the shape of every SigV4 field but not the signature itself.
func ParsePresigned(rawQuery string) (*Presigned, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	one := func(k string) (string, error) {
		v := q[k]
		if len(v) != 1 || v[0] == "" {
			return "", fmt.Errorf("query parameter %s must appear once and be non-empty", k)
		}
		return v[0], nil
	}
	p := &Presigned{Query: q}
	alg, err := one(qAlgorithm)
	if err != nil {
		return nil, err
	}
	if alg != algorithm {
		return nil, fmt.Errorf("%s %q is not %s", qAlgorithm, alg, algorithm)
	}
	cred, err := one(qCredential)
	if err != nil {
		return nil, err
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || slices.Contains(scope[:4], "") {
		return nil, fmt.Errorf("%s %q is not <key>/<date>/<region>/<service>/aws4_request", qCredential, cred)
	}
	p.AccessKeyID, p.Date, p.Region, p.Service = scope[0], scope[1], scope[2], scope[3]
	date, err := one(qDate)
	if err != nil {
		return nil, err
	}
	if p.Time, err = time.Parse(amzDateLayout, date); err != nil {
		return nil, fmt.Errorf("%s %q: %w", qDate, date, err)
	}
	if p.Time.Format("20060102") != p.Date {
		return nil, fmt.Errorf("%s %q does not match the credential date %q", qDate, date, p.Date)
	}
	exp, err := one(qExpires)
	if err != nil {
		return nil, err
	}
	secs, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || secs < 1 || time.Duration(secs)*time.Second > maxPresignExpiry {
		return nil, fmt.Errorf("%s %q must be a number of seconds from 1 to 604800", qExpires, exp)
	}
	p.Expires = time.Duration(secs) * time.Second
	sh, err := one(qSignedHeaders)
	if err != nil {
		return nil, err
	}
	p.SignedHeaders = strings.Split(sh, ";")
	if !slices.Contains(p.SignedHeaders, "host") {
		return nil, fmt.Errorf("%s %q must include host", qSignedHeaders, sh)
	}
	for i, h := range p.SignedHeaders {
		if h == "" || h != strings.ToLower(h) || (i > 0 && p.SignedHeaders[i-1] >= h) {
			return nil, fmt.Errorf("%s %q must be lower-case, sorted and unique", qSignedHeaders, sh)
		}
	}
	if p.Signature, err = one(qSignature); err != nil {
		return nil, err
	}
	if len(p.Signature) != 64 {
		return nil, fmt.Errorf("%s must be 64 hex digits", qSignature)
	}
	if _, err := hex.DecodeString(p.Signature); err != nil {
		return nil, fmt.Errorf("%s: %w", qSignature, err)
	}
	if v := q[qSecurityToken]; len(v) > 0 {
		p.SecurityToken = v[0]
	}
	return p, nil
}

// ComputeSignature computes the signature that r should carry, from the request as
// received: method, the path exactly as sent (S3 does not escape it twice),
// every query parameter but the signature, the signed headers and the
// payload hash (UNSIGNED-PAYLOAD unless the query names one).
func (p *Presigned) ComputeSignature(r *http.Request, secretKey string) string {
	rawPath, _, _ := strings.Cut(r.RequestURI, "?")
	if rawPath == "" || !strings.HasPrefix(rawPath, "/") {
		rawPath = r.URL.EscapedPath()
	}
	payload := unsignedPayload
	if v := p.Query.Get(qContentSHA256); v != "" {
		payload = v
	}
	canonical := strings.Join([]string{
		r.Method,
		rawPath,
		canonicalQuery(p.Query),
		canonicalHeaders(r, p.SignedHeaders),
		strings.Join(p.SignedHeaders, ";"),
		payload,
	}, "\n")
	scope := strings.Join([]string{p.Date, p.Region, p.Service, "aws4_request"}, "/")
	sum := sha256.Sum256([]byte(canonical))
	stringToSign := strings.Join([]string{algorithm, p.Time.Format(amzDateLayout), scope, hex.EncodeToString(sum[:])}, "\n")
	key := hmacSHA256([]byte("AWS4"+secretKey), p.Date)
	key = hmacSHA256(key, p.Region)
	key = hmacSHA256(key, p.Service)
	key = hmacSHA256(key, "aws4_request")
	return hex.EncodeToString(hmacSHA256(key, stringToSign))
}

// canonicalQuery encodes every parameter except the signature, sorted by key
// and then value, with SigV4's escaping.
func canonicalQuery(q url.Values) string {
	var pairs []string
	for k, vs := range q {
		if k == qSignature {
			continue
		}
		for _, v := range vs {
			pairs = append(pairs, uriEncode(k)+"="+uriEncode(v))
		}
	}
	slices.Sort(pairs)
	return strings.Join(pairs, "&")
}

// canonicalHeaders lists each signed header as name:value\n, where host comes
// from the request line and other values are trimmed, inner runs of spaces
// collapsed, and repeats joined with commas.
func canonicalHeaders(r *http.Request, names []string) string {
	var b strings.Builder
	for _, name := range names {
		var value string
		switch name {
		case "host":
			value = r.Host
		case "content-length":
			value = strconv.FormatInt(r.ContentLength, 10)
		default:
			vals := r.Header.Values(name)
			for i, v := range vals {
				vals[i] = strings.Join(strings.Fields(v), " ")
			}
			value = strings.Join(vals, ",")
		}
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(value)
		b.WriteByte('\n')
	}
	return b.String()
}

// uriEncode escapes all but SigV4's unreserved characters, as %XX in upper case.
func uriEncode(s string) string {
	const hexdigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexdigits[c>>4])
		b.WriteByte(hexdigits[c&15])
	}
	return b.String()
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}
