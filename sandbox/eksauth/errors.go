package eksauth

import (
	"errors"
	"fmt"
	"net/http"
)

// Error codes the emulator answers with: those of AssumeRoleForPodIdentity's
// model, and the ones AWS's front door uses for signature failures.
const (
	CodeAccessDenied         = "AccessDeniedException"
	CodeExpiredToken         = "ExpiredTokenException"
	CodeInternalServer       = "InternalServerException"
	CodeInvalidParameter     = "InvalidParameterException"
	CodeInvalidRequest       = "InvalidRequestException"
	CodeInvalidToken         = "InvalidTokenException"
	CodeResourceNotFound     = "ResourceNotFoundException"
	CodeThrottling           = "ThrottlingException"
	CodeInvalidSignature     = "InvalidSignatureException"
	CodeUnrecognizedClient   = "UnrecognizedClientException"
	CodeMissingAuthToken     = "MissingAuthenticationTokenException"
	codeUnknownOperation     = "UnknownOperationException"
	codeIncompleteSignature  = "IncompleteSignatureException"
	signatureExpiredMessage  = "Signature expired"
	signatureMismatchMessage = "The request signature we calculated does not match the signature you provided."
)

// Error is an API error: the code clients branch on, a message, and the HTTP
// status it travels with.
type Error struct {
	Code    string
	Message string
	Status  int
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(code string, status int, format string, args ...any) *Error {
	return &Error{Code: code, Status: status, Message: fmt.Sprintf(format, args...)}
}

// apiError turns any error into the Error sent to the client; anything
// unknown is an InternalServerException.
func apiError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return errorf(CodeInternalServer, http.StatusInternalServerError, "An internal error occurred")
}
