package vpc

import (
	"maps"
	"net/netip"
	"slices"
	"time"
)

// Zone is an availability zone: its name (us-west-2a) and its account-independent id (usw2-az1).
type Zone struct {
	Name string
	ID   string
}

// VPC is the one VPC of the model.
type VPC struct {
	ID   string
	CIDR netip.Prefix
}

// Subnet is a subnet in one zone of the VPC.
type Subnet struct {
	ID    string
	VPCID string
	Zone  Zone
	CIDR  netip.Prefix
	Tags  map[string]string
	// AvailableIPs counts the addresses still free, as EC2's availableIpAddressCount does.
	AvailableIPs int
}

// SecurityGroup is a VPC security group; the model only names them.
type SecurityGroup struct {
	ID          string
	Name        string
	Description string
	VPCID       string
	Tags        map[string]string
}

// InstanceState is an EC2 instance state name.
type InstanceState string

// The instance states EC2 reports.
const (
	StatePending      InstanceState = "pending"
	StateRunning      InstanceState = "running"
	StateShuttingDown InstanceState = "shutting-down"
	StateTerminated   InstanceState = "terminated"
	StateStopping     InstanceState = "stopping"
	StateStopped      InstanceState = "stopped"
)

// Code is the numeric state code EC2 sends beside the name.
func (s InstanceState) Code() int32 {
	switch s {
	case StatePending:
		return 0
	case StateRunning:
		return 16
	case StateShuttingDown:
		return 32
	case StateTerminated:
		return 48
	case StateStopping:
		return 64
	case StateStopped:
		return 80
	}
	return -1
}

// Instance is an EC2 instance.
type Instance struct {
	ID             string
	Type           string
	Zone           Zone
	SubnetID       string
	VPCID          string
	ImageID        string
	State          InstanceState
	LaunchTime     time.Time
	PrivateIP      netip.Addr
	PrivateDNSName string // ip-10-0-1-5.us-west-2.compute.internal
	Tags           map[string]string
	// Spot is true for spot instances (EC2's instanceLifecycle "spot").
	Spot bool
	// StateChanged is when State last changed.
	StateChanged time.Time
	// ENIIDs lists the attached ENIs by device index (then network card
	// index); ENIIDs[0] is the primary one.
	ENIIDs []string
}

// ENIStatus is a network interface's status.
type ENIStatus string

// The ENI statuses the model uses.
const (
	ENIAvailable ENIStatus = "available"
	ENIInUse     ENIStatus = "in-use"
)

// Attachment binds an ENI to an instance at a device index of a network card.
type Attachment struct {
	ID                  string
	InstanceID          string
	DeviceIndex         int
	NetworkCardIndex    int
	AttachTime          time.Time
	DeleteOnTermination bool
}

// PrivateIP is one private IPv4 address of an ENI.
type PrivateIP struct {
	Address netip.Addr
	Primary bool
}

// ENI is an elastic network interface.
type ENI struct {
	ID               string
	MAC              string
	SubnetID         string
	VPCID            string
	Zone             Zone
	Description      string
	Status           ENIStatus
	Attachment       *Attachment // nil when detached
	PrivateIPs       []PrivateIP // the primary address first
	IPv4Prefixes     []netip.Prefix
	SecurityGroupIDs []string
	Tags             map[string]string
}

// Slots counts the ENI's IPv4 slots as EC2 does for prefix delegation on
// Nitro: each address, the primary included, is one slot and so is each /28.
func (e ENI) Slots() int { return len(e.PrivateIPs) + len(e.IPv4Prefixes) }

// PrimaryIP returns the ENI's primary private address, or the zero Addr if it has none.
func (e ENI) PrimaryIP() netip.Addr {
	for _, ip := range e.PrivateIPs {
		if ip.Primary {
			return ip.Address
		}
	}
	return netip.Addr{}
}

func (s Subnet) clone() Subnet {
	s.Tags = maps.Clone(s.Tags)
	return s
}

func (i Instance) clone() Instance {
	i.Tags = maps.Clone(i.Tags)
	i.ENIIDs = slices.Clone(i.ENIIDs)
	return i
}

func (e ENI) clone() ENI {
	if e.Attachment != nil {
		a := *e.Attachment
		e.Attachment = &a
	}
	e.PrivateIPs = slices.Clone(e.PrivateIPs)
	e.IPv4Prefixes = slices.Clone(e.IPv4Prefixes)
	e.SecurityGroupIDs = slices.Clone(e.SecurityGroupIDs)
	e.Tags = maps.Clone(e.Tags)
	return e
}
