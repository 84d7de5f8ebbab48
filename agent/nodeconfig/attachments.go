package nodeconfig

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Attachment limits AWS documents for types whose DescribeInstanceTypes
// answer carries no EbsInfo.MaximumEbsAttachments: Nitro types share 28
// attachments among EBS volumes, ENIs and NVMe instance-store disks; Xen
// types allow 39 EBS volumes on Linux.
const (
	nitroSharedAttachments = 28
	xenEBSAttachments      = 39
)

// AttachmentInputs are the node facts the EBS volume limit depends on.
type AttachmentInputs struct {
	// ENIs is the most network interfaces this node will attach: the IPAM's
	// limit, not today's count, since the kubelet reads the volume limit
	// only when it registers the CSI driver.
	ENIs int
	// InstanceStoreDisks is the number of NVMe instance-store disks.
	InstanceStoreDisks int
}

// AttachmentLimit returns the CSI max_volumes_per_node: how many EBS volumes
// beside the root volume the node can take. With a dedicated EBS limit it is
// MaximumEbsAttachments less the root volume; with a shared one the ENIs and
// instance-store disks take slots too.
func AttachmentLimit(t types.InstanceTypeInfo, in AttachmentInputs) (int, error) {
	name := string(t.InstanceType)
	if in.ENIs < 0 || in.InstanceStoreDisks < 0 {
		return 0, fmt.Errorf("instance type %s: negative ENI (%d) or instance-store (%d) count", name, in.ENIs, in.InstanceStoreDisks)
	}
	const root = 1
	nitro := t.Hypervisor == types.InstanceTypeHypervisorNitro || (t.BareMetal != nil && *t.BareMetal)
	limitType := types.AttachmentLimitTypeShared
	max := nitroSharedAttachments
	if e := t.EbsInfo; e != nil && e.MaximumEbsAttachments != nil {
		max = int(*e.MaximumEbsAttachments)
		if e.AttachmentLimitType != "" {
			limitType = e.AttachmentLimitType
		}
	} else if !nitro {
		// Xen: EBS volumes have their own limit; ENIs do not count.
		limitType, max = types.AttachmentLimitTypeDedicated, xenEBSAttachments
	}
	n := max - root
	if limitType == types.AttachmentLimitTypeShared {
		n -= in.ENIs + in.InstanceStoreDisks
	}
	if n < 0 {
		return 0, fmt.Errorf("instance type %s: %d %s attachments leave no room for EBS volumes beside the root volume, %d ENIs and %d instance-store disks",
			name, max, limitType, in.ENIs, in.InstanceStoreDisks)
	}
	return n, nil
}
