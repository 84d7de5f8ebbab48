package health

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// Conditions returns the five node conditions autonode owns, in the order
// they are written and documented.
func Conditions() []Condition {
	return []Condition{KernelReady, NetworkingReady, StorageReady, AcceleratedHardwareReady, ContainerRuntimeReady}
}

// HealthyReason is the reason a condition carries while it is True, in the
// style of the node-problem-detector's "KernelHasNoProblems".
func HealthyReason(c Condition) string {
	return strings.TrimSuffix(string(c), "Ready") + "HasNoProblems"
}

// Action is the repair that a reason asks for when it is active.
type Action string

// The repair actions. Only the restarts and reboot act on the node itself;
// replace leaves the condition False for the provisioner to act on.
const (
	ActionNone              Action = "none"
	ActionRestartKubelet    Action = "restart-kubelet"
	ActionRestartContainerd Action = "restart-containerd"
	ActionReboot            Action = "reboot"
	ActionReplace           Action = "replace"
)

// Recovery says when an active reason counts as gone.
type Recovery struct {
	// Probe reasons clear only on a Signal with Cleared set: a check that
	// failed has passed again.
	Probe bool
	// QuietPeriod clears a reason once this long has passed without a
	// repeat (or earlier, on a Cleared signal). Used when Probe is false.
	QuietPeriod time.Duration
}

// String is "probe" or "quiet <duration>".
func (r Recovery) String() string {
	if r.Probe {
		return "probe"
	}
	return "quiet " + shortDuration(r.QuietPeriod)
}

// Reason is one entry of the catalogue: what a signal's Reason means for the
// node.
type Reason struct {
	Name string
	// Condition is the node condition the reason bears on. Empty means the
	// reporting subsystem decides: the Signal's own Condition is used.
	Condition Condition
	// Severity is the default severity; configuration may override it.
	Severity Severity
	// SignalSeverity means the emitter classifies each occurrence (an Xid
	// code, a Neuron error class), so a signal's own Severity is used unless
	// configuration overrides it; Severity is then what it usually is.
	SignalSeverity bool
	Recovery       Recovery
	Action         Action
	// Description is one line for humans and the docs.
	Description string
}

// Reason names. Emitters should use these constants.
const (
	// Kernel, from the kmsg monitor.
	ReasonKernelSoftLockup = "KernelSoftLockup"
	ReasonKernelHungTask   = "KernelHungTask"
	ReasonOOMKill          = "OOMKill"
	ReasonSegfault         = "Segfault"
	ReasonConntrackFull    = "ConntrackFull"
	ReasonPIDExhausted     = "PIDExhausted"
	ReasonBlockIOError     = "BlockIOError"
	ReasonXFSError         = "XFSError"
	ReasonNvidiaXid        = "NvidiaXid"
	ReasonNeuronHardware   = "NeuronHardwareError"
	ReasonEFAError         = "EFAError"
	ReasonKmsgRecordsLost  = "KmsgRecordsLost"
	// ReasonKmsgCursorCorrupted: the kmsg monitor's resume cursor was
	// unreadable, so it started from the ring buffer's start.
	ReasonKmsgCursorCorrupted = "KmsgCursorCorrupted"
	// Agent and device plugins.
	ReasonSubsystemFailed  = "SubsystemFailed"
	ReasonDeviceUnhealthy  = "DeviceUnhealthy"
	ReasonDeviceRecovered  = "DeviceRecovered"
	ReasonGPUCountMismatch = "GPUCountMismatch"
	// Runtime, storage, time and network monitors.
	ReasonContainerdUnresponsive   = "ContainerdUnresponsive"
	ReasonContainerdSnapshotFailed = "ContainerdSnapshotFailed"
	ReasonKubeletUnhealthy         = "KubeletUnhealthy"
	ReasonReadOnlyFilesystem       = "ReadOnlyFilesystem"
	ReasonDiskPressure             = "DiskPressure"
	ReasonInstanceStoreNotMounted  = "InstanceStoreNotMounted"
	ReasonClockUnsynchronized      = "ClockUnsynchronized"
	ReasonIPAMExhausted            = "IPAMExhausted"
	ReasonInterfaceDown            = "InterfaceDown"
	ReasonRouteMissing             = "RouteMissing"
	ReasonBPFProgramDetached       = "BPFProgramDetached"
	ReasonIPAMPrefixFallback       = "IPAMPrefixFallback"
	ReasonIPAMCheckpointCorrupt    = "IPAMCheckpointCorrupt"
	// The journal and system monitors.
	ReasonKubeletPLEGUnhealthy   = "KubeletPLEGUnhealthy"
	ReasonContainerCreateFailed  = "ContainerCreateFailed"
	ReasonContainerMountFailed   = "ContainerMountFailed"
	ReasonTooManyOpenFiles       = "TooManyOpenFiles"
	ReasonJournalReadError       = "JournalReadError"
	ReasonJournalCursorCorrupted = "JournalCursorCorrupted"
	ReasonJournalMonitorDisabled = "JournalMonitorDisabled"
	ReasonSystemCheckDisabled    = "SystemCheckDisabled"
	// The health subsystem's own.
	ReasonRepairAttempted       = "RepairAttempted"
	ReasonRepairFailed          = "RepairFailed"
	ReasonRepairBudgetExhausted = "RepairBudgetExhausted"
)

func quiet(d time.Duration) Recovery { return Recovery{QuietPeriod: d} }

func probe() Recovery { return Recovery{Probe: true} }

// DefaultReasons returns the built-in catalogue, a fresh slice on each call.
// docs/health.md documents it as a table; keep the two in step.
func DefaultReasons() []Reason {
	return []Reason{
		// KernelReady.
		{ReasonKernelSoftLockup, KernelReady, Warning, false, quiet(10 * time.Minute), ActionNone, "a CPU was stuck in kernel mode (soft lockup)"},
		{ReasonKernelHungTask, KernelReady, Warning, false, quiet(10 * time.Minute), ActionNone, "a task was blocked in D state past hung_task_timeout"},
		{ReasonOOMKill, KernelReady, Warning, false, quiet(5 * time.Minute), ActionNone, "the kernel OOM killer killed a process"},
		{ReasonSegfault, KernelReady, Info, false, quiet(5 * time.Minute), ActionNone, "a user process segfaulted"},
		{ReasonPIDExhausted, KernelReady, Fatal, false, quiet(10 * time.Minute), ActionReplace, "fork failed: the PID space is exhausted"},
		{ReasonKmsgRecordsLost, KernelReady, Info, false, quiet(10 * time.Minute), ActionNone, "the kmsg monitor missed records (ring buffer overrun)"},
		{ReasonKmsgCursorCorrupted, KernelReady, Info, false, quiet(10 * time.Minute), ActionNone, "the kmsg monitor could not read its resume cursor and started afresh"},
		{ReasonClockUnsynchronized, KernelReady, Warning, false, probe(), ActionNone, "the system clock is not synchronised"},
		{ReasonTooManyOpenFiles, KernelReady, Warning, false, quiet(10 * time.Minute), ActionNone, "the kubelet or containerd logged too many open files"},
		{ReasonJournalReadError, KernelReady, Info, false, quiet(10 * time.Minute), ActionNone, "the journal monitor met a corrupt or truncated journal file"},
		{ReasonJournalCursorCorrupted, KernelReady, Info, false, quiet(10 * time.Minute), ActionNone, "the journal monitor could not read its resume cursor and started afresh"},
		{ReasonJournalMonitorDisabled, KernelReady, Info, false, quiet(10 * time.Minute), ActionNone, "there is no journal to read; the journal monitor is off"},
		{ReasonSystemCheckDisabled, KernelReady, Info, false, quiet(10 * time.Minute), ActionNone, "a system check has nothing to read here (no conntrack, say) and is off"},
		// NetworkingReady.
		{ReasonConntrackFull, NetworkingReady, Warning, false, quiet(10 * time.Minute), ActionNone, "the conntrack table is full; packets are dropped"},
		{ReasonIPAMExhausted, NetworkingReady, Warning, false, quiet(5 * time.Minute), ActionNone, "no pod IP address could be allocated"},
		{ReasonIPAMPrefixFallback, NetworkingReady, Warning, false, quiet(30 * time.Minute), ActionNone, "no free /28 in a subnet; IPAM hands out secondary IPs there instead"},
		{ReasonIPAMCheckpointCorrupt, NetworkingReady, Warning, false, quiet(30 * time.Minute), ActionNone, "the IPAM checkpoint was unreadable; kept aside and rebuilt from the runtime and EC2"},
		{ReasonInterfaceDown, NetworkingReady, Fatal, false, probe(), ActionReplace, "a primary or pod network interface is down"},
		{ReasonRouteMissing, NetworkingReady, Fatal, false, probe(), ActionNone, "a route the node needs is missing"},
		{ReasonBPFProgramDetached, NetworkingReady, Fatal, false, probe(), ActionNone, "a NetworkPolicy BPF program is not attached"},
		// StorageReady.
		{ReasonBlockIOError, StorageReady, Warning, false, quiet(10 * time.Minute), ActionNone, "a block device reported an I/O error"},
		{ReasonXFSError, StorageReady, Warning, false, quiet(10 * time.Minute), ActionNone, "XFS reported corruption or an error"},
		{ReasonReadOnlyFilesystem, StorageReady, Fatal, false, probe(), ActionReplace, "a filesystem the node writes to is read-only"},
		{ReasonDiskPressure, StorageReady, Warning, false, quiet(5 * time.Minute), ActionNone, "a filesystem is nearly full"},
		{ReasonInstanceStoreNotMounted, StorageReady, Fatal, false, probe(), ActionReplace, "the instance store is not mounted and bound as setup left it"},
		// AcceleratedHardwareReady.
		{ReasonNvidiaXid, AcceleratedHardwareReady, Warning, true, quiet(30 * time.Minute), ActionReplace, "the NVIDIA driver reported an Xid error; the emitter sets Fatal for fatal codes"},
		{ReasonNeuronHardware, AcceleratedHardwareReady, Fatal, true, quiet(30 * time.Minute), ActionReplace, "a Neuron device reported a hardware error"},
		{ReasonEFAError, AcceleratedHardwareReady, Warning, false, quiet(10 * time.Minute), ActionNone, "an EFA device reported an error"},
		{ReasonGPUCountMismatch, AcceleratedHardwareReady, Fatal, false, quiet(10 * time.Minute), ActionReplace, "fewer GPUs are usable than the instance type has"},
		{ReasonDeviceUnhealthy, AcceleratedHardwareReady, Warning, false, quiet(10 * time.Minute), ActionNone, "a device plugin marked a device unhealthy"},
		{ReasonDeviceRecovered, AcceleratedHardwareReady, Info, false, quiet(time.Minute), ActionNone, "a device plugin marked a device healthy again"},
		// ContainerRuntimeReady.
		{ReasonContainerdUnresponsive, ContainerRuntimeReady, Fatal, false, probe(), ActionRestartContainerd, "containerd does not answer on its socket"},
		{ReasonContainerdSnapshotFailed, ContainerRuntimeReady, Fatal, false, probe(), ActionRestartContainerd, "containerd cannot prepare snapshots"},
		{ReasonKubeletPLEGUnhealthy, ContainerRuntimeReady, Warning, false, quiet(10 * time.Minute), ActionNone, "the kubelet logged that PLEG is not healthy"},
		{ReasonContainerCreateFailed, ContainerRuntimeReady, Warning, false, quiet(10 * time.Minute), ActionNone, "containerd or the OCI runtime failed to create a container"},
		{ReasonContainerMountFailed, ContainerRuntimeReady, Warning, false, quiet(10 * time.Minute), ActionNone, "a container's mounts failed"},
		{ReasonKubeletUnhealthy, ContainerRuntimeReady, Warning, false, probe(), ActionRestartKubelet, "the kubelet's healthz endpoint fails"},
		// Condition from the signal.
		{ReasonSubsystemFailed, "", Warning, false, quiet(5 * time.Minute), ActionNone, "an agent subsystem failed and is being restarted (source = subsystem)"},
		{ReasonRepairAttempted, "", Info, false, quiet(time.Minute), ActionNone, "the agent started a local repair (unit restart or reboot)"},
		{ReasonRepairFailed, "", Warning, false, quiet(5 * time.Minute), ActionNone, "a local repair could not be carried out"},
		{ReasonRepairBudgetExhausted, "", Warning, false, quiet(time.Hour), ActionNone, "a local repair was skipped: its hourly budget is spent"},
	}
}

// UnknownReason is what a reason missing from the catalogue is treated as:
// a Warning with no repair, so that a new or misspelt reason can never make
// a node unfit by itself.
func UnknownReason(name string) Reason {
	return Reason{Name: name, Severity: Warning, Recovery: quiet(10 * time.Minute), Action: ActionNone,
		Description: "not in the catalogue"}
}

// Catalogue is the set of known reasons with configuration applied. It is
// immutable after NewCatalogue, so it is safe for concurrent use.
type Catalogue struct {
	byName    map[string]Reason
	overrides map[string]bool
}

// NewCatalogue returns the default catalogue with severities overridden by
// overrides (reason name → "info", "warning" or "fatal"). An unknown reason
// or severity is an error naming it.
func NewCatalogue(overrides map[string]string) (*Catalogue, error) {
	c := &Catalogue{byName: map[string]Reason{}, overrides: map[string]bool{}}
	for _, r := range DefaultReasons() {
		c.byName[r.Name] = r
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(overrides)) {
		r, ok := c.byName[name]
		if !ok {
			errs = append(errs, fmt.Errorf("severity override for unknown reason %q", name))
			continue
		}
		sev, err := ParseSeverity(overrides[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("severity override for reason %q: %w", name, err))
			continue
		}
		r.Severity = sev
		c.byName[name] = r
		c.overrides[name] = true
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// Lookup returns the catalogue entry for name.
func (c *Catalogue) Lookup(name string) (Reason, bool) {
	r, ok := c.byName[name]
	return r, ok
}

// Reasons returns every entry, sorted by condition then name.
func (c *Catalogue) Reasons() []Reason {
	out := make([]Reason, 0, len(c.byName))
	for _, r := range c.byName {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Condition != out[j].Condition {
			return out[i].Condition < out[j].Condition
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Resolve returns the entry for s.Reason with its Condition filled in and
// the severity that applies to s: the configured override, else the
// signal's own for SignalSeverity reasons, else the default. known is false
// for reasons missing from the catalogue, which resolve to UnknownReason.
func (c *Catalogue) Resolve(s Signal) (r Reason, sev Severity, known bool) {
	r, known = c.byName[s.Reason]
	if !known {
		r = UnknownReason(s.Reason)
	}
	if r.Condition == "" {
		r.Condition = s.Condition
	}
	sev = r.Severity
	if known && r.SignalSeverity && !c.overrides[r.Name] {
		sev = s.Severity
	}
	return r, sev, known
}

// ParseSeverity parses "info", "warning" or "fatal", in any case.
func ParseSeverity(s string) (Severity, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "info":
		return Info, nil
	case "warning":
		return Warning, nil
	case "fatal":
		return Fatal, nil
	}
	return 0, fmt.Errorf("unknown severity %q (want info, warning or fatal)", s)
}

// ValidCondition reports whether c is one of the five conditions.
func ValidCondition(c Condition) bool { return slices.Contains(Conditions(), c) }

// shortDuration prints 10m rather than 10m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
