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
// 02:…), so tests can run twice and see the same names. Addresses come from
// the subnet's CIDR without duplicates, skipping the first four and the last
// address, which AWS reserves.
package vpc
