// Package deploy holds autonode's Kubernetes manifests: the ClusterRoles of
// the agent and the provisioner, the CRDs, the built-in NodePools, and (as
// they arrive) the provisioner's own manifests. They are embedded so that
// the sandbox and the tests apply exactly the files that ship.
package deploy

import (
	"embed"
	"io/fs"
)

//go:embed rbac/*.yaml crds/*.yaml nodepools/*.yaml
var manifests embed.FS

// CRDs returns the CustomResourceDefinitions, one file per resource, as
// controller-gen writes them.
func CRDs() fs.FS {
	sub, err := fs.Sub(manifests, "crds")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// NodePools returns the built-in NodePools (system, general-purpose) and the
// default NodeClass they launch with.
func NodePools() fs.FS {
	sub, err := fs.Sub(manifests, "nodepools")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// RBAC returns the ClusterRoles and bindings, one file per component.
func RBAC() fs.FS {
	sub, err := fs.Sub(manifests, "rbac")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}
