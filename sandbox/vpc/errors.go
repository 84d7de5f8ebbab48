package vpc

import (
	"errors"
	"fmt"
)

// Kind names a kind of model object in errors.
type Kind string

// The object kinds the model holds.
const (
	KindInstance      Kind = "instance"
	KindSubnet        Kind = "subnet"
	KindENI           Kind = "network interface"
	KindSecurityGroup Kind = "security group"
	KindAttachment    Kind = "attachment"
)

// ErrNotFound is the class of NotFoundError, for errors.Is.
var ErrNotFound = errors.New("not found")

// The classes of the model's other errors, for errors.Is. EC2 maps each to
// its own error code.
var (
	// ErrNoFreeAddresses means a subnet has no address (or aligned prefix) left.
	ErrNoFreeAddresses = errors.New("no free addresses in subnet")
	// ErrNoFreePrefix means a subnet has no wholly free, /28-aligned block,
	// though it may still have single addresses. It wraps ErrNoFreeAddresses.
	ErrNoFreePrefix = fmt.Errorf("no free aligned /28: %w", ErrNoFreeAddresses)
	// ErrAttachmentLimit means an instance already has as many ENIs on a
	// network card as its type allows.
	ErrAttachmentLimit = errors.New("network interface limit of the instance type reached")
	// ErrAddressLimit means an ENI would hold more IPv4 slots (addresses
	// plus /28 prefixes) than its instance type allows.
	ErrAddressLimit = errors.New("ipv4 address limit per network interface reached")
	// ErrAddressInUse means a requested address or prefix is taken.
	ErrAddressInUse = errors.New("address already in use")
	// ErrInUse means an ENI or device index is taken by an attachment.
	ErrInUse = errors.New("in use")
	// ErrNotPermitted means the operation is never allowed on the object,
	// such as detaching an instance's primary ENI.
	ErrNotPermitted = errors.New("operation not permitted")
	// ErrInvalid means an argument is malformed or does not fit the object.
	ErrInvalid = errors.New("invalid argument")
)

// NotFoundError says which object is missing, so that EC2 can answer with the
// matching code (InvalidInstanceID.NotFound, InvalidSubnetID.NotFound, …).
type NotFoundError struct {
	Kind Kind
	ID   string
}

func (e *NotFoundError) Error() string { return fmt.Sprintf("%s %q not found", e.Kind, e.ID) }

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

func notFound(k Kind, id string) error { return &NotFoundError{Kind: k, ID: id} }
