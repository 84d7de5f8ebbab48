// Package ipam hands out VPC addresses to pods from the node's ENIs: secondary
// IPv4 addresses or /28 prefixes, kept warm ahead of demand, recorded in a
// crash-safe checkpoint, and reconciled against the live sandboxes and EC2.
//
// A Pool learns its ENIs from IMDS and cross-checks them with EC2 (EC2 wins),
// serves Allocate and Release from memory, and makes every EC2 change from
// one reconcile loop in Run: growing ahead of the warm targets, releasing
// excess slowly, sweeping leaked ENIs tagged with this instance's id, and
// releasing the addresses of sandboxes the runtime no longer runs. The
// primary ENI (device 0) serves pods from its secondary addresses and routes
// through the main table; an ENI at device index N uses route table N+1.
//
// Every change of allocations rewrites the checkpoint (temporary file, fsync,
// rename, fsync of the directory). Its schema, version 1, is JSON:
//
//	{
//	  "version": 1,                     // checkpointVersion; bump on any change below
//	  "allocations": [                  // one per Key, ordered by device then address
//	    {
//	      "containerID": "<sandbox id>",  // Key.ContainerID
//	      "ifName":      "eth0",          // Key.IfName
//	      "addr":        "10.0.1.23",     // the pod's IPv4 address
//	      "eni":         "eni-…",         // the ENI holding addr when written
//	      "namespace", "name", "uid", "netns": "…",  // PodMeta, omitted when empty
//	      "created":     "<RFC 3339>"     // when Allocate gave it
//	    }
//	  ],
//	  "cooling": [                      // released addresses still in their cooldown
//	    {"addr": "10.0.1.24", "until": "<RFC 3339>"}
//	  ]
//	}
//
// The checkpoint records allocations, not which addresses the node holds: at
// start EC2's view is read first and the checkpoint is laid over it; an
// address EC2 no longer assigns drops its allocation with a log line. A checkpoint
// that does not decode is renamed to <path>.corrupt-<time>, reported as
// IPAMCheckpointCorrupt, and the pool rebuilds from the runtime and EC2.
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
