// Package scheduling is the provisioner's scheduling core: given pending
// pods, the existing and in-flight nodes, the NodePools with their instance
// types, and the DaemonSets, it decides which pods go on which existing node
// and which new nodes to launch, choosing the cheapest instance types that
// satisfy every hard scheduling constraint.
//
// It is pure: no apiserver, no cloud. Callers (the provisioning and
// disruption controllers) resolve objects into [Input] and act on [Result].
// The algorithm, its complexity and the order in which soft preferences are
// relaxed are described in docs/provisioner-scheduling.md.
package scheduling
