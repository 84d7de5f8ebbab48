package journal

import (
	"regexp"
	"strings"

	"github.com/autonode/autonode/health"
)

// Reasons for log-derived problems that health/reasons.go does not list.
// They resolve in the reporter as unknown reasons: a Warning with no repair.
// Log lines are evidence, not a probe, so none of these is a probe reason:
// nothing would ever send Cleared for them.
const (
	// ReasonKubeletPLEGUnhealthy: the kubelet's pod lifecycle event
	// generator is stalled, usually because the runtime is slow to answer.
	ReasonKubeletPLEGUnhealthy = "KubeletPLEGUnhealthy"
	// ReasonContainerCreateFailed: containerd or the OCI runtime (runc)
	// failed to create a container's task.
	ReasonContainerCreateFailed = "ContainerCreateFailed"
	// ReasonContainerMountFailed: a container's rootfs or a volume could not
	// be mounted.
	ReasonContainerMountFailed = "ContainerMountFailed"
	// ReasonTooManyOpenFiles: a process hit its file descriptor limit.
	ReasonTooManyOpenFiles = "TooManyOpenFiles"
	// ReasonJournalReadError (Info): a journal file is corrupt or truncated
	// and was skipped; problems logged in it may have been missed.
	ReasonJournalReadError = "JournalReadError"
	// ReasonJournalCursorCorrupted (Info): the resume cursor was unusable,
	// so the monitor started afresh.
	ReasonJournalCursorCorrupted = "JournalCursorCorrupted"
	// ReasonJournalDisabled (Info): there is no journal to read on this node.
	ReasonJournalDisabled = "JournalMonitorDisabled"
)

// Rule maps journal messages that match Pattern to a signal. The first
// matching rule wins, so put specific causes (a full disk) before the
// generic failures they appear in (a failed container create).
type Rule struct {
	// Reason is a name from the reporter's catalogue or one above.
	Reason    string
	Condition health.Condition
	Severity  health.Severity
	// Units limits the rule to entries from these units; empty means any of
	// the monitored units.
	Units []string
	// Literal is text every match contains, compared case-insensitively
	// before Pattern runs: most lines match nothing, and a substring
	// search is far cheaper than a regexp.
	Literal string
	// Pattern is matched against MESSAGE. Its named groups are available
	// to Detail.
	Pattern *regexp.Regexp
	// Detail is expanded with Pattern's submatches into the summary.
	Detail string
}

// catalogueSeverity is the catalogue's default for a reason, so that rules
// for catalogue reasons cannot drift from it.
func catalogueSeverity(reason string, fallback health.Severity) health.Severity {
	for _, r := range health.DefaultReasons() {
		if r.Name == reason {
			return r.Severity
		}
	}
	return fallback
}

// DefaultRules returns the built-in rules, compiled afresh on each call.
// The texts come from the kubelet (pkg/kubelet/pleg, kubelet.go), containerd
// (core/runtime/v2, cmd/containerd-shim-runc-v2) and runc, whose errors the
// kubelet repeats; docs/health.md, "Journal monitor", lists them.
func DefaultRules() []Rule {
	return []Rule{
		{
			// ENOSPC anywhere: image pulls, snapshots, container logs.
			Reason: health.ReasonDiskPressure, Condition: health.StorageReady,
			Severity: catalogueSeverity(health.ReasonDiskPressure, health.Warning),
			Literal:  "no space left on device",
			Pattern:  regexp.MustCompile(`(?i)(?:(?P<path>/[^\s:"]+)\S*:?\s+)?no space left on device`),
			Detail:   "no space left on device $path",
		},
		{
			// EMFILE/ENFILE: "too many open files" (and inotify's "too many
			// open files" from fsnotify in the kubelet).
			Reason: ReasonTooManyOpenFiles, Condition: health.KernelReady, Severity: health.Warning,
			Literal: "too many open files",
			Pattern: regexp.MustCompile(`(?i)too many open files`),
			Detail:  "too many open files",
		},
		{
			// pkg/kubelet/pleg/generic.go Healthy(): "pleg was last seen
			// active %v ago; threshold is %v"; kubelet.go wraps it as
			// "PLEG is not healthy: ...".
			Reason: ReasonKubeletPLEGUnhealthy, Condition: health.ContainerRuntimeReady, Severity: health.Warning,
			Literal: "pleg is not healthy",
			Pattern: regexp.MustCompile(`PLEG is not healthy: pleg (?P<state>was last seen active \S+ ago|has yet to be successful)`),
			Detail:  "kubelet PLEG is not healthy: pleg $state",
		},
		{
			// runc's error, relayed by the shim: "OCI runtime create failed:
			// runc create failed: unable to start container process: ...".
			Reason: ReasonContainerCreateFailed, Condition: health.ContainerRuntimeReady, Severity: health.Warning,
			Literal: "oci runtime create failed",
			Pattern: regexp.MustCompile(`OCI runtime create failed: (?P<err>[^"\n]{0,200})`),
			Detail:  "OCI runtime create failed: $err",
		},
		{
			// containerd's CRI: "failed to create containerd task: ...".
			Reason: ReasonContainerCreateFailed, Condition: health.ContainerRuntimeReady, Severity: health.Warning,
			Literal: "failed to create containerd task",
			Pattern: regexp.MustCompile(`failed to create containerd task: (?P<err>[^"\n]{0,200})`),
			Detail:  "failed to create containerd task: $err",
		},
		{
			// containerd's mount errors ("failed to mount rootfs component",
			// "failed to mount /run/containerd/...: ...") and the kubelet's
			// volume ones ("MountVolume.SetUp failed ...").
			Reason: ReasonContainerMountFailed, Condition: health.ContainerRuntimeReady, Severity: health.Warning,
			Literal: "mount",
			Pattern: regexp.MustCompile(`(?i)(?P<what>failed to mount|MountVolume\.\w+ failed)(?P<err>[^\n]{0,200})`),
			Detail:  "$what$err",
		},
	}
}

// match is a rule that matched, with its expanded detail.
type match struct {
	rule   *Rule
	detail string
}

// apply returns the first rule in rules that matches message from unit.
func apply(rules []Rule, unit, message string) (match, bool) {
	var lower string
	for i := range rules {
		r := &rules[i]
		if len(r.Units) > 0 && !contains(r.Units, unit) {
			continue
		}
		if r.Literal != "" {
			if lower == "" {
				lower = strings.ToLower(message)
			}
			if !strings.Contains(lower, strings.ToLower(r.Literal)) {
				continue
			}
		}
		idx := r.Pattern.FindStringSubmatchIndex(message)
		if idx == nil {
			continue
		}
		d := string(r.Pattern.ExpandString(nil, r.Detail, message, idx))
		return match{rule: r, detail: strings.TrimSpace(d)}, true
	}
	return match{}, false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
