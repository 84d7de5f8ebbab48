package ec2

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/autonode/autonode/sandbox/vpc"
)

// Error codes the emulator answers with.
const (
	CodeInvalidAction            = "InvalidAction"
	CodeInvalidParameterValue    = "InvalidParameterValue"
	CodeInvalidPaginationToken   = "InvalidPaginationToken"
	CodeInvalidInstanceType      = "InvalidInstanceType"
	CodeMissingAction            = "MissingAction"
	CodeAuthFailure              = "AuthFailure"
	CodeRequestLimitExceeded     = "RequestLimitExceeded"
	CodeUnavailable              = "Unavailable"
	CodeInternalError            = "InternalError"
	CodeInstanceNotFound         = "InvalidInstanceID.NotFound"
	CodeSubnetNotFound           = "InvalidSubnetID.NotFound"
	CodeNetworkInterfaceNotFound = "InvalidNetworkInterfaceID.NotFound"
	CodeSecurityGroupNotFound    = "InvalidGroup.NotFound"
	CodeInsufficientAddresses    = "InsufficientFreeAddressesInSubnet"

	CodeMissingParameter              = "MissingParameter"
	CodeInvalidParameterCombination   = "InvalidParameterCombination"
	CodeAttachmentNotFound            = "InvalidAttachmentID.NotFound"
	CodeAttachmentLimitExceeded       = "AttachmentLimitExceeded"
	CodePrivateIPAddressLimitExceeded = "PrivateIpAddressLimitExceeded"
	CodeInsufficientCidrBlocks        = "InsufficientCidrBlocks"
	CodeIPAddressInUse                = "InvalidIPAddress.InUse"
	CodeOperationNotPermitted         = "OperationNotPermitted"
)

// Error is an EC2 API error: the code clients branch on, a message, and the
// HTTP status it travels with. Handlers return it for client errors.
type Error struct {
	Code    string
	Message string
	Status  int
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an Error with the status EC2 uses for code: 503 for
// throttling and unavailability, 500 for internal errors, 401 for
// authentication failures, and 400 for everything else.
func Errorf(code, format string, args ...any) *Error {
	status := http.StatusBadRequest
	switch code {
	case CodeRequestLimitExceeded, CodeUnavailable:
		status = http.StatusServiceUnavailable
	case CodeInternalError:
		status = http.StatusInternalServerError
	case CodeAuthFailure:
		status = http.StatusUnauthorized
	}
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Status: status}
}

// apiError turns any handler error into the Error sent to the client; vpc
// errors get their EC2 codes, anything unknown is an InternalError.
func apiError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var nf *vpc.NotFoundError
	if errors.As(err, &nf) {
		switch nf.Kind {
		case vpc.KindInstance:
			return Errorf(CodeInstanceNotFound, "The instance ID '%s' does not exist", nf.ID)
		case vpc.KindSubnet:
			return Errorf(CodeSubnetNotFound, "The subnet ID '%s' does not exist", nf.ID)
		case vpc.KindENI:
			return Errorf(CodeNetworkInterfaceNotFound, "The networkInterface ID '%s' does not exist", nf.ID)
		case vpc.KindSecurityGroup:
			return Errorf(CodeSecurityGroupNotFound, "The security group '%s' does not exist", nf.ID)
		case vpc.KindAttachment:
			return Errorf(CodeAttachmentNotFound, "The attachment ID '%s' does not exist", nf.ID)
		}
	}
	// Order matters: ErrNoFreePrefix wraps ErrNoFreeAddresses.
	for _, c := range []struct {
		class error
		code  string
	}{
		{vpc.ErrNoFreePrefix, CodeInsufficientCidrBlocks},
		{vpc.ErrNoFreeAddresses, CodeInsufficientAddresses},
		{vpc.ErrAttachmentLimit, CodeAttachmentLimitExceeded},
		{vpc.ErrAddressLimit, CodePrivateIPAddressLimitExceeded},
		{vpc.ErrAddressInUse, CodeIPAddressInUse},
		{vpc.ErrNotPermitted, CodeOperationNotPermitted},
		{vpc.ErrInUse, CodeInvalidParameterValue}, // EC2 says "… is currently in use" under this code
		{vpc.ErrInvalid, CodeInvalidParameterValue},
	} {
		if errors.Is(err, c.class) {
			return Errorf(c.code, "%v", err)
		}
	}
	return Errorf(CodeInternalError, "An internal error has occurred")
}
