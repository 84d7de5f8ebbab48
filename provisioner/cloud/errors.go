package cloud

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInstanceNotFound is returned by Get and Terminate once an instance is
// gone (unknown to EC2, or terminated).
var ErrInstanceNotFound = errors.New("instance not found")

// InsufficientCapacityError is returned by Launch when no candidate offering
// had capacity; Offerings lists the ones EC2 refused.
type InsufficientCapacityError struct {
	NodeClaim string
	Offerings []string // type/zone/capacity-type
}

func (e *InsufficientCapacityError) Error() string {
	return fmt.Sprintf("nodeclaim %s: no capacity in any candidate offering (%s)", e.NodeClaim, strings.Join(e.Offerings, ", "))
}

// IsInsufficientCapacity reports whether err is an InsufficientCapacityError.
func IsInsufficientCapacity(err error) bool {
	var e *InsufficientCapacityError
	return errors.As(err, &e)
}

// capacityErrorCodes are the CreateFleet error codes that mean "this pool
// has no room now": the offering is left out for a while.
var capacityErrorCodes = map[string]bool{
	"InsufficientInstanceCapacity":      true,
	"InsufficientCapacity":              true,
	"MaxSpotInstanceCountExceeded":      true,
	"UnfulfillableCapacity":             true,
	"Unsupported":                       true,
	"InsufficientFreeAddressesInSubnet": true,
	"SpotMaxPriceTooLow":                true,
}
