package policy

import (
	"context"
	"log/slog"

	"golang.org/x/time/rate"

	"github.com/autonode/autonode/agent/policy/datapath"
)

// flows counts every flow event by verdict, direction, pod and policy, and logs them within
// Options.FlowLogsPerSecond. The datapath does not say which rule decided, so an event is attributed to every
// policy that isolates the pod in its direction ("" when none does: an allow of a pod no policy selects).
func (e *Engine) flows(ctx context.Context) {
	limit := rate.NewLimiter(rate.Limit(e.opts.FlowLogsPerSecond), max(1, int(e.opts.FlowLogsPerSecond)))
	for ev := range e.opts.Datapath.Events(ctx) {
		e.flow(ev, limit)
	}
}

func (e *Engine) flow(ev datapath.Event, limit *rate.Limiter) {
	pod := ev.Namespace + "/" + ev.Name
	var pols []string
	e.mu.Lock()
	if l := e.v.locals[ev.HostIf]; l != nil {
		pod = l.key().String()
		if ev.Direction == datapath.Ingress {
			pols = l.ingressPolicies
		} else {
			pols = l.egressPolicies
		}
	}
	e.mu.Unlock()
	verdict := "deny"
	if ev.Verdict.Allowed {
		verdict = "allow"
	}
	dir := ev.Direction.String()
	if len(pols) == 0 {
		e.metrics.flows.WithLabelValues(verdict, dir, pod, "").Inc()
	}
	for _, p := range pols {
		e.metrics.flows.WithLabelValues(verdict, dir, pod, p).Inc()
	}
	if !limit.Allow() {
		e.metrics.flowLogsDrop.Inc()
		return
	}
	level := slog.LevelInfo
	if !ev.Verdict.Allowed {
		level = slog.LevelWarn
	}
	e.log.Log(context.Background(), level, "policy verdict",
		"verdict", verdict, "reason", ev.Verdict.Reason.String(), "direction", dir, "pod", pod, "link", ev.HostIf,
		"protocol", ev.Protocol, "src", ev.Src.String(), "dst", ev.Dst.String(), "policies", pols, "time", ev.Time)
}
