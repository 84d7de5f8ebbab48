// Package vpc is the in-memory VPC that the sandbox's IMDS and EC2 emulators
// share: one region, one account, one VPC with a subnet per availability zone,
// and the instances and ENIs launched into it.
//
// Both emulators read the same Model on every request, so a change made
// through one (an EC2 action) is visible through the other (IMDS) at once.
// A single mutex guards the whole model; every getter returns a deep copy, so
// callers may keep and change what they get without touching the model.
//
// Ids are deterministic and shaped like AWS's (i-0…, eni-0…, subnet-0…, MACs
// 02:…), so tests can run twice and see the same names.
//
// Each subnet keeps a free-address bitmap. Addresses come from it without
// duplicates, skipping the first four and the last address, which AWS
// reserves; /28 prefixes must be /28-aligned and wholly free, so a
// fragmented subnet can have single addresses but no prefix. Unassigning an
// address or prefix, or deleting an ENI, returns its addresses to the map.
// Reserve and Fragment shape the map on purpose, for tests.
//
// ENIs go through EC2's lifecycle: CreateENI (available), AttachENI (in-use),
// ModifyENI, AssignAddresses and UnassignAddresses, DetachENI and DeleteENI.
// The model does not know instance types; callers pass a LimitsFunc that
// gives each type's ENI and per-ENI IPv4 limits, and the model enforces them
// under its lock. Failures wrap the class errors of errors.go (ErrNotFound,
// ErrNoFreePrefix, ErrAttachmentLimit, …) so that EC2 can pick its codes.
package vpc
