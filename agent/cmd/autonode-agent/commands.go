package main

import (
	"context"
	"io"
)

// subcommand is a one-shot mode of the agent binary (`autonode-agent NAME ...`),
// run instead of the daemon: settings generators, udev programs and boot-time
// setup call these. Each parses its own flags.
type subcommand func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// subcommands lists every one-shot mode; the daemon runs when the first
// argument names none of them.
func subcommands() map[string]subcommand {
	return map[string]subcommand{
		"max-pods": maxPods,
	}
}
