package health

import (
	"os"
	"strings"
	"testing"
)

func TestDefaultReasonsAreWellFormed(t *testing.T) {
	actions := map[Action]bool{ActionNone: true, ActionRestartKubelet: true, ActionRestartContainerd: true, ActionReboot: true, ActionReplace: true}
	seen := map[string]bool{}
	for _, r := range DefaultReasons() {
		t.Run(r.Name, func(t *testing.T) {
			if seen[r.Name] {
				t.Errorf("reason %s listed twice", r.Name)
			}
			seen[r.Name] = true
			if r.Condition != "" && !ValidCondition(r.Condition) {
				t.Errorf("condition %q is not one of the five", r.Condition)
			}
			if r.Severity == Fatal && r.Condition == "" {
				t.Error("a Fatal reason must name its condition")
			}
			if r.Recovery.Probe == (r.Recovery.QuietPeriod > 0) {
				t.Errorf("recovery %+v: want either probe or a quiet period", r.Recovery)
			}
			if !actions[r.Action] {
				t.Errorf("action %q unknown", r.Action)
			}
			if r.Description == "" {
				t.Error("no description")
			}
		})
	}
}

// TestCatalogueHasTheIssueReasons pins the names that emitters use.
func TestCatalogueHasTheIssueReasons(t *testing.T) {
	cat, err := NewCatalogue(nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		cond     Condition
		severity Severity
		probe    bool
		action   Action
	}{
		{"KernelSoftLockup", KernelReady, Warning, false, ActionNone},
		{"KernelHungTask", KernelReady, Warning, false, ActionNone},
		{"OOMKill", KernelReady, Warning, false, ActionNone},
		{"Segfault", KernelReady, Info, false, ActionNone},
		{"ConntrackFull", NetworkingReady, Warning, false, ActionNone},
		{"PIDExhausted", KernelReady, Fatal, false, ActionReplace},
		{"BlockIOError", StorageReady, Warning, false, ActionNone},
		{"XFSError", StorageReady, Warning, false, ActionNone},
		{"NvidiaXid", AcceleratedHardwareReady, Warning, false, ActionReplace},
		{"NeuronHardwareError", AcceleratedHardwareReady, Fatal, false, ActionReplace},
		{"EFAError", AcceleratedHardwareReady, Warning, false, ActionNone},
		{"KmsgRecordsLost", KernelReady, Info, false, ActionNone},
		{"SubsystemFailed", "", Warning, false, ActionNone},
		{"DeviceUnhealthy", AcceleratedHardwareReady, Warning, false, ActionNone},
		{"DeviceRecovered", AcceleratedHardwareReady, Info, false, ActionNone},
		{"GPUCountMismatch", AcceleratedHardwareReady, Fatal, false, ActionReplace},
		{"ContainerdUnresponsive", ContainerRuntimeReady, Fatal, true, ActionRestartContainerd},
		{"ContainerdSnapshotFailed", ContainerRuntimeReady, Fatal, true, ActionRestartContainerd},
		{"KubeletUnhealthy", ContainerRuntimeReady, Warning, true, ActionRestartKubelet},
		{"ReadOnlyFilesystem", StorageReady, Fatal, true, ActionReplace},
		{"DiskPressure", StorageReady, Warning, false, ActionNone},
		{"ClockUnsynchronized", KernelReady, Warning, true, ActionNone},
		{"IPAMExhausted", NetworkingReady, Warning, false, ActionNone},
		{"InterfaceDown", NetworkingReady, Fatal, true, ActionReplace},
		{"RouteMissing", NetworkingReady, Fatal, true, ActionNone},
		{"BPFProgramDetached", NetworkingReady, Fatal, true, ActionNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := cat.Lookup(tt.name)
			if !ok {
				t.Fatal("not in the catalogue")
			}
			if r.Condition != tt.cond || r.Severity != tt.severity || r.Recovery.Probe != tt.probe || r.Action != tt.action {
				t.Errorf("got %s/%s/%s/%s, want %s/%s/probe=%v/%s", r.Condition, r.Severity, r.Recovery, r.Action,
					tt.cond, tt.severity, tt.probe, tt.action)
			}
		})
	}
}

func TestNewCatalogueOverrides(t *testing.T) {
	tests := []struct {
		name      string
		overrides map[string]string
		wantErr   string // substring; "" for success
		check     string // reason whose severity to check
		want      Severity
	}{
		{name: "none", check: "OOMKill", want: Warning},
		{name: "raise", overrides: map[string]string{"XFSError": "fatal"}, check: "XFSError", want: Fatal},
		{name: "lower, any case", overrides: map[string]string{"PIDExhausted": " Warning "}, check: "PIDExhausted", want: Warning},
		{name: "info", overrides: map[string]string{"OOMKill": "info"}, check: "OOMKill", want: Info},
		{name: "unknown reason", overrides: map[string]string{"NoSuchReason": "fatal"}, wantErr: `unknown reason "NoSuchReason"`},
		{name: "unknown severity", overrides: map[string]string{"OOMKill": "critical"}, wantErr: `reason "OOMKill": unknown severity "critical"`},
		{name: "empty severity", overrides: map[string]string{"OOMKill": ""}, wantErr: `unknown severity ""`},
		{name: "both named", overrides: map[string]string{"Bad1": "fatal", "OOMKill": "x"}, wantErr: `"Bad1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cat, err := NewCatalogue(tt.overrides)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r, _ := cat.Lookup(tt.check); r.Severity != tt.want {
				t.Errorf("%s severity = %s, want %s", tt.check, r.Severity, tt.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	cat, err := NewCatalogue(map[string]string{"NeuronHardwareError": "warning"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		sig       Signal
		wantCond  Condition
		wantSev   Severity
		wantKnown bool
	}{
		{"catalogue wins over the signal", Signal{Reason: "OOMKill", Severity: Fatal, Condition: StorageReady}, KernelReady, Warning, true},
		{"emitter classifies Xid", Signal{Reason: "NvidiaXid", Severity: Fatal}, AcceleratedHardwareReady, Fatal, true},
		{"override beats the emitter", Signal{Reason: "NeuronHardwareError", Severity: Fatal}, AcceleratedHardwareReady, Warning, true},
		{"condition from the signal", Signal{Reason: "SubsystemFailed", Condition: NetworkingReady, Severity: Warning}, NetworkingReady, Warning, true},
		{"unknown is a warning", Signal{Reason: "SomethingNew", Condition: StorageReady, Severity: Fatal}, StorageReady, Warning, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, sev, known := cat.Resolve(tt.sig)
			if r.Condition != tt.wantCond || sev != tt.wantSev || known != tt.wantKnown {
				t.Errorf("Resolve = %s, %s, %v; want %s, %s, %v", r.Condition, sev, known, tt.wantCond, tt.wantSev, tt.wantKnown)
			}
		})
	}
}

func TestHealthyReason(t *testing.T) {
	if got := HealthyReason(KernelReady); got != "KernelHasNoProblems" {
		t.Errorf("HealthyReason(KernelReady) = %q", got)
	}
	if got := HealthyReason(AcceleratedHardwareReady); got != "AcceleratedHardwareHasNoProblems" {
		t.Errorf("HealthyReason(AcceleratedHardwareReady) = %q", got)
	}
}

// TestDocsListEveryReason keeps docs/health.md's table in step with the code.
func TestDocsListEveryReason(t *testing.T) {
	doc, err := os.ReadFile("../docs/health.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range DefaultReasons() {
		row := "| " + r.Name + " | "
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/health.md has no table row for %s", r.Name)
		}
	}
}
