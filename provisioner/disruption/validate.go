package disruption

import (
	"context"
	"errors"
	"fmt"
	"time"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
)

// ErrInvalidated is returned by Validate when a command no longer holds.
var ErrInvalidated = errors.New("command no longer valid")

// Validate re-checks a consolidation command against a fresh view of the
// cluster, taken after the validation delay: every candidate must still be
// there and still a candidate (no pod came or went within consolidateAfter,
// no do-not-disrupt, PDBs allow), the budgets must still have room, and a
// new simulation must still remove them with no more replacements than
// planned and still save the minimum. It returns the command refreshed
// from the new simulation, or an error wrapping ErrInvalidated that says
// why. Commands of other reasons are returned as they are.
func (e *Engine) Validate(ctx context.Context, c *Cluster, cmd *Command, now time.Time) (*Command, error) {
	if !cmd.Consolidation() {
		return cmd, nil
	}
	r := e.newRound(c, now)
	byName := make(map[string]*Node, len(c.Nodes))
	for _, n := range c.Nodes {
		byName[n.Key()] = n
	}
	cands := make([]*Node, 0, len(cmd.Candidates))
	perPool := map[string]int{}
	for _, old := range cmd.Candidates {
		n := byName[old.Key()]
		if n == nil {
			return nil, fmt.Errorf("nodeclaim %s is gone: %w", old.Key(), ErrInvalidated)
		}
		if !r.consolidatable(n) {
			return nil, fmt.Errorf("nodeclaim %s is no longer a consolidation candidate: %w", n.NodeClaim, ErrInvalidated)
		}
		if cmd.Reason == v1.ReasonEmpty && !n.Empty() {
			return nil, fmt.Errorf("nodeclaim %s is no longer empty: %w", n.NodeClaim, ErrInvalidated)
		}
		if cmd.Reason == v1.ReasonUnderutilized && r.c.Pools[n.Pool].Policy == v1.ConsolidationWhenEmpty {
			return nil, fmt.Errorf("nodepool %s now consolidates only empty nodes: %w", n.Pool, ErrInvalidated)
		}
		perPool[n.Pool]++
		cands = append(cands, n)
	}
	for pool, k := range perPool {
		if left := r.left(pool, cmd.Reason); k > left {
			return nil, fmt.Errorf("nodepool %s budget for %s allows %d more, command needs %d: %w", pool, cmd.Reason, left, k, ErrInvalidated)
		}
	}
	if cmd.Reason == v1.ReasonEmpty {
		out := *cmd
		out.Candidates, out.Price = cands, 0
		for _, n := range cands {
			out.Price += n.Price
		}
		return &out, nil
	}
	fresh, err := r.consolidate(ctx, cmd.Method, cands, len(cmd.Replacements))
	if err != nil {
		return nil, err
	}
	if fresh == nil {
		return nil, fmt.Errorf("nodeclaims %s: the simulation no longer finds a cheaper placement within %d replacements: %w",
			nodeNames(cands), len(cmd.Replacements), ErrInvalidated)
	}
	fresh.Decided = cmd.Decided
	return fresh, nil
}
