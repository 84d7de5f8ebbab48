// Package repair carries out the local repair actions of the health reason
// catalogue: restarting the kubelet or containerd, or rebooting the node.
// Every local repair is bounded by a budget (so many per action per window),
// so that a problem a restart does not fix cannot turn into a restart loop;
// the budget can be persisted to a file so that reboots count across boots.
// The "replace" action has nothing to do locally: the condition stays False
// and the provisioner replaces the node after its toleration.
//
// It also holds the escalation policy by which a storage reason that keeps
// repeating turns from Warning into Fatal, when configured to.
package repair

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/autonode/autonode/internal/atomicfile"

	"k8s.io/utils/clock"

	"github.com/autonode/autonode/health"
)

// UnitRestarter restarts a systemd unit. Systemd implements it over D-Bus;
// tests use a recording fake.
type UnitRestarter interface {
	RestartUnit(ctx context.Context, name string) error
}

// Rebooter asks the init system for an orderly reboot.
type Rebooter interface {
	Reboot(ctx context.Context) error
}

// ErrBudgetExhausted means a repair was skipped because its action already
// ran as often as the budget allows within the window.
var ErrBudgetExhausted = errors.New("repair budget exhausted")

// Options configures a Repairer. Zero values take the defaults.
type Options struct {
	Restarter UnitRestarter
	// Rebooter may be nil: reboot requests then fail with an error.
	Rebooter Rebooter
	Logger   *slog.Logger
	Clock    clock.PassiveClock
	// KubeletUnit and ContainerdUnit name the units to restart. Defaults
	// kubelet.service and containerd.service.
	KubeletUnit, ContainerdUnit string
	// Restarts is how many restarts of each unit the budget allows per
	// Window. Default 3.
	Restarts int
	// Reboots is how many reboots the budget allows per Window. Default 1.
	Reboots int
	// Window is the budget's sliding window. Default 1h.
	Window time.Duration
	// StatePath, when set, keeps the budget in this file so that it
	// survives agent restarts and reboots. Default none (in memory).
	StatePath string
}

// Repairer carries out repair actions within their budgets. It is safe for
// concurrent use.
type Repairer struct {
	opts Options

	mu sync.Mutex
	// done holds, per action, when it ran within the current window.
	done map[health.Action][]time.Time
}

// New returns a Repairer, loading the budget from StatePath if it exists.
func New(opts Options) (*Repairer, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.KubeletUnit == "" {
		opts.KubeletUnit = "kubelet.service"
	}
	if opts.ContainerdUnit == "" {
		opts.ContainerdUnit = "containerd.service"
	}
	if opts.Restarts <= 0 {
		opts.Restarts = 3
	}
	if opts.Reboots <= 0 {
		opts.Reboots = 1
	}
	if opts.Window <= 0 {
		opts.Window = time.Hour
	}
	r := &Repairer{opts: opts, done: map[health.Action][]time.Time{}}
	if opts.StatePath != "" {
		data, err := os.ReadFile(opts.StatePath)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("reading repair budget %s: %w", opts.StatePath, err)
		default:
			if err := json.Unmarshal(data, &r.done); err != nil {
				// A corrupt file must not stop the agent; start afresh.
				opts.Logger.Warn("ignoring unreadable repair budget", "path", opts.StatePath, "err", err)
				r.done = map[health.Action][]time.Time{}
			}
		}
	}
	return r, nil
}

// Repair carries out reason's action. It returns nil for actions with
// nothing to do locally (none, replace), an error wrapping
// ErrBudgetExhausted when the budget forbids it, or the action's error.
func (r *Repairer) Repair(ctx context.Context, reason health.Reason) error {
	switch reason.Action {
	case health.ActionNone, health.ActionReplace, "":
		return nil
	case health.ActionRestartKubelet, health.ActionRestartContainerd, health.ActionReboot:
	default:
		return fmt.Errorf("reason %s: unknown repair action %q", reason.Name, reason.Action)
	}
	if err := r.take(reason.Action); err != nil {
		return fmt.Errorf("reason %s: %s: %w", reason.Name, reason.Action, err)
	}
	log := r.opts.Logger.With("reason", reason.Name, "action", reason.Action)
	var err error
	switch reason.Action {
	case health.ActionRestartKubelet:
		log.Warn("restarting unit", "unit", r.opts.KubeletUnit)
		err = r.restart(ctx, r.opts.KubeletUnit)
	case health.ActionRestartContainerd:
		log.Warn("restarting unit", "unit", r.opts.ContainerdUnit)
		err = r.restart(ctx, r.opts.ContainerdUnit)
	case health.ActionReboot:
		log.Warn("requesting reboot")
		if r.opts.Rebooter == nil {
			err = errors.New("no rebooter configured")
		} else {
			err = r.opts.Rebooter.Reboot(ctx)
		}
	}
	if err != nil {
		return fmt.Errorf("reason %s: %s: %w", reason.Name, reason.Action, err)
	}
	return nil
}

func (r *Repairer) restart(ctx context.Context, unit string) error {
	if r.opts.Restarter == nil {
		return fmt.Errorf("restarting %s: no unit restarter configured", unit)
	}
	if err := r.opts.Restarter.RestartUnit(ctx, unit); err != nil {
		return fmt.Errorf("restarting %s: %w", unit, err)
	}
	return nil
}

// Describe says in words what action does on this node, e.g. "restart
// containerd.service".
func (r *Repairer) Describe(a health.Action) string {
	switch a {
	case health.ActionRestartKubelet:
		return "restart " + r.opts.KubeletUnit
	case health.ActionRestartContainerd:
		return "restart " + r.opts.ContainerdUnit
	}
	return string(a)
}

// take spends one unit of a's budget, or returns ErrBudgetExhausted. The
// attempt is counted before it runs: a restart that hangs or a reboot that
// never comes back still counts.
func (r *Repairer) take(a health.Action) error {
	limit := r.opts.Restarts
	if a == health.ActionReboot {
		limit = r.opts.Reboots
	}
	now := r.opts.Clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.done[a][:0]
	for _, t := range r.done[a] {
		if now.Sub(t) < r.opts.Window {
			kept = append(kept, t)
		}
	}
	r.done[a] = kept
	if len(kept) >= limit {
		return fmt.Errorf("%d of %d allowed per %s already used: %w", len(kept), limit, r.opts.Window, ErrBudgetExhausted)
	}
	r.done[a] = append(kept, now)
	if r.opts.StatePath != "" {
		if err := r.save(); err != nil {
			// Repairing matters more than remembering; the log says why a
			// budget may reset after a reboot.
			r.opts.Logger.Error("saving repair budget", "path", r.opts.StatePath, "err", err)
		}
	}
	return nil
}

// save writes the budget atomically; r.mu is held.
func (r *Repairer) save() error {
	data, err := json.Marshal(r.done)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(r.opts.StatePath, data, 0o600)
}

// Escalation configures the escalation of persistent storage problems: a
// StorageReady reason of Warning severity that repeats Repeats times within
// Window is treated as Fatal. Repeats of zero turns escalation off (the
// default).
type Escalation struct {
	Repeats int
	Window  time.Duration
}

// Escalator applies an Escalation. It is not safe for concurrent use: the
// reporter calls it from its one loop.
type Escalator struct {
	cfg  Escalation
	seen map[string][]time.Time
}

// NewEscalator returns an Escalator for cfg.
func NewEscalator(cfg Escalation) *Escalator {
	return &Escalator{cfg: cfg, seen: map[string][]time.Time{}}
}

// Severity returns the severity for one occurrence of reason at now, given
// the severity it would otherwise have.
func (e *Escalator) Severity(reason health.Reason, sev health.Severity, now time.Time) health.Severity {
	if e.cfg.Repeats <= 0 || reason.Condition != health.StorageReady || sev != health.Warning {
		return sev
	}
	kept := e.seen[reason.Name][:0]
	for _, t := range e.seen[reason.Name] {
		if now.Sub(t) < e.cfg.Window {
			kept = append(kept, t)
		}
	}
	kept = append(kept, now)
	if len(kept) > e.cfg.Repeats {
		kept = kept[len(kept)-e.cfg.Repeats:] // bounded memory
	}
	e.seen[reason.Name] = kept
	if len(kept) >= e.cfg.Repeats {
		return health.Fatal
	}
	return sev
}
