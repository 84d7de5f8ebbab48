// Package ipam hands out VPC addresses to pods from the node's ENIs: secondary
// IPv4 addresses or /28 prefixes, kept warm ahead of demand, recorded in a
// crash-safe checkpoint, and reconciled against the live sandboxes and EC2.
package ipam

import "net/netip"

// Key identifies one pod attachment, as CNI does: the container (sandbox) id
// and the interface name inside it.
type Key struct {
	ContainerID string
	IfName      string
}

// PodMeta describes the pod behind an attachment, for the checkpoint,
// reconciliation and logs.
type PodMeta struct {
	Namespace string
	Name      string
	UID       string
	Netns     string
}

// Allocation is the address given to one attachment and where it lives.
type Allocation struct {
	Key  Key
	Pod  PodMeta
	Addr netip.Addr
	// ENI is the id of the ENI holding Addr, DeviceIndex its device index
	// (0 is the primary ENI) and MAC its hardware address.
	ENI         string
	DeviceIndex int
	MAC         string
	// RouteTable is the policy-routing table for traffic from Addr: 0 (the
	// main table) for the primary ENI, else a table of that ENI's own.
	RouteTable int
	// SubnetCIDR is the ENI's subnet; its first host address is the gateway.
	SubnetCIDR netip.Prefix
}
