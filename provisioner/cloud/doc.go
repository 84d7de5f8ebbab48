// Package cloud is the provisioner's EC2 side, on aws-sdk-go-v2 alone: what
// can be launched (instance types with capacity, allocatable, labels and
// priced offerings), where and from what (a NodeClass resolved to subnets,
// security groups and an AMI per architecture), and the instances
// themselves.
//
// A Provider's life: New with the EC2 client and a price source; Refresh (or
// Run, which refreshes on a timer) loads instance types, on-demand prices and
// spot prices; ResolveNodeClass turns a NodeClass into ids; InstanceTypes
// lists the launchable types for a resolved class; Launch makes one instance
// for a NodeClaim through an instant CreateFleet over launch templates that
// carry the AMI, instance profile, security groups, block devices and
// Bottlerocket user data; Get, List and Terminate follow the instances it
// tagged as its own (autonode.dev/cluster, nodepool, nodeclaim).
//
// Launch asks for the cheapest candidates: the top MaxFleetTypes types by
// price, "lowest-price" for on-demand and "price-capacity-optimized" for
// spot. An offering that fails for lack of capacity is left out for
// UnavailableTTL, both from the next attempt of the same launch and from
// what InstanceTypes reports, so the scheduler stops planning on it.
//
// Allocatable comes from agent/nodeconfig, the one implementation the node
// agent itself uses, so the provisioner plans with what the kubelet will
// report.
package cloud
