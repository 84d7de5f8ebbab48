// Package v1 is the autonode.dev/v1 provisioning API: NodePool (what nodes
// may be made and how they are disrupted), NodeClaim (one node being made or
// running) and NodeClass (the EC2 side: subnets, security groups, AMIs, role,
// tags, disks). The shapes follow Karpenter's v1 NodePool, NodeClaim and
// EC2NodeClass where they fit, under autonode's own group.
//
// The CRDs in deploy/crds and zz_generated.deepcopy.go are generated from
// these types and their markers by controller-gen v0.23.0, pinned by the
// tools module hack/controller-gen; `make generate` runs the go:generate
// lines below. CEL rules (x-kubernetes-validations) reject what the schema
// alone cannot: requirement operators with the wrong values, budgets with a
// schedule but no duration, expireAfter beyond 21 days.
//
// +groupName=autonode.dev
// +kubebuilder:object:generate=true
package v1

//go:generate go run -modfile=../../../hack/controller-gen/go.mod sigs.k8s.io/controller-tools/cmd/controller-gen object paths=./...
//go:generate go run -modfile=../../../hack/controller-gen/go.mod sigs.k8s.io/controller-tools/cmd/controller-gen crd paths=./... output:crd:dir=../../../deploy/crds

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of the provisioning API.
var GroupVersion = schema.GroupVersion{Group: "autonode.dev", Version: "v1"}

// AddToScheme registers NodePool, NodeClaim and NodeClass (and their lists)
// with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&NodePool{}, &NodePoolList{},
		&NodeClaim{}, &NodeClaimList{},
		&NodeClass{}, &NodeClassList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
