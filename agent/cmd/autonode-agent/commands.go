package main

import (
	"context"
	"io"
	"slices"

	"github.com/autonode/autonode/agent/config"
)

// subcommand is a one-shot mode of the agent binary (`autonode-agent NAME ...`),
// run instead of the daemon: settings generators, udev programs and boot-time
// setup call these. Each parses its own flags.
type subcommand struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// subcommands lists every one-shot mode; the daemon runs when the first
// argument names none of them.
func subcommands() map[string]subcommand {
	return map[string]subcommand{
		"ebs-id":     {"print the EBS volume id and mapping name of an NVMe device (udev PROGRAM)", ebsID},
		"max-pods":   {"print the kubelet max-pods of an instance type", maxPods},
		"nodeconfig": {"print one per-node setting (kube-reserved, kubelet and containerd config, ...)", nodeconfigCmd},
		"policy":     {"print a pod's programmed NetworkPolicy rules (dump) or a flow's verdict (check)", policyCmd},
		"storage":    {"set up (before containerd and the kubelet) or verify the instance store", storageCmd},
	}
}

// commandHelp lists the subcommands, sorted, for the daemon's usage text.
func commandHelp() []config.CommandHelp {
	var out []config.CommandHelp
	for name, c := range subcommands() {
		out = append(out, config.CommandHelp{Name: name, Summary: c.summary})
	}
	slices.SortFunc(out, func(a, b config.CommandHelp) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return out
}
