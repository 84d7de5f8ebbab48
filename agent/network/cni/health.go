package cni

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/autonode/autonode/agent/network/ipam"
	"github.com/autonode/autonode/health"
)

// checkAll runs CHECK's datapath verification over every attachment, so a
// route or rule that disappears (a stray `ip route flush`, a bug) turns
// NetworkingReady False without waiting for a runtime to call CHECK, and
// turns it back once every attachment checks out again.
func (s *Server) checkAll(ctx context.Context) {
	if s.opts.Health == nil {
		return
	}
	var failures []string
	for _, a := range s.opts.Allocator.List() {
		if a.Pod.Netns == "" {
			continue // adopted without a netns: nothing to look into
		}
		if _, err := os.Stat(a.Pod.Netns); err != nil {
			continue // the sandbox is gone; DEL or GC will release it
		}
		err := s.checkOne(ctx, a)
		if err != nil && ctx.Err() == nil {
			failures = append(failures, fmt.Sprintf("container %s %s (%s): %v", a.Key.ContainerID, a.Key.IfName, a.Addr, err))
		}
	}
	if ctx.Err() != nil {
		return
	}
	sig := health.Signal{Source: "cni", Condition: health.NetworkingReady, Reason: health.ReasonRouteMissing, Severity: health.Fatal}
	switch {
	case len(failures) > 0:
		sig.Message = fmt.Sprintf("%d pod attachments fail their datapath check: %s", len(failures), strings.Join(failures, "; "))
		s.log.Error("pod datapath check failed", "failures", len(failures), "first", failures[0])
	case s.failing:
		sig.Cleared, sig.Message = true, "every pod attachment passes its datapath check again"
	default:
		return
	}
	s.failing = len(failures) > 0
	s.opts.Health.Report(ctx, sig)
}

// checkOne checks one attachment under the same locks as its verbs, so an
// ADD or DEL half done is never mistaken for a broken datapath.
func (s *Server) checkOne(ctx context.Context, a ipam.Allocation) error {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	defer s.keys.lock(a.Key)()
	current, ok := s.opts.Allocator.Get(a.Key)
	if !ok || current.Addr != a.Addr {
		return nil // deleted or replaced while we were getting here
	}
	return s.opts.Datapath.CheckPod(ctx, podFromAlloc(current, current.Pod.Netns, s.opts.Datapath.MTU()))
}

// runChecks calls checkAll every interval until ctx ends.
func (s *Server) runChecks(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.checkAll(ctx)
		}
	}
}
