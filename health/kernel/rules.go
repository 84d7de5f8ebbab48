package kernel

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/autonode/autonode/health"
)

// ReasonCursorCorrupted is reported (Info) when the resume cursor cannot be
// used. The reporter's catalogue (health/reasons.go) does not list it yet,
// so it resolves there as an unknown reason: a Warning with no repair.
const ReasonCursorCorrupted = "KmsgCursorCorrupted"

// Rule maps kernel messages that match Pattern to a signal.
type Rule struct {
	// Reason is a name from the reporter's catalogue (health.Reason*).
	Reason    string
	Condition health.Condition
	// Severity is the signal's severity unless Classify says otherwise.
	Severity health.Severity
	// Literal is text every match contains. It is checked with
	// strings.Contains before Pattern runs, because nearly every kernel line
	// matches no rule and a substring search is far cheaper than a regexp.
	Literal string
	// Pattern is matched against the whole message text.
	Pattern *regexp.Regexp
	// Detail is expanded with Pattern's submatches ($name, ${name}) into the
	// signal's summary of what happened.
	Detail string
	// Classify, when set, picks the severity from the submatches, for reasons
	// whose gravity depends on the details (XFS, NVIDIA Xid).
	Classify func(m map[string]string) health.Severity
}

// DefaultRules returns the built-in rule table, compiled afresh on each call.
// Sources of each pattern are in docs/health.md, "Kernel monitor".
func DefaultRules() []Rule {
	return []Rule{
		{
			// kernel/watchdog.c; "watchdog: " is its pr_fmt since 4.15.
			Reason: health.ReasonKernelSoftLockup, Literal: "soft lockup", Condition: health.KernelReady, Severity: health.Warning,
			Pattern: regexp.MustCompile(`BUG: soft lockup - CPU#(?P<cpu>\d+) stuck for (?P<secs>\d+)s!(?: \[(?P<task>.*)\])?`),
			Detail:  "soft lockup: CPU $cpu stuck for ${secs}s [$task]",
		},
		{
			// kernel/hung_task.c. The task name may hold spaces and colons.
			Reason: health.ReasonKernelHungTask, Literal: "blocked for more than", Condition: health.KernelReady, Severity: health.Warning,
			Pattern: regexp.MustCompile(`^INFO: task (?P<task>.+):(?P<pid>\d+) blocked for more than (?P<secs>\d+) seconds\.`),
			Detail:  "task $task (pid $pid) blocked for more than ${secs}s",
		},
		{
			// mm/oom_kill.c __oom_kill_process: "%s: Killed process %d (%s) ...",
			// where %s names the global or the memory-cgroup OOM killer.
			Reason: health.ReasonOOMKill, Literal: "Killed process", Condition: health.KernelReady, Severity: health.Warning,
			Pattern: regexp.MustCompile(`^(?P<scope>Out of memory|Memory cgroup out of memory): Killed process (?P<pid>\d+) \((?P<comm>.*?)\)`),
			Detail:  "$scope: killed process $pid ($comm)",
		},
		{
			// arch/x86/mm/fault.c show_signal_msg (and arm64's equivalent).
			Reason: health.ReasonSegfault, Literal: "segfault at", Condition: health.KernelReady, Severity: health.Info,
			Pattern: regexp.MustCompile(`^(?P<comm>.+?)\[(?P<pid>\d+)\]: segfault at (?P<addr>[0-9a-fx]+)`),
			Detail:  "$comm (pid $pid) segfault at $addr",
		},
		{
			// net/netfilter/nf_conntrack_core.c: "nf_conntrack: table full,
			// dropping packet", printed as "nf_conntrack: nf_conntrack: ..."
			// on kernels whose pr_fmt adds the module name.
			Reason: health.ReasonConntrackFull, Literal: "table full", Condition: health.NetworkingReady, Severity: health.Warning,
			Pattern: regexp.MustCompile(`nf_conntrack: table full, dropping packet`),
			Detail:  "conntrack table full, dropping packets",
		},
		{
			// kernel/cgroup/pids.c pids_event; the path follows via pr_cont.
			Reason: health.ReasonPIDExhausted, Condition: health.KernelReady, Severity: health.Fatal,
			Literal: "fork rejected",
			Pattern: regexp.MustCompile(`cgroup: fork rejected by pids controller in ?(?P<cgroup>\S*)`),
			Detail:  "fork rejected by the pids controller in cgroup $cgroup",
		},
		{
			// bash's message when fork(2) returns EAGAIN; only seen in kmsg
			// when something (a logger, a test) writes it there.
			Reason: health.ReasonPIDExhausted, Condition: health.KernelReady, Severity: health.Fatal,
			Literal: "fork: retry",
			Pattern: regexp.MustCompile(`fork: retry: Resource temporarily unavailable`),
			Detail:  "fork failed: resource temporarily unavailable",
		},
		{
			// block/blk-core.c print_req_error (<5.16: "blk_update_request: "
			// prefix) and blk-mq.c blk_print_req_error (5.16+, no prefix).
			// The status names come from blk_errors[]; those that are not a
			// device failure (not supported, retry, kernel resource) are left out.
			Reason: health.ReasonBlockIOError, Condition: health.StorageReady, Severity: health.Warning,
			Literal: " error, dev ",
			Pattern: regexp.MustCompile(`(?:^|: )(?P<kind>I/O|critical medium|critical target|critical nexus|recoverable transport|timeout|protection|device offline) error, dev (?P<dev>[^,\s]+), sector (?P<sector>\d+)(?: op (?P<op>0x[0-9a-f]+:\(\w+\)))?`),
			Detail:  "$kind error on /dev/$dev at sector $sector $op",
		},
		{
			// fs/buffer.c buffer_io_error.
			Reason: health.ReasonBlockIOError, Condition: health.StorageReady, Severity: health.Warning,
			Literal: "Buffer I/O error",
			Pattern: regexp.MustCompile(`^Buffer I/O error on dev (?P<dev>[^,\s]+), logical block (?P<block>\d+)`),
			Detail:  "buffer I/O error on /dev/$dev at logical block $block",
		},
		{
			// fs/xfs/xfs_message.c prefixes "XFS (dev): "; the texts are from
			// xfs_fsops.c xfs_do_force_shutdown ("Filesystem has been shut
			// down", "Corruption of in-memory data ... Shutting down
			// filesystem"), xfs_buf.c ("metadata I/O error"), xfs_error.c
			// ("Corruption detected").
			Reason: health.ReasonXFSError, Condition: health.StorageReady, Severity: health.Warning,
			Literal: "XFS (",
			Pattern: regexp.MustCompile(`^XFS \((?P<dev>[^)]+)\): (?P<what>.*(?:(?i:error)|Corruption|shut down|Shutting down).*)$`),
			Detail:  "XFS on /dev/$dev: $what",
			Classify: func(m map[string]string) health.Severity {
				// A shut-down or corrupted filesystem stays broken until
				// repaired; a single I/O error may be retried.
				if w := m["what"]; strings.Contains(w, "shut down") || strings.Contains(w, "Shutting down") ||
					strings.Contains(w, "Corruption") {
					return health.Fatal
				}
				return health.Warning
			},
		},
		{
			// NVIDIA driver: "NVRM: Xid (PCI:0000:10:1c): 79, pid=..., name=...,
			// <text>"; older drivers omit pid/name. See NVIDIA's Xid catalogue.
			Reason: health.ReasonNvidiaXid, Literal: "NVRM: Xid", Condition: health.AcceleratedHardwareReady, Severity: health.Warning,
			Pattern: regexp.MustCompile(`NVRM: Xid \((?:PCI:)?(?P<pci>[0-9a-fA-F:.]+)\): (?P<xid>\d+),\s*(?P<text>.*)$`),
			Detail:  "Xid $xid on GPU PCI:$pci: $text",
			Classify: func(m map[string]string) health.Severity {
				xid, _ := strconv.Atoi(m["xid"])
				return xidSeverity(xid)
			},
		},
		{
			// Neuron driver: "NEURON_HW_ERR=<TYPE> instance-id=... nd-id=N
			// nc-id=N serial-num=... action=...", per the Neuron SDK's
			// troubleshooting guide. Every type it lists is uncorrectable.
			Reason: health.ReasonNeuronHardware, Literal: "NEURON_HW_ERR=", Condition: health.AcceleratedHardwareReady, Severity: health.Fatal,
			Pattern: regexp.MustCompile(`NEURON_HW_ERR=(?P<type>\S+)(?P<fields>.*)$`),
			Detail:  "Neuron hardware error $type:$fields",
		},
		{
			// drivers/infiniband/hw/efa: dev_err/ibdev_err lines start with
			// "efa <pci>" (then the ib device, e.g. "efa_0").
			Reason: health.ReasonEFAError, Literal: "efa ", Condition: health.AcceleratedHardwareReady, Severity: health.Warning,
			Pattern: regexp.MustCompile(`^efa (?P<pci>[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])(?: [\w.-]+)?: (?P<text>.*(?i:error|fail|timeout|timed out).*)$`),
			Detail:  "EFA device $pci: $text",
		},
	}
}

// xidSeverity is Fatal for the Xids that NVIDIA's catalogue says need a GPU
// reset or a node reboot (hardware or uncontained errors); the rest are
// usually an application's fault and are warnings.
func xidSeverity(xid int) health.Severity {
	switch xid {
	case 48, // double-bit ECC error
		62,  // internal micro-controller halt
		64,  // ECC page retirement or row remapping failure
		74,  // NVLink error
		79,  // GPU has fallen off the bus
		95,  // uncontained ECC error
		109, // context switch timeout
		119, // GSP RPC timeout
		120, // GSP error
		140: // unrecovered ECC error
		return health.Fatal
	}
	return health.Warning
}

// match is a rule that matched, with its named submatches.
type match struct {
	rule     *Rule
	detail   string
	severity health.Severity
}

// apply returns the first rule in rules that matches msg.
func apply(rules []Rule, msg string) (match, bool) {
	for i := range rules {
		r := &rules[i]
		if r.Literal != "" && !strings.Contains(msg, r.Literal) {
			continue
		}
		idx := r.Pattern.FindStringSubmatchIndex(msg)
		if idx == nil {
			continue
		}
		m := match{rule: r, severity: r.Severity}
		m.detail = strings.TrimSpace(string(r.Pattern.ExpandString(nil, r.Detail, msg, idx)))
		if r.Classify != nil {
			groups := make(map[string]string, r.Pattern.NumSubexp())
			for i, name := range r.Pattern.SubexpNames() {
				if name != "" && idx[2*i] >= 0 {
					groups[name] = msg[idx[2*i]:idx[2*i+1]]
				}
			}
			m.severity = r.Classify(groups)
		}
		return m, true
	}
	return match{}, false
}
