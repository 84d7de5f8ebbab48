// Package disruption decides which provisioner nodes to take away and why:
// consolidation (emptiness, single-node delete and replace, multi-node, and
// optionally one node to several cheaper ones), drift (NodePool template
// hash, requirements, resolved AMI), expiry and repair of unhealthy nodes,
// all within per-NodePool disruption budgets and PodDisruptionBudgets.
//
// The core is pure: callers describe the cluster as a [Cluster] (built from
// apiserver objects with [Build]), [Engine.Decide] returns [Command]s, and
// [Engine.Validate] re-simulates a command after the validation delay before
// anything is touched. [Ledger] reserves budget for in-flight commands
// atomically so that concurrent commands never exceed a budget. Placement is
// simulated with provisioner/scheduling's Solve. Executing a command (taint,
// launch replacements, drain through the Eviction API, delete) goes through
// the small [Executor] interface that [Runner] drives; the design and the
// choices are in docs/disruption.md.
package disruption
