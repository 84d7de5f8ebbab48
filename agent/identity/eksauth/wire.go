package eksauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/smithy-go"
)

// requestIDHeader carries the id AWS support asks for.
const requestIDHeader = "X-Amzn-Requestid"

// errorTypeHeader names the error in REST-JSON answers; it wins over the body.
const errorTypeHeader = "X-Amzn-Errortype"

// Error codes of AssumeRoleForPodIdentity, as the service model names them.
const (
	CodeAccessDenied       = "AccessDeniedException"
	CodeExpiredToken       = "ExpiredTokenException"
	CodeInternalServer     = "InternalServerException"
	CodeInvalidParameter   = "InvalidParameterException"
	CodeInvalidRequest     = "InvalidRequestException"
	CodeInvalidToken       = "InvalidTokenException"
	CodeResourceNotFound   = "ResourceNotFoundException"
	CodeServiceUnavailable = "ServiceUnavailableException"
	CodeThrottling         = "ThrottlingException"
)

// Output is the answer of AssumeRoleForPodIdentity, field for field.
type Output struct {
	Subject                Subject                `json:"subject"`
	Audience               string                 `json:"audience"`
	PodIdentityAssociation PodIdentityAssociation `json:"podIdentityAssociation"`
	AssumedRoleUser        AssumedRoleUser        `json:"assumedRoleUser"`
	Credentials            Credentials            `json:"credentials"`
	// RequestID is the x-amzn-RequestId of the answer; it is not in the body.
	RequestID string `json:"-"`
}

// Subject is the service account the token belongs to.
type Subject struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
}

// PodIdentityAssociation identifies the association that granted the role.
type PodIdentityAssociation struct {
	AssociationArn string `json:"associationArn"`
	AssociationID  string `json:"associationId"`
}

// AssumedRoleUser is the role session the credentials belong to.
type AssumedRoleUser struct {
	Arn          string `json:"arn"`
	AssumeRoleID string `json:"assumeRoleId"`
}

// Credentials are the temporary credentials of the role session.
type Credentials struct {
	SessionToken    string       `json:"sessionToken"`
	SecretAccessKey string       `json:"secretAccessKey"`
	AccessKeyID     string       `json:"accessKeyId"`
	Expiration      EpochSeconds `json:"expiration"`
}

// EpochSeconds is a timestamp that travels as a JSON number of seconds since
// the Unix epoch, fractions allowed: Smithy's default for REST-JSON.
type EpochSeconds struct{ time.Time }

// UnmarshalJSON implements json.Unmarshaler.
func (t *EpochSeconds) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("epoch seconds: %w", err)
	}
	f, err := n.Float64()
	// Anything past year 9999 is no credential expiry.
	if err != nil || math.IsNaN(f) || f < 0 || f > 253402300799 {
		return fmt.Errorf("epoch seconds %s out of range", n)
	}
	sec, frac := math.Modf(f)
	t.Time = time.Unix(int64(sec), int64(math.Round(frac*1e3))*int64(time.Millisecond)).UTC()
	return nil
}

// MarshalJSON implements json.Marshaler.
func (t EpochSeconds) MarshalJSON() ([]byte, error) {
	if t.UnixMilli()%1000 == 0 {
		return []byte(fmt.Sprint(t.Unix())), nil
	}
	return []byte(fmt.Sprintf("%.3f", float64(t.UnixMilli())/1e3)), nil
}

// AccountID is the account of the assumed role, from its ARN.
func (o *Output) AccountID() string {
	a, err := arn.Parse(o.AssumedRoleUser.Arn)
	if err != nil {
		return ""
	}
	return a.AccountID
}

// ParseResponse decodes a successful answer and checks that it carries
// complete credentials and a role ARN.
func ParseResponse(body []byte) (*Output, error) {
	var out Output
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("decoding the %s answer: %w", Operation, err)
	}
	c := out.Credentials
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"credentials.accessKeyId", c.AccessKeyID},
		{"credentials.secretAccessKey", c.SecretAccessKey},
		{"credentials.sessionToken", c.SessionToken},
		{"assumedRoleUser.arn", out.AssumedRoleUser.Arn},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if c.Expiration.IsZero() {
		missing = append(missing, "credentials.expiration")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s answer lacks %s", Operation, strings.Join(missing, ", "))
	}
	if _, err := arn.Parse(out.AssumedRoleUser.Arn); err != nil {
		return nil, fmt.Errorf("%s answer: assumed role ARN: %w", Operation, err)
	}
	return &out, nil
}

// APIError is an error answer of EKS Auth. It satisfies smithy.APIError, and
// the interfaces the SDK's retryer inspects (ErrorCode, HTTPStatusCode), so
// that retry.Standard classifies it as it would a generated client's error.
type APIError struct {
	Code       string
	Message    string
	StatusCode int
	RequestID  string
}

var _ smithy.APIError = (*APIError)(nil)

func (e *APIError) Error() string {
	return fmt.Sprintf("%s: %s (status %d, request id %s): %s", Operation, e.Code, e.StatusCode, e.RequestID, e.Message)
}

// ErrorCode returns the service's error code, e.g. ThrottlingException.
func (e *APIError) ErrorCode() string { return e.Code }

// ErrorMessage returns the service's message.
func (e *APIError) ErrorMessage() string { return e.Message }

// ErrorFault says whether the caller or the service is at fault.
func (e *APIError) ErrorFault() smithy.ErrorFault {
	switch {
	case e.StatusCode >= 500, e.Code == CodeInternalServer, e.Code == CodeServiceUnavailable:
		return smithy.FaultServer
	case e.StatusCode >= 400:
		return smithy.FaultClient
	}
	return smithy.FaultUnknown
}

// HTTPStatusCode returns the status of the answer.
func (e *APIError) HTTPStatusCode() int { return e.StatusCode }

// ParseError decodes an error answer the REST-JSON way: the code comes from
// the X-Amzn-ErrorType header, else from the body's __type (or code), with
// any namespace ("aws.eksauth#") or URI suffix (":http://…") removed.
func ParseError(status int, header http.Header, body []byte) *APIError {
	e := &APIError{StatusCode: status, RequestID: header.Get(requestIDHeader)}
	var doc struct {
		Type     string `json:"__type"`
		Code     string `json:"code"`
		CodeCap  string `json:"Code"`
		Message  string `json:"message"`
		MsgCap   string `json:"Message"`
		ErrorMsg string `json:"errorMessage"`
	}
	// A body that is no JSON still leaves the header's code and the status.
	_ = json.Unmarshal(body, &doc)
	e.Code = sanitizeCode(header.Get(errorTypeHeader))
	for _, c := range []string{doc.Type, doc.Code, doc.CodeCap} {
		if e.Code == "" {
			e.Code = sanitizeCode(c)
		}
	}
	if e.Code == "" {
		e.Code = http.StatusText(status)
		if e.Code == "" {
			e.Code = "UnknownError"
		}
		e.Code = strings.ReplaceAll(e.Code, " ", "")
	}
	for _, m := range []string{doc.Message, doc.MsgCap, doc.ErrorMsg} {
		if e.Message == "" {
			e.Message = m
		}
	}
	return e
}

// sanitizeCode strips what REST-JSON allows around an error code.
func sanitizeCode(c string) string {
	if i := strings.IndexByte(c, ':'); i >= 0 {
		c = c[:i]
	}
	if i := strings.LastIndexByte(c, '#'); i >= 0 {
		c = c[i+1:]
	}
	return strings.TrimSpace(c)
}

// Unrecoverable reports whether err says the token or its association will
// not work however often it is retried, so cached credentials for it must go:
// AccessDeniedException, InvalidTokenException, ExpiredTokenException and
// ResourceNotFoundException, as the anchor treats them.
func Unrecoverable(err error) bool {
	var e *APIError
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case CodeAccessDenied, CodeInvalidToken, CodeExpiredToken, CodeResourceNotFound:
		return true
	}
	return false
}
