// Package reporter turns health signals into what the cluster sees: the five
// autonode node conditions, events on the Node, and the
// autonode.dev/repair-reason annotation. It is the agent's health.Reporter
// and one of its subsystems.
//
// Report only enqueues (a bounded queue; drops are counted), and one loop
// applies signals to an in-memory picture of the node's health:
//
//   - a Fatal signal makes its reason active on its condition, which turns
//     False; the condition turns True again once every active fatal reason
//     on it has recovered: a quiet period passed without a repeat, or, for
//     probe reasons, a Signal with Cleared set arrived;
//   - every signal counts towards one Event per reason on the Node (Warning
//     for Fatal and Warning, Normal for Info), updated in place with its
//     count and last time, at a rate bounded by token buckets;
//   - a reason whose action is local (a unit restart, a reboot) is handed to
//     the Repairer when it becomes active.
//
// Writes are level-based and minimal: only our five conditions are patched
// (a strategic merge keyed by type, so Ready and others are untouched), only
// when something changed or the heartbeat (default every 5m) is due, and
// lastTransitionTime moves only when a status changes. When the apiserver is
// away, writes are retried with backoff and the picture is kept; after a few
// failed writes a summary goes to the serial console.
package reporter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/autonode/autonode/agent/backoff"
	"github.com/autonode/autonode/agent/subsystem"
	"github.com/autonode/autonode/health"
	"github.com/autonode/autonode/health/console"
	"github.com/autonode/autonode/health/repair"
)

// RepairAnnotation tells humans why a node is due for replacement: "<reason>
// <RFC3339 time>". The condition is the contract; this is informational.
const RepairAnnotation = "autonode.dev/repair-reason"

// Repairer carries out a reason's local repair action; *repair.Repairer is
// one. It is called from its own goroutine, with a deadline.
type Repairer interface {
	Repair(ctx context.Context, reason health.Reason) error
}

// SummaryWriter takes the health summary while the apiserver is
// unreachable; *console.Writer is one. It rate-limits itself.
type SummaryWriter interface {
	Write(s console.Summary) (bool, error)
}

// Options configures a Reporter. Zero values take the defaults.
type Options struct {
	Client kubernetes.Interface
	// NodeName returns the name of our Node, or "" while it is not known
	// yet (kubenode finds it by providerID). Called from the loop, so it
	// must be cheap.
	NodeName func() string
	// Catalogue resolves reasons. Default health.NewCatalogue(nil).
	Catalogue *health.Catalogue
	Logger    *slog.Logger
	Clock     clock.Clock
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// QueueSize bounds the signals waiting to be applied; more are dropped
	// and counted. Default 1024.
	QueueSize int
	// HeartbeatInterval is how often lastHeartbeatTime is refreshed when
	// nothing else changes, which bounds steady-state writes. Default 5m.
	HeartbeatInterval time.Duration
	// EventBurst and EventInterval shape the token bucket of each reason's
	// Event: up to EventBurst writes at once, then one per EventInterval;
	// occurrences in between are aggregated into the next write. All
	// events together get ten times that. Defaults 5 and 5m.
	EventBurst    int
	EventInterval time.Duration
	// EventNamespace holds the Node's events. Default "default", as the
	// kubelet does.
	EventNamespace string
	// InitialBackoff and MaxBackoff shape retries of failed writes.
	// Defaults 500ms and 30s.
	InitialBackoff, MaxBackoff time.Duration
	// ContactLostAfter is how many writes in a row must fail before the
	// node counts as cut off and the console summary is written. Default 3.
	ContactLostAfter int
	// Console receives the summary while contact is lost; nil writes none.
	Console SummaryWriter
	// Repairer carries out local repairs; nil does none.
	Repairer Repairer
	// RepairTimeout bounds one repair. Default 2m.
	RepairTimeout time.Duration
	// CarryOverGrace is how long a probe reason that an earlier agent left
	// on the Node stays False unless reported again. Default 5m.
	CarryOverGrace time.Duration
	// WriteTimeout bounds one pass of writes, so that an apiserver that
	// stops answering without closing the connection cannot wedge the
	// loop. Default 30s.
	WriteTimeout time.Duration
	// Escalation turns repeating storage warnings Fatal; off by default.
	Escalation repair.Escalation
}

// Reporter is the node's health reporter. Report is safe for concurrent
// use; Run must not be called twice at once.
type Reporter struct {
	opts      Options
	queue     chan item
	readiness *subsystem.Readiness
	repairs   sync.WaitGroup

	writes       atomic.Int64
	dropped      atomic.Int64
	writesMetric *prometheus.CounterVec
	dropMetric   prometheus.Counter

	// Everything below is owned by the Run loop. It survives a Run that
	// returns, so a restarted Run re-applies what an earlier one knew.
	cat        *health.Catalogue
	escalator  *repair.Escalator
	unknown    map[string]bool // unknown reasons already logged
	active     map[problemKey]*problem
	conds      map[health.Condition]*condState
	applied    map[health.Condition]condState // last written; nil: write due
	lastWrite  time.Time
	node       string
	uid        types.UID
	nodeRead   bool    // the Node was read since node was set
	annotation *string // last known value on the Node; nil: unknown
	events     map[string]*eventAgg
	allEvents  *rate.Limiter
	failures   int
	lostSince  time.Time
	errs       []console.Error
	retryAt    time.Time
	delays     wait.Backoff
}

type problemKey struct {
	cond   health.Condition
	reason string
}

// problem is an active reason.
type problem struct {
	reason     health.Reason
	severity   health.Severity // the highest since it became active
	first      time.Time
	fatalSince time.Time
	last       time.Time
	count      int
	// message is the first occurrence's: repeats with other text must not
	// rewrite the condition.
	message string
	// carried: taken over from the Node at start, not seen by this agent.
	carried bool
}

// condState is one condition as we want it on the Node.
type condState struct {
	status  corev1.ConditionStatus
	reason  string
	message string
	since   time.Time
}

// eventAgg aggregates one reason's Event.
type eventAgg struct {
	reason    string
	eventType string
	message   string
	count     int32 // occurrences since the agent started
	base      int32 // count already on the Event when we found it
	first     time.Time
	last      time.Time
	written   int32 // count as last written
	exists    bool  // the Event object exists under our name
	limiter   *rate.Limiter
}

type item struct {
	sig  health.Signal
	at   time.Time
	sync chan error // non-nil: a barrier from Sync
}

const maxErrors = 5

// New returns a Reporter; nothing is contacted until Run.
func New(opts Options) (*Reporter, error) {
	if opts.Client == nil || opts.NodeName == nil {
		return nil, errors.New("health reporter: Client and NodeName are required")
	}
	if opts.Catalogue == nil {
		cat, err := health.NewCatalogue(nil)
		if err != nil {
			return nil, err
		}
		opts.Catalogue = cat
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1024
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 5 * time.Minute
	}
	if opts.EventBurst <= 0 {
		opts.EventBurst = 5
	}
	if opts.EventInterval <= 0 {
		opts.EventInterval = 5 * time.Minute
	}
	if opts.EventNamespace == "" {
		opts.EventNamespace = metav1.NamespaceDefault
	}
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	if opts.ContactLostAfter <= 0 {
		opts.ContactLostAfter = 3
	}
	if opts.RepairTimeout <= 0 {
		opts.RepairTimeout = 2 * time.Minute
	}
	if opts.CarryOverGrace <= 0 {
		opts.CarryOverGrace = 5 * time.Minute
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	r := &Reporter{
		opts:      opts,
		queue:     make(chan item, opts.QueueSize),
		readiness: subsystem.NewReadiness("node conditions not written yet"),
		writesMetric: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autonode_health_api_writes_total",
			Help: "Writes the health reporter sent to the apiserver, by object (conditions, annotation, event) and result.",
		}, []string{"object", "result"}),
		dropMetric: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "autonode_health_signals_dropped_total",
			Help: "Health signals dropped because the reporter's queue was full.",
		}),
		cat:       opts.Catalogue,
		escalator: repair.NewEscalator(opts.Escalation),
		unknown:   map[string]bool{},
		active:    map[problemKey]*problem{},
		conds:     map[health.Condition]*condState{},
		events:    map[string]*eventAgg{},
		allEvents: rate.NewLimiter(10*rate.Every(opts.EventInterval), 4*opts.EventBurst),
		delays:    backoff.New(opts.InitialBackoff, opts.MaxBackoff),
	}
	now := opts.Clock.Now()
	for _, c := range health.Conditions() {
		r.conds[c] = &condState{status: corev1.ConditionTrue, reason: health.HealthyReason(c), message: healthyMessage, since: now}
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{r.writesMetric, r.dropMetric} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering health reporter metrics: %w", err)
			}
		}
	}
	return r, nil
}

const healthyMessage = "autonode sees no fatal problem"

// Name implements subsystem.Subsystem.
func (r *Reporter) Name() string { return "health-reporter" }

// Ready is nil once the conditions were written to the Node once.
func (r *Reporter) Ready() error { return r.readiness.Ready() }

// Writes returns how many writes were sent to the apiserver, failed ones
// included.
func (r *Reporter) Writes() int64 { return r.writes.Load() }

// Dropped returns how many signals were dropped on a full queue.
func (r *Reporter) Dropped() int64 { return r.dropped.Load() }

// Report enqueues s without blocking; when the queue is full, s is dropped
// and counted.
func (r *Reporter) Report(ctx context.Context, s health.Signal) {
	select {
	case r.queue <- item{sig: s, at: r.opts.Clock.Now()}:
	default:
		n := r.dropped.Add(1)
		r.dropMetric.Inc()
		if n == 1 || n%1000 == 0 {
			r.opts.Logger.Warn("health signal queue full; dropping signals", "dropped", n, "reason", s.Reason)
		}
	}
}

// Sync waits until every signal reported before it has been applied and a
// write pass has run, and returns that pass's error. It is for tests and
// orderly shutdown; it blocks until Run picks it up or ctx ends.
func (r *Reporter) Sync(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case r.queue <- item{sync: done}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run applies signals and writes the Node's health until ctx ends. It never
// fails: an unreachable apiserver is retried.
func (r *Reporter) Run(ctx context.Context) error {
	defer r.repairs.Wait()
	// A new Run re-reads the Node and rewrites everything, in case the
	// world moved while it was not running.
	r.node, r.nodeRead, r.applied, r.annotation = "", false, nil, nil
	passed := false // a barrier's pass just ran
	for {
		if !passed {
			_ = r.pass(ctx) // a failure has scheduled its own retry
		}
		passed = false
		timer := r.opts.Clock.NewTimer(r.nextWake(r.opts.Clock.Now()))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C():
			continue
		case it := <-r.queue:
			timer.Stop()
			barriers := r.take(ctx, it, nil)
			// Drain what else is queued, so a burst costs one write pass.
			for len(r.queue) > 0 {
				barriers = r.take(ctx, <-r.queue, barriers)
			}
			if len(barriers) == 0 {
				continue
			}
			err := r.pass(ctx)
			for _, b := range barriers {
				b <- err
			}
			passed = true
		}
	}
}

func (r *Reporter) take(ctx context.Context, it item, barriers []chan error) []chan error {
	if it.sync != nil {
		return append(barriers, it.sync)
	}
	r.apply(ctx, it.sig, it.at)
	return barriers
}

// apply folds one signal into the picture.
func (r *Reporter) apply(ctx context.Context, s health.Signal, at time.Time) {
	reason, sev, known := r.cat.Resolve(s)
	if !known && !r.unknown[s.Reason] {
		r.unknown[s.Reason] = true
		r.opts.Logger.Warn("health signal with a reason not in the catalogue; treating it as a warning",
			"reason", s.Reason, "source", s.Source, "condition", s.Condition)
	}
	key := problemKey{reason.Condition, reason.Name}
	if s.Cleared {
		if p, ok := r.active[key]; ok {
			delete(r.active, key)
			r.opts.Logger.Info("health problem cleared", "reason", reason.Name, "condition", reason.Condition, "after", at.Sub(p.first).Round(time.Second))
		}
		return
	}
	sev = r.escalator.Severity(reason, sev, at)
	if sev == health.Fatal && !health.ValidCondition(reason.Condition) {
		r.opts.Logger.Warn("fatal health signal without a node condition; treating it as a warning",
			"reason", reason.Name, "source", s.Source, "condition", reason.Condition)
		sev = health.Warning
	}
	r.countEvent(reason.Name, sev, s, at)
	if sev == health.Info {
		return
	}
	p, ok := r.active[key]
	wasFatal := ok && p.severity == health.Fatal
	if !ok {
		p = &problem{reason: reason, first: at, message: s.Message}
		r.active[key] = p
	}
	p.last = at
	p.count++
	p.carried = false
	if sev > p.severity {
		p.severity = sev
	}
	if sev == health.Fatal && !wasFatal {
		p.fatalSince = at
		r.opts.Logger.Error("fatal health problem", "reason", reason.Name, "condition", reason.Condition, "source", s.Source, "message", s.Message)
	}
	if !ok || (sev == health.Fatal && !wasFatal) {
		r.repair(ctx, reason)
	}
}

// repair hands a newly active reason's local action to the Repairer, and
// reports the outcome back as a signal of its own.
func (r *Reporter) repair(ctx context.Context, reason health.Reason) {
	switch reason.Action {
	case health.ActionRestartKubelet, health.ActionRestartContainerd, health.ActionReboot:
	default:
		return
	}
	if r.opts.Repairer == nil {
		return
	}
	r.repairs.Go(func() {
		rctx, cancel := context.WithTimeout(ctx, r.opts.RepairTimeout)
		defer cancel()
		err := r.opts.Repairer.Repair(rctx, reason)
		out := health.Signal{Source: "repair", Condition: reason.Condition, Severity: health.Warning}
		switch {
		case err == nil:
			out.Reason, out.Severity = health.ReasonRepairAttempted, health.Info
			out.Message = fmt.Sprintf("%s for %s", reason.Action, reason.Name)
		case errors.Is(err, repair.ErrBudgetExhausted):
			out.Reason = health.ReasonRepairBudgetExhausted
			out.Message = fmt.Sprintf("skipped %s for %s: %v", reason.Action, reason.Name, err)
		default:
			out.Reason = health.ReasonRepairFailed
			out.Message = fmt.Sprintf("%s for %s failed: %v", reason.Action, reason.Name, err)
		}
		r.opts.Logger.Info("repair finished", "reason", reason.Name, "action", reason.Action, "err", err)
		r.Report(ctx, out)
	})
}

func (r *Reporter) countEvent(reason string, sev health.Severity, s health.Signal, at time.Time) {
	e, ok := r.events[reason]
	if !ok {
		e = &eventAgg{reason: reason, first: at, limiter: rate.NewLimiter(rate.Every(r.opts.EventInterval), r.opts.EventBurst)}
		r.events[reason] = e
	}
	e.count++
	e.last = at
	e.message = s.Message
	e.eventType = corev1.EventTypeNormal
	if sev >= health.Warning {
		e.eventType = corev1.EventTypeWarning
	}
}

// expire drops quiet-period reasons that have not repeated in time.
func (r *Reporter) expire(now time.Time) {
	for key, p := range r.active {
		if p.carried && p.reason.Recovery.Probe && now.Sub(p.last) >= r.opts.CarryOverGrace {
			delete(r.active, key)
			r.opts.Logger.Info("carried-over health problem not reported again; dropping it", "reason", key.reason, "condition", key.cond)
			continue
		}
		if p.reason.Recovery.Probe || now.Sub(p.last) < p.reason.Recovery.QuietPeriod {
			continue
		}
		delete(r.active, key)
		r.opts.Logger.Info("health problem recovered: quiet period passed", "reason", key.reason, "condition", key.cond,
			"quiet", p.reason.Recovery.QuietPeriod)
	}
}

// evaluate brings r.conds in line with the active problems; only a change of
// status moves since (lastTransitionTime).
func (r *Reporter) evaluate(now time.Time) {
	for _, c := range health.Conditions() {
		var fatal []*problem
		for key, p := range r.active {
			if key.cond == c && p.severity == health.Fatal {
				fatal = append(fatal, p)
			}
		}
		want := condState{status: corev1.ConditionTrue, reason: health.HealthyReason(c), message: healthyMessage}
		if len(fatal) > 0 {
			slices.SortFunc(fatal, byFirst)
			want.status, want.reason, want.message = corev1.ConditionFalse, fatal[0].reason.Name, fatal[0].message
			if len(fatal) > 1 {
				var others []string
				for _, p := range fatal[1:] {
					others = append(others, p.reason.Name)
				}
				want.message = fmt.Sprintf("%s (and %s)", want.message, strings.Join(others, ", "))
			}
		}
		cur := r.conds[c]
		if cur.status != want.status {
			cur.since = now
			r.opts.Logger.Info("node condition changed", "condition", c, "status", want.status, "reason", want.reason)
		}
		cur.status, cur.reason, cur.message = want.status, want.reason, want.message
	}
}

func byFirst(a, b *problem) int {
	if c := a.first.Compare(b.first); c != 0 {
		return c
	}
	return strings.Compare(a.reason.Name, b.reason.Name)
}

// wantAnnotation is the repair-reason annotation the active problems call
// for, or "" for none.
func (r *Reporter) wantAnnotation() string {
	var replace []*problem
	for _, p := range r.active {
		if p.severity == health.Fatal && p.reason.Action == health.ActionReplace {
			replace = append(replace, p)
		}
	}
	if len(replace) == 0 {
		return ""
	}
	slices.SortFunc(replace, func(a, b *problem) int {
		if c := a.fatalSince.Compare(b.fatalSince); c != 0 {
			return c
		}
		return strings.Compare(a.reason.Name, b.reason.Name)
	})
	return replace[0].reason.Name + " " + replace[0].fatalSince.UTC().Format(time.RFC3339)
}

// pass brings the Node in line with the picture: conditions, annotation,
// events. It stops at the first failed write and schedules a retry.
func (r *Reporter) pass(ctx context.Context) error {
	now := r.opts.Clock.Now()
	r.expire(now)
	r.evaluate(now)
	name := r.opts.NodeName()
	if name == "" {
		return errors.New("node name not known yet")
	}
	if name != r.node {
		r.node, r.nodeRead, r.applied, r.annotation = name, false, nil, nil
		for _, e := range r.events {
			e.exists, e.base, e.written = false, 0, 0
		}
	}
	if now.Before(r.retryAt) {
		return fmt.Errorf("retrying writes to node %s after %s", r.node, r.retryAt.Format(time.RFC3339Nano))
	}
	wctx, cancel := context.WithTimeout(ctx, r.opts.WriteTimeout)
	defer cancel()
	if err := r.write(wctx, now); err != nil {
		r.fail(ctx, now, err)
		return err
	}
	if r.failures > 0 {
		r.opts.Logger.Info("apiserver reachable again; node health re-applied", "node", r.node, "failedWrites", r.failures)
	}
	r.failures, r.lostSince, r.retryAt = 0, time.Time{}, time.Time{}
	r.delays = backoff.New(r.opts.InitialBackoff, r.opts.MaxBackoff)
	return nil
}

func (r *Reporter) write(ctx context.Context, now time.Time) error {
	if !r.nodeRead {
		if err := r.readNode(ctx, now); err != nil {
			return err
		}
	}
	if r.conditionsDue(now) {
		if err := r.writeConditions(ctx, now); err != nil {
			return err
		}
	}
	if want := r.wantAnnotation(); r.annotation == nil || *r.annotation != want {
		if err := r.writeAnnotation(ctx, want); err != nil {
			return err
		}
	}
	return r.flushEvents(ctx, now)
}

// readNode learns the Node's UID (for events), our annotation, and the
// conditions already there, so that an agent restart keeps their
// lastTransitionTime.
func (r *Reporter) readNode(ctx context.Context, now time.Time) error {
	node, err := r.opts.Client.CoreV1().Nodes().Get(ctx, r.node, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading node %s: %w", r.node, err)
	}
	r.uid = node.UID
	ann := node.Annotations[RepairAnnotation]
	r.annotation = &ann
	r.carryOver(node, now)
	r.evaluate(now)
	for _, nc := range node.Status.Conditions {
		cur, ok := r.conds[health.Condition(nc.Type)]
		if ok && nc.Status == cur.status && !nc.LastTransitionTime.IsZero() && nc.LastTransitionTime.Time.Before(cur.since) {
			cur.since = nc.LastTransitionTime.Time
		}
	}
	r.nodeRead = true
	return nil
}

// carryOver takes on the fatal reasons that an earlier agent left on the
// Node, so that a restarted agent does not flap a False condition to True
// and back (which would reset the provisioner's toleration). They clear as
// their quiet period passes without a repeat; probe reasons, whose monitor
// may never send Cleared for a failure it did not see itself, after
// CarryOverGrace unless a monitor reports them again.
func (r *Reporter) carryOver(node *corev1.Node, now time.Time) {
	annReason, annTime, _ := strings.Cut(node.Annotations[RepairAnnotation], " ")
	for _, nc := range node.Status.Conditions {
		c := health.Condition(nc.Type)
		if !health.ValidCondition(c) || nc.Status != corev1.ConditionFalse || nc.Reason == "" {
			continue
		}
		reason, _, _ := r.cat.Resolve(health.Signal{Reason: nc.Reason, Condition: c})
		reason.Condition = c
		key := problemKey{c, reason.Name}
		if _, ok := r.active[key]; ok {
			continue
		}
		p := &problem{reason: reason, severity: health.Fatal, first: nc.LastTransitionTime.Time, fatalSince: nc.LastTransitionTime.Time,
			last: now, message: nc.Message, carried: true}
		if t, err := time.Parse(time.RFC3339, annTime); err == nil && annReason == reason.Name {
			p.fatalSince = t
		}
		r.active[key] = p
		r.opts.Logger.Info("carrying over a fatal reason from the Node", "node", r.node, "condition", c, "reason", reason.Name)
	}
}

func (r *Reporter) conditionsDue(now time.Time) bool {
	if r.applied == nil || now.Sub(r.lastWrite) >= r.opts.HeartbeatInterval {
		return true
	}
	for c, cur := range r.conds {
		if a := r.applied[c]; a.status != cur.status || a.reason != cur.reason || a.message != cur.message || !a.since.Equal(cur.since) {
			return true
		}
	}
	return false
}

func (r *Reporter) writeConditions(ctx context.Context, now time.Time) error {
	heartbeat := metav1.NewTime(now)
	var conds []corev1.NodeCondition
	for _, c := range health.Conditions() {
		cur := r.conds[c]
		conds = append(conds, corev1.NodeCondition{
			Type: corev1.NodeConditionType(c), Status: cur.status, Reason: cur.reason, Message: cur.message,
			LastHeartbeatTime: heartbeat, LastTransitionTime: metav1.NewTime(cur.since),
		})
	}
	// A strategic merge patch merges conditions by type: the kubelet's
	// Ready and anyone else's conditions are left alone.
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conds}})
	if err != nil {
		return fmt.Errorf("building condition patch for node %s: %w", r.node, err)
	}
	_, err = r.opts.Client.CoreV1().Nodes().Patch(ctx, r.node, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	r.countWrite("conditions", err)
	if err != nil {
		return fmt.Errorf("patching conditions of node %s: %w", r.node, err)
	}
	applied := make(map[health.Condition]condState, len(r.conds))
	for c, cur := range r.conds {
		applied[c] = *cur
	}
	r.applied, r.lastWrite = applied, now
	r.readiness.SetReady()
	return nil
}

func (r *Reporter) writeAnnotation(ctx context.Context, want string) error {
	var value any = want
	if want == "" {
		value = nil // a merge patch null removes the key
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{RepairAnnotation: value}}})
	if err != nil {
		return fmt.Errorf("building annotation patch for node %s: %w", r.node, err)
	}
	_, err = r.opts.Client.CoreV1().Nodes().Patch(ctx, r.node, types.MergePatchType, patch, metav1.PatchOptions{})
	r.countWrite("annotation", err)
	if err != nil {
		return fmt.Errorf("setting annotation %s on node %s: %w", RepairAnnotation, r.node, err)
	}
	r.annotation = &want
	if want != "" {
		r.opts.Logger.Warn("node marked for replacement", "node", r.node, "annotation", RepairAnnotation, "value", want)
	}
	return nil
}

// flushEvents writes the events that have new occurrences and a token.
func (r *Reporter) flushEvents(ctx context.Context, now time.Time) error {
	for _, reason := range slices.Sorted(maps.Keys(r.events)) {
		e := r.events[reason]
		if e.base+e.count == e.written && e.exists {
			continue
		}
		if e.limiter.TokensAt(now) < 1 || r.allEvents.TokensAt(now) < 1 {
			continue
		}
		e.limiter.AllowN(now, 1)
		r.allEvents.AllowN(now, 1)
		if err := r.writeEvent(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// eventName is stable per node and reason, so that every occurrence lands
// on one Event. It is a valid DNS subdomain even for odd reasons and very
// long node names (cut and made unique with a hash).
func eventName(node, reason string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(reason) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	slug := strings.Trim(b.String(), "-")
	if len(slug) > 63 {
		slug = strings.Trim(slug[:63], "-")
	}
	suffix := ".autonode-" + slug
	if len(node)+len(suffix) > 253 {
		h := fnv.New32a()
		h.Write([]byte(node))
		node = fmt.Sprintf("%s-%08x", strings.TrimRight(node[:253-len(suffix)-9], "-."), h.Sum32())
	}
	return node + suffix
}

func (r *Reporter) writeEvent(ctx context.Context, e *eventAgg) error {
	events := r.opts.Client.CoreV1().Events(r.opts.EventNamespace)
	name := eventName(r.node, e.reason)
	if !e.exists {
		ev := &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: name, Namespace: r.opts.EventNamespace},
			InvolvedObject: corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: r.node, UID: r.uid},
			Reason:         e.reason, Message: e.message, Type: e.eventType, Count: e.count,
			FirstTimestamp: metav1.NewTime(e.first), LastTimestamp: metav1.NewTime(e.last),
			Source:              corev1.EventSource{Component: "autonode-agent", Host: r.node},
			ReportingController: "autonode.dev/agent", ReportingInstance: r.node,
		}
		_, err := events.Create(ctx, ev, metav1.CreateOptions{})
		r.countWrite("event", err)
		switch {
		case err == nil:
			e.exists, e.base, e.written = true, 0, e.count
			return nil
		case apierrors.IsAlreadyExists(err):
			// An earlier agent wrote it: carry its count on.
			old, err := events.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("reading event %s/%s: %w", r.opts.EventNamespace, name, err)
			}
			e.exists, e.base = true, old.Count
		default:
			return fmt.Errorf("creating event %s/%s: %w", r.opts.EventNamespace, name, err)
		}
	}
	count := e.base + e.count
	patch, err := json.Marshal(map[string]any{
		"count": count, "message": e.message, "type": e.eventType, "lastTimestamp": metav1.NewTime(e.last),
	})
	if err != nil {
		return fmt.Errorf("building patch for event %s/%s: %w", r.opts.EventNamespace, name, err)
	}
	_, err = events.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	r.countWrite("event", err)
	if apierrors.IsNotFound(err) {
		// Events expire (the apiserver's event TTL); start a new one.
		e.exists, e.base, e.first = false, 0, e.last
		e.count = count
		return r.writeEvent(ctx, e)
	}
	if err != nil {
		return fmt.Errorf("updating event %s/%s: %w", r.opts.EventNamespace, name, err)
	}
	e.written = count
	return nil
}

func (r *Reporter) countWrite(object string, err error) {
	r.writes.Add(1)
	result := "ok"
	if err != nil {
		result = "error"
	}
	r.writesMetric.WithLabelValues(object, result).Inc()
}

// fail records a failed write, schedules a retry and, once contact counts
// as lost, writes the console summary.
func (r *Reporter) fail(ctx context.Context, now time.Time, err error) {
	if ctx.Err() != nil {
		return // shutting down, not cut off
	}
	r.failures++
	if r.lostSince.IsZero() {
		r.lostSince = now
	}
	r.errs = append(r.errs, console.Error{Time: now, Err: err.Error()})
	if len(r.errs) > maxErrors {
		r.errs = slices.Delete(r.errs, 0, len(r.errs)-maxErrors)
	}
	delay := r.delays.Step()
	r.retryAt = now.Add(delay)
	r.opts.Logger.Warn("writing node health failed; retrying", "node", r.node, "err", err, "backoff", delay, "failedWrites", r.failures)
	if r.failures >= r.opts.ContactLostAfter && r.opts.Console != nil {
		if _, err := r.opts.Console.Write(r.summary()); err != nil {
			r.opts.Logger.Error("writing health summary to the console", "err", err)
		}
	}
}

// summary is the picture in the console's terms.
func (r *Reporter) summary() console.Summary {
	s := console.Summary{Node: r.node, LostSince: r.lostSince, FailedWrites: r.failures, Errors: slices.Clone(r.errs)}
	for _, c := range health.Conditions() {
		cur := r.conds[c]
		s.Conditions = append(s.Conditions, console.Condition{Type: string(c), Status: string(cur.status), Reason: cur.reason, Message: cur.message, Since: cur.since})
	}
	var ps []*problem
	for _, p := range r.active {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, byFirst)
	for _, p := range ps {
		s.Problems = append(s.Problems, console.Problem{Reason: p.reason.Name, Condition: string(p.reason.Condition),
			Severity: p.severity.String(), Count: p.count, Last: p.last, Message: p.message})
	}
	return s
}

// nextWake is how long the loop may sleep before something is due.
func (r *Reporter) nextWake(now time.Time) time.Duration {
	next := now.Add(r.opts.HeartbeatInterval)
	earlier := func(t time.Time) {
		if t.Before(next) {
			next = t
		}
	}
	if r.node == "" {
		earlier(now.Add(time.Second)) // NodeName has no notification; poll it
	}
	if !r.retryAt.IsZero() {
		earlier(r.retryAt)
	}
	if !r.lastWrite.IsZero() {
		earlier(r.lastWrite.Add(r.opts.HeartbeatInterval))
	}
	for _, p := range r.active {
		switch {
		case !p.reason.Recovery.Probe:
			earlier(p.last.Add(p.reason.Recovery.QuietPeriod))
		case p.carried:
			earlier(p.last.Add(r.opts.CarryOverGrace))
		}
	}
	for _, e := range r.events {
		if e.exists && e.base+e.count == e.written {
			continue
		}
		earlier(now.Add(max(tokenWait(e.limiter, now), tokenWait(r.allEvents, now))))
	}
	return max(next.Sub(now), time.Millisecond)
}

// tokenWait is how long until l has a whole token.
func tokenWait(l *rate.Limiter, now time.Time) time.Duration {
	missing := 1 - l.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing / float64(l.Limit()) * float64(time.Second))
}
