package kernel

import (
	"regexp"
	"strings"
	"testing"

	"github.com/autonode/autonode/health"
)

func TestDefaultRules(t *testing.T) {
	tests := []struct {
		msg       string
		reason    string // empty: no rule may match
		condition health.Condition
		severity  health.Severity
		detail    string // a substring of the detail
	}{
		{"watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [kworker/3:1:1234]", health.ReasonKernelSoftLockup, health.KernelReady, health.Warning, "CPU 3 stuck for 23s [kworker/3:1:1234]"},
		{"BUG: soft lockup - CPU#0 stuck for 22s! [swapper/0:0]", health.ReasonKernelSoftLockup, health.KernelReady, health.Warning, "CPU 0 stuck for 22s"},
		{"INFO: task kworker/u16:2:812 blocked for more than 122 seconds.", health.ReasonKernelHungTask, health.KernelReady, health.Warning, "task kworker/u16:2 (pid 812) blocked for more than 122s"},
		{"INFO: task my task:99 blocked for more than 120 seconds.", health.ReasonKernelHungTask, health.KernelReady, health.Warning, "task my task (pid 99)"},
		{"Out of memory: Killed process 5123 (python3) total-vm:8123456kB, anon-rss:7000000kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:14000kB oom_score_adj:1000", health.ReasonOOMKill, health.KernelReady, health.Warning, "Out of memory: killed process 5123 (python3)"},
		{"Memory cgroup out of memory: Killed process 6234 (java) total-vm:4194304kB", health.ReasonOOMKill, health.KernelReady, health.Warning, "Memory cgroup out of memory: killed process 6234 (java)"},
		{"app[7345]: segfault at 0 ip 000055d0c0ffee00 sp 00007ffc12345678 error 4 in app[55d0c0ffe000+1000]", health.ReasonSegfault, health.KernelReady, health.Info, "app (pid 7345) segfault at 0"},
		{"kube proxy[12]: segfault at 7f00dead ip 00007f0000000000 sp 00007ffc00000000 error 6", health.ReasonSegfault, health.KernelReady, health.Info, "kube proxy (pid 12) segfault at 7f00dead"},
		{"nf_conntrack: nf_conntrack: table full, dropping packet", health.ReasonConntrackFull, health.NetworkingReady, health.Warning, "conntrack table full"},
		{"nf_conntrack: table full, dropping packet", health.ReasonConntrackFull, health.NetworkingReady, health.Warning, "conntrack table full"},
		{"cgroup: fork rejected by pids controller in /kubepods/burstable/pod1", health.ReasonPIDExhausted, health.KernelReady, health.Fatal, "in cgroup /kubepods/burstable/pod1"},
		{"bash: fork: retry: Resource temporarily unavailable", health.ReasonPIDExhausted, health.KernelReady, health.Fatal, "resource temporarily unavailable"},
		{"blk_update_request: I/O error, dev xvda, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0", health.ReasonBlockIOError, health.StorageReady, health.Warning, "I/O error on /dev/xvda at sector 2048 0x1:(WRITE)"},
		{"blk_update_request: I/O error, dev sdb, sector 100", health.ReasonBlockIOError, health.StorageReady, health.Warning, "I/O error on /dev/sdb at sector 100"},
		{"I/O error, dev nvme0n1, sector 123456 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2", health.ReasonBlockIOError, health.StorageReady, health.Warning, "/dev/nvme0n1 at sector 123456 0x0:(READ)"},
		{"critical medium error, dev sda, sector 9 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", health.ReasonBlockIOError, health.StorageReady, health.Warning, "critical medium error on /dev/sda"},
		{"Buffer I/O error on dev nvme1n1, logical block 0, async page read", health.ReasonBlockIOError, health.StorageReady, health.Warning, "logical block 0"},
		{"XFS (nvme1n1): Corruption detected. Unmount and run xfs_repair", health.ReasonXFSError, health.StorageReady, health.Fatal, "XFS on /dev/nvme1n1: Corruption detected"},
		{"XFS (dm-0): Filesystem has been shut down due to log error (0x2).", health.ReasonXFSError, health.StorageReady, health.Fatal, "/dev/dm-0"},
		{"XFS (nvme1n1): Log I/O Error (0x2) detected at xlog_ioend_work+0x6e/0x70 [xfs] (fs/xfs/xfs_log.c:1378).  Shutting down filesystem.", health.ReasonXFSError, health.StorageReady, health.Fatal, "Log I/O Error"},
		{`XFS (nvme1n1): metadata I/O error in "xfs_trans_read_buf_map" at daddr 0x2 len 1 error 5`, health.ReasonXFSError, health.StorageReady, health.Warning, "metadata I/O error"},
		{"NVRM: Xid (PCI:0000:10:1c): 79, pid=2871, name=python, GPU has fallen off the bus.", health.ReasonNvidiaXid, health.AcceleratedHardwareReady, health.Fatal, "Xid 79 on GPU PCI:0000:10:1c: pid=2871, name=python, GPU has fallen off the bus."},
		{"NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.", health.ReasonNvidiaXid, health.AcceleratedHardwareReady, health.Fatal, "Xid 79 on GPU PCI:0000:01:00"},
		{"NVRM: Xid (PCI:0000:3b:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error (DBE) has been detected on GPU.", health.ReasonNvidiaXid, health.AcceleratedHardwareReady, health.Fatal, "Xid 48"},
		{"NVRM: Xid (PCI:0000:00:06): 31, pid=79749, name=exe, Ch 0000000a, intr 00000000. MMU Fault", health.ReasonNvidiaXid, health.AcceleratedHardwareReady, health.Warning, "Xid 31 on GPU PCI:0000:00:06"},
		{"NEURON_HW_ERR=SRAM_UNCORRECTABLE_ERROR instance-id=i-0592464924bd45322 hostname=ip-172-31-61-252 nd-id=0 nc-id=0 serial-num=19fcda00f5ff6eb9 action=TERMINATE_INSTANCE", health.ReasonNeuronHardware, health.AcceleratedHardwareReady, health.Fatal, "SRAM_UNCORRECTABLE_ERROR: instance-id=i-0592464924bd45322 hostname=ip-172-31-61-252 nd-id=0 nc-id=0 serial-num=19fcda00f5ff6eb9 action=TERMINATE_INSTANCE"},
		{"neuron0: NEURON_HW_ERR=HBM_UNCORRECTABLE_ERROR device=0", health.ReasonNeuronHardware, health.AcceleratedHardwareReady, health.Fatal, "HBM_UNCORRECTABLE_ERROR: device=0"},
		{"efa 0000:10:1c.0 efa_0: Failed to process command DESTROY_QP (opcode 6) comp_status 7 err -22", health.ReasonEFAError, health.AcceleratedHardwareReady, health.Warning, "EFA device 0000:10:1c.0: Failed to process command"},
		{"efa 0000:00:06.0: Admin command timed out", health.ReasonEFAError, health.AcceleratedHardwareReady, health.Warning, "timed out"},

		// Near misses: benign lines that share words with the rules.
		{"efa 0000:10:1c.0: Setup irqs", "", "", 0, ""},
		{"XFS (nvme2n1): Mounting V5 Filesystem 8a3e6b1c", "", "", 0, ""},
		{"XFS (nvme2n1): Ending clean mount", "", "", 0, ""},
		{"operation not supported error, dev nvme0n1, sector 0 op 0x3:(DISCARD) flags 0x800 phys_seg 1 prio class 0", "", "", 0, ""},
		{"nf_conntrack: default automatic helper assignment has been turned off", "", "", 0, ""},
		{"NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.90.07", "", "", 0, ""},
		{"Killed process without a pid", "", "", 0, ""},
		{"segfault at the end of a sentence", "", "", 0, ""},
	}
	rules := DefaultRules()
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			m, ok := apply(rules, tt.msg)
			if tt.reason == "" {
				if ok {
					t.Fatalf("matched %s (%q), want no match", m.rule.Reason, m.detail)
				}
				return
			}
			if !ok {
				t.Fatalf("no rule matched, want %s", tt.reason)
			}
			if m.rule.Reason != tt.reason || m.rule.Condition != tt.condition || m.severity != tt.severity {
				t.Errorf("got %s/%s/%s, want %s/%s/%s", m.rule.Reason, m.rule.Condition, m.severity,
					tt.reason, tt.condition, tt.severity)
			}
			if !strings.Contains(m.detail, tt.detail) {
				t.Errorf("detail %q does not contain %q", m.detail, tt.detail)
			}
		})
	}
}

// TestRuleLiterals checks that each rule's Literal prefilter appears
// verbatim in its Pattern: a literal the pattern does not require would make
// the rule silently dead.
func TestRuleLiterals(t *testing.T) {
	for _, r := range DefaultRules() {
		if r.Literal == "" {
			t.Errorf("rule %s (%s) has no Literal prefilter", r.Reason, r.Pattern)
			continue
		}
		if !strings.Contains(r.Pattern.String(), regexp.QuoteMeta(r.Literal)) {
			t.Errorf("rule %s: Literal %q does not appear in its pattern %s", r.Reason, r.Literal, r.Pattern)
		}
	}
}

// TestRulesMatchCatalogue keeps the rule table in step with the reporter's
// catalogue: each reason exists there, bears on the same condition and has
// the same default severity.
func TestRulesMatchCatalogue(t *testing.T) {
	cat := map[string]health.Reason{}
	for _, r := range health.DefaultReasons() {
		cat[r.Name] = r
	}
	for _, r := range DefaultRules() {
		c, ok := cat[r.Reason]
		if !ok {
			t.Errorf("rule reason %s is not in the catalogue", r.Reason)
			continue
		}
		if c.Condition != "" && c.Condition != r.Condition {
			t.Errorf("rule %s: condition %s, catalogue says %s", r.Reason, r.Condition, c.Condition)
		}
		if c.Severity != r.Severity {
			t.Errorf("rule %s: default severity %s, catalogue says %s", r.Reason, r.Severity, c.Severity)
		}
	}
	if c, ok := cat[health.ReasonKmsgRecordsLost]; !ok || c.Condition != health.KernelReady || c.Severity != health.Info {
		t.Errorf("catalogue entry for %s = %+v, %v; the monitor sends KernelReady/Info", health.ReasonKmsgRecordsLost, c, ok)
	}
}
