// Package deploy holds autonode's Kubernetes manifests: the ClusterRoles of
// the agent and the provisioner, and (as they arrive) the CRDs and the
// provisioner's own manifests. They are embedded so that the sandbox and the
// tests apply exactly the files that ship.
package deploy

import (
	"embed"
	"io/fs"
)

//go:embed rbac/*.yaml crds/*.yaml
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

// RBAC returns the ClusterRoles and bindings, one file per component.
func RBAC() fs.FS {
	sub, err := fs.Sub(manifests, "rbac")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}
