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
)

// ErrNotFound is the class of NotFoundError, for errors.Is.
var ErrNotFound = errors.New("not found")

// ErrNoFreeAddresses means a subnet has no address (or aligned prefix) left.
var ErrNoFreeAddresses = errors.New("no free addresses in subnet")

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
