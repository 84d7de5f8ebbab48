package v1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeClass is the EC2 side of a node: where it runs (subnets, security
// groups), what it boots (AMI), who it is (role or instance profile), and its
// tags and disks. NodePools point at one through nodeClassRef.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ncl
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Role",type=string,JSONPath=`.spec.role`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeClass struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   NodeClassSpec   `json:"spec"`
	Status NodeClassStatus `json:"status,omitempty"`
}

// NodeClassSpec is what a NodeClass asks for.
//
// +kubebuilder:validation:XValidation:rule="has(self.role) != has(self.instanceProfile)",message="set exactly one of role and instanceProfile"
type NodeClassSpec struct {
	// SubnetSelectorTerms pick the subnets nodes launch into; a subnet is
	// picked when any term matches it.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=30
	SubnetSelectorTerms []SelectorTerm `json:"subnetSelectorTerms"`
	// SecurityGroupSelectorTerms pick the security groups of the nodes.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=30
	SecurityGroupSelectorTerms []SecurityGroupSelectorTerm `json:"securityGroupSelectorTerms"`
	// AMISelectorTerms pick the AMIs, one per architecture (the newest
	// match wins). An alias term stands alone.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=30
	// +kubebuilder:validation:XValidation:rule="!self.exists(t, has(t.alias)) || size(self) == 1",message="an alias term must be the only AMI selector term"
	AMISelectorTerms []AMISelectorTerm `json:"amiSelectorTerms"`
	// Role is the IAM role the nodes run as; the provisioner makes an
	// instance profile for it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Role string `json:"role,omitempty"`
	// InstanceProfile is an existing instance profile to use instead.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +optional
	InstanceProfile string `json:"instanceProfile,omitempty"`
	// Tags go on the instances, volumes and launch templates, after the
	// provisioner's own (which they may not replace).
	// +kubebuilder:validation:XValidation:rule="self.all(k, !(k in ['autonode.dev/cluster', 'autonode.dev/nodepool', 'autonode.dev/nodeclaim']))",message="autonode.dev/cluster, autonode.dev/nodepool and autonode.dev/nodeclaim are set by the provisioner"
	// +kubebuilder:validation:MaxProperties=40
	// +optional
	Tags map[string]string `json:"tags,omitempty"`
	// BlockDeviceMappings are the EBS volumes of the nodes. Default is the
	// AMI's own: a root volume and a 20Gi data volume on /dev/xvdb.
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:XValidation:rule="self.filter(b, has(b.rootVolume) && b.rootVolume).size() <= 1",message="at most one block device may be the root volume"
	// +optional
	BlockDeviceMappings []BlockDeviceMapping `json:"blockDeviceMappings,omitempty"`
	// InstanceStorePolicy says what the agent does with local NVMe disks:
	// RAID0 joins them into one array for the kubelet's and containerd's
	// ephemeral storage; None (the default) leaves them alone.
	// +kubebuilder:validation:Enum=RAID0;None
	// +optional
	InstanceStorePolicy InstanceStorePolicy `json:"instanceStorePolicy,omitempty"`
}

// InstanceStorePolicy is what happens to instance-store disks.
type InstanceStorePolicy string

// The instance-store policies.
const (
	InstanceStoreRAID0 = InstanceStorePolicy("RAID0")
	InstanceStoreNone  = InstanceStorePolicy("None")
)

// SelectorTerm selects subnets by id or by tags (every tag must match; the
// value "*" matches any).
//
// +kubebuilder:validation:XValidation:rule="has(self.tags) != has(self.id)",message="a term selects by id or by tags, not both"
type SelectorTerm struct {
	// Tags a subnet must all carry.
	// +kubebuilder:validation:MinProperties=1
	// +kubebuilder:validation:MaxProperties=20
	// +optional
	Tags map[string]string `json:"tags,omitempty"`
	// ID of one subnet.
	// +kubebuilder:validation:Pattern=`^subnet-[0-9a-z]+$`
	// +optional
	ID string `json:"id,omitempty"`
}

// SecurityGroupSelectorTerm selects security groups by id, name or tags.
//
// +kubebuilder:validation:XValidation:rule="[has(self.tags), has(self.id), has(self.name)].filter(x, x).size() == 1",message="a term selects by exactly one of id, name and tags"
type SecurityGroupSelectorTerm struct {
	// Tags a group must all carry.
	// +kubebuilder:validation:MinProperties=1
	// +kubebuilder:validation:MaxProperties=20
	// +optional
	Tags map[string]string `json:"tags,omitempty"`
	// ID of one group.
	// +kubebuilder:validation:Pattern=`^sg-[0-9a-z]+$`
	// +optional
	ID string `json:"id,omitempty"`
	// Name of one group.
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Name string `json:"name,omitempty"`
}

// AMISelectorTerm selects AMIs. Alias "autonode@latest" is the newest
// release of the autonode Bottlerocket variant for each architecture, and
// "autonode@v1.2.3" a given release; otherwise a term selects by id, or by
// name and/or tags, optionally narrowed by owner.
//
// +kubebuilder:validation:XValidation:rule="!has(self.alias) || !(has(self.id) || has(self.name) || has(self.tags) || has(self.owner))",message="alias stands alone"
// +kubebuilder:validation:XValidation:rule="!has(self.id) || !(has(self.name) || has(self.tags) || has(self.owner))",message="id stands alone"
// +kubebuilder:validation:XValidation:rule="has(self.alias) || has(self.id) || has(self.name) || has(self.tags)",message="a term needs alias, id, name or tags"
type AMISelectorTerm struct {
	// Alias is autonode@latest or autonode@v<version>.
	// +kubebuilder:validation:Pattern=`^autonode@(latest|v[0-9]+(\.[0-9]+){0,2})$`
	// +kubebuilder:validation:MaxLength=30
	// +optional
	Alias string `json:"alias,omitempty"`
	// ID of one AMI.
	// +kubebuilder:validation:Pattern=`^ami-[0-9a-z]+$`
	// +optional
	ID string `json:"id,omitempty"`
	// Name of the AMI; * and ? are wildcards.
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Name string `json:"name,omitempty"`
	// Owner account id, or self or amazon.
	// +kubebuilder:validation:MaxLength=20
	// +optional
	Owner string `json:"owner,omitempty"`
	// Tags an AMI must all carry.
	// +kubebuilder:validation:MinProperties=1
	// +kubebuilder:validation:MaxProperties=20
	// +optional
	Tags map[string]string `json:"tags,omitempty"`
}

// BlockDeviceMapping is one EBS volume of a node.
type BlockDeviceMapping struct {
	// DeviceName is where the volume appears (/dev/xvda).
	// +kubebuilder:validation:Pattern=`^/dev/[a-z0-9]+$`
	DeviceName string `json:"deviceName"`
	// EBS describes the volume.
	EBS BlockDevice `json:"ebs"`
	// RootVolume marks the volume the OS boots from.
	// +optional
	RootVolume bool `json:"rootVolume,omitempty"`
}

// BlockDevice is an EBS volume's settings.
type BlockDevice struct {
	// VolumeSize, such as 20Gi; 1Gi to 64Ti.
	// +optional
	VolumeSize *resource.Quantity `json:"volumeSize,omitempty"`
	// VolumeType is the EBS volume type. Default is gp3.
	// +kubebuilder:validation:Enum=standard;io1;io2;gp2;sc1;st1;gp3
	// +optional
	VolumeType string `json:"volumeType,omitempty"`
	// IOPS for io1, io2 and gp3.
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=256000
	// +optional
	IOPS *int32 `json:"iops,omitempty"`
	// Throughput in MiB/s, for gp3.
	// +kubebuilder:validation:Minimum=125
	// +kubebuilder:validation:Maximum=2000
	// +optional
	Throughput *int32 `json:"throughput,omitempty"`
	// Encrypted volumes use KMSKeyID, or the account's default key.
	// +optional
	Encrypted *bool `json:"encrypted,omitempty"`
	// KMSKeyID is the ARN of the key for an encrypted volume.
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	KMSKeyID string `json:"kmsKeyID,omitempty"`
	// DeleteOnTermination removes the volume with the instance. Default true.
	// +optional
	DeleteOnTermination *bool `json:"deleteOnTermination,omitempty"`
	// SnapshotID to create the volume from.
	// +kubebuilder:validation:Pattern=`^snap-[0-9a-z]+$`
	// +optional
	SnapshotID string `json:"snapshotID,omitempty"`
}

// NodeClassStatus is what the NodeClass resolved to.
type NodeClassStatus struct {
	// Subnets the selector terms matched.
	// +optional
	Subnets []Subnet `json:"subnets,omitempty"`
	// SecurityGroups the selector terms matched.
	// +optional
	SecurityGroups []SecurityGroup `json:"securityGroups,omitempty"`
	// AMIs the selector terms resolved to, one per architecture.
	// +optional
	AMIs []AMI `json:"amis,omitempty"`
	// InstanceProfile the nodes launch with.
	// +optional
	InstanceProfile string `json:"instanceProfile,omitempty"`
	// Conditions: Ready once subnets, security groups and AMIs resolved.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Subnet is a resolved subnet.
type Subnet struct {
	ID     string `json:"id"`
	Zone   string `json:"zone"`
	ZoneID string `json:"zoneID,omitempty"`
}

// SecurityGroup is a resolved security group.
type SecurityGroup struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// AMI is a resolved image and the architecture it serves.
type AMI struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Architecture as Kubernetes names it: amd64 or arm64.
	Architecture string `json:"architecture"`
}

// NodeClassList is a list of NodeClasses.
//
// +kubebuilder:object:root=true
type NodeClassList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeClass `json:"items"`
}
