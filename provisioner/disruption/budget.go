package disruption

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
)

// Graceful reports whether r is a graceful reason: Empty, Underutilized and
// Drifted never break a PodDisruptionBudget; Expired and Unhealthy are
// forceful once terminationGracePeriod runs out.
func Graceful(r v1.DisruptionReason) bool {
	return r == v1.ReasonEmpty || r == v1.ReasonUnderutilized || r == v1.ReasonDrifted
}

// Budget is a parsed NodePool disruption budget.
type Budget struct {
	// Reasons it covers; all graceful reasons when empty (see Covers).
	Reasons []v1.DisruptionReason
	// Nodes is a count, or a percentage of the pool's nodes when Percent.
	Nodes   int
	Percent bool
	// Schedule opens the window (UTC) for Duration; nil means always active.
	Schedule cron.Schedule
	Duration time.Duration
}

// ParseBudget checks and parses one API budget. The cron schedule is read
// in UTC; a CRON_TZ or TZ prefix is refused so that windows cannot move with
// a time zone database.
func ParseBudget(b v1.Budget) (Budget, error) {
	out := Budget{Reasons: b.Reasons}
	nodes := b.Nodes
	if nodes == "" {
		nodes = "10%"
	}
	num, pct := strings.CutSuffix(nodes, "%")
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || (pct && n > 100) {
		return Budget{}, fmt.Errorf("budget nodes %q: want a count or a percentage from 0%% to 100%%", b.Nodes)
	}
	out.Nodes, out.Percent = n, pct
	if (b.Schedule == nil) != (b.Duration == nil) {
		return Budget{}, fmt.Errorf("budget nodes %q: schedule and duration go together", b.Nodes)
	}
	if b.Schedule != nil {
		spec := *b.Schedule
		if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
			return Budget{}, fmt.Errorf("budget schedule %q: schedules are UTC; a time zone prefix is not allowed", spec)
		}
		s, err := cron.ParseStandard(spec)
		if err != nil {
			return Budget{}, fmt.Errorf("budget schedule %q: %w", spec, err)
		}
		if b.Duration.Duration <= 0 {
			return Budget{}, fmt.Errorf("budget schedule %q: duration %s must be positive", spec, b.Duration.Duration)
		}
		out.Schedule, out.Duration = s, b.Duration.Duration
	}
	return out, nil
}

// Active reports whether the budget's window is open at now: the last
// schedule tick at or before now is less than Duration ago.
func (b Budget) Active(now time.Time) bool {
	if b.Schedule == nil {
		return true
	}
	// A window [T, T+Duration) holds now iff T is after now-Duration and
	// not after now; the first tick after now-Duration is the one to test.
	now = now.UTC()
	return !b.Schedule.Next(now.Add(-b.Duration)).After(now)
}

// Covers reports whether the budget limits reason r. A budget that names no
// reasons covers the graceful ones only, as in Karpenter, where expiry and
// repair are forceful; Expired and Unhealthy are limited only by budgets
// that name them.
func (b Budget) Covers(r v1.DisruptionReason) bool {
	if len(b.Reasons) == 0 {
		return Graceful(r)
	}
	return slices.Contains(b.Reasons, r)
}

// Count is how many of a pool of poolNodes nodes the budget lets be
// disrupted at once. Percentages round up, as Karpenter's do, so that "10%"
// of a 5-node pool still lets one node go; "0%" and "0" block.
func (b Budget) Count(poolNodes int) int {
	if !b.Percent {
		return b.Nodes
	}
	return (poolNodes*b.Nodes + 99) / 100
}

// Unlimited is what Allowed returns when no active budget covers a reason.
const Unlimited = math.MaxInt32

// Allowed is how many of the pool's poolNodes nodes may be disrupted at once
// for reason r at now: the minimum over the active budgets that cover r, or
// Unlimited. In-flight disruptions are not subtracted here (see Ledger).
func Allowed(budgets []Budget, r v1.DisruptionReason, poolNodes int, now time.Time) int {
	allowed := Unlimited
	for _, b := range budgets {
		if b.Covers(r) && b.Active(now) {
			allowed = min(allowed, b.Count(poolNodes))
		}
	}
	return allowed
}
