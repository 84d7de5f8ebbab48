package journal

import (
	"strings"
	"testing"

	"github.com/autonode/autonode/health"
)

func TestDefaultRules(t *testing.T) {
	tests := []struct {
		unit, msg string
		reason    string // empty: no rule may match
		condition health.Condition
		detail    string
	}{
		{"kubelet.service", `"Skipping pod synchronization" err="PLEG is not healthy: pleg was last seen active 3m5.1s ago; threshold is 3m0s"`, ReasonKubeletPLEGUnhealthy, health.ContainerRuntimeReady, "pleg was last seen active 3m5.1s ago"},
		{"kubelet.service", "PLEG is not healthy: pleg has yet to be successful", ReasonKubeletPLEGUnhealthy, health.ContainerRuntimeReady, "PLEG is not healthy"},
		{"containerd.service", `failed to create containerd task: failed to create shim task: context deadline exceeded`, ReasonContainerCreateFailed, health.ContainerRuntimeReady, "failed to create containerd task: failed to create shim task: context deadline exceeded"},
		{"kubelet.service", `Error: failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error setting cgroup config`, ReasonContainerCreateFailed, health.ContainerRuntimeReady, "OCI runtime create failed: runc create failed"},
		{"containerd.service", `failed to mount rootfs component &{overlay overlay [index=off workdir=/x]}: invalid argument: unknown`, ReasonContainerMountFailed, health.ContainerRuntimeReady, "failed to mount rootfs component"},
		{"kubelet.service", `MountVolume.SetUp failed for volume "data" : mount failed: exit status 32`, ReasonContainerMountFailed, health.ContainerRuntimeReady, `MountVolume.SetUp failed for volume "data"`},
		{"containerd.service", `write /var/lib/containerd/tmpmounts/x: no space left on device`, health.ReasonDiskPressure, health.StorageReady, "no space left on device /var/lib/containerd/tmpmounts/x"},
		// The cause beats the generic failure it appears in.
		{"containerd.service", `failed to create containerd task: mkdir /run/containerd/x: no space left on device`, health.ReasonDiskPressure, health.StorageReady, "/run/containerd/x"},
		{"containerd.service", `OCI runtime create failed: open /proc/self/fd: too many open files`, ReasonTooManyOpenFiles, health.KernelReady, "too many open files"},
		{"kubelet.service", "accept tcp [::]:10250: accept4: Too Many Open Files", ReasonTooManyOpenFiles, health.KernelReady, "too many open files"},
		{"kubelet.service", "Successfully registered node", "", "", ""},
		{"containerd.service", "mounting snapshot succeeded", "", "", ""},
		{"containerd.service", "", "", "", ""},
	}
	rules := DefaultRules()
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			m, ok := apply(rules, tt.unit, tt.msg)
			if tt.reason == "" {
				if ok {
					t.Fatalf("matched %s: %q", m.rule.Reason, m.detail)
				}
				return
			}
			if !ok {
				t.Fatalf("no rule matched, want %s", tt.reason)
			}
			if m.rule.Reason != tt.reason || m.rule.Condition != tt.condition || !strings.Contains(m.detail, tt.detail) {
				t.Errorf("got %s on %s, %q; want %s on %s containing %q", m.rule.Reason, m.rule.Condition, m.detail, tt.reason, tt.condition, tt.detail)
			}
		})
	}
}

func TestRuleSeveritiesFollowTheCatalogue(t *testing.T) {
	cat, err := health.NewCatalogue(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range DefaultRules() {
		if c, ok := cat.Lookup(r.Reason); ok && c.Severity != r.Severity {
			t.Errorf("rule for %s has severity %v, the catalogue %v", r.Reason, r.Severity, c.Severity)
		}
		if c, ok := cat.Lookup(r.Reason); ok && c.Recovery.Probe {
			t.Errorf("rule for %s: a log line cannot be a probe reason (nothing would clear it)", r.Reason)
		}
		if r.Severity == health.Fatal {
			t.Errorf("rule for %s is Fatal: one log line must not make the node unfit", r.Reason)
		}
	}
}

func TestRuleUnits(t *testing.T) {
	rules := []Rule{{Reason: "X", Units: []string{"containerd.service"}, Pattern: DefaultRules()[0].Pattern}}
	if _, ok := apply(rules, "kubelet.service", "no space left on device"); ok {
		t.Error("a containerd-only rule matched a kubelet entry")
	}
	if _, ok := apply(rules, "containerd.service", "no space left on device"); !ok {
		t.Error("a containerd-only rule did not match a containerd entry")
	}
}

func TestValidCursor(t *testing.T) {
	for c, want := range map[string]bool{
		"s=ba803b194fe04f0f928999cbeb783c96;i=1;b=0123456789abcdef0123456789abcdef;m=f4240;t=60a24181e4000;x=a9ef8e7b78ccd564": true,
		"s=1;i=2":   true,
		"":          false,
		"hello":     false,
		"s=1":       false,
		"s=1;i=":    false,
		"s=1;i=2\n": false,
		"ss=1;i=2":  false,
	} {
		if got := validCursor(c); got != want {
			t.Errorf("validCursor(%q) = %v, want %v", c, got, want)
		}
	}
}

func TestCheckHeader(t *testing.T) {
	good := make([]byte, headerLen)
	copy(good, "LPKSHHRH")
	good[88] = 0xf0 // header size 240
	good[97] = 0x10 // arena 4096
	tests := []struct {
		name string
		h    []byte
		size int64
		ok   bool
	}{
		{"fits", good, 240 + 4096, true},
		{"truncated", good, 5000 - 1000, false},
		{"short", good[:50], 50, false},
		{"bad signature", append([]byte("XXXXXXXX"), good[8:]...), 240 + 4096, false},
	}
	for _, tt := range tests {
		if err := checkHeader(tt.h, tt.size); (err == nil) != tt.ok {
			t.Errorf("%s: checkHeader = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

func FuzzRules(f *testing.F) {
	for _, s := range []string{
		`err="PLEG is not healthy: pleg was last seen active 3m5.1s ago; threshold is 3m0s"`,
		"failed to create containerd task: OCI runtime create failed: x",
		"write /var/lib/x: no space left on device",
		"failed to mount rootfs component",
		"TOO MANY OPEN FILES",
	} {
		f.Add("kubelet.service", s)
	}
	rules := DefaultRules()
	f.Fuzz(func(t *testing.T, unit, msg string) {
		m, ok := apply(rules, unit, msg)
		if ok && (m.rule == nil || m.rule.Reason == "") {
			t.Fatalf("match without a rule for %q", msg)
		}
	})
}

func FuzzCheckHeader(f *testing.F) {
	good := make([]byte, headerLen)
	copy(good, "LPKSHHRH")
	good[88] = 0xf0
	f.Add(good, int64(8<<20))
	f.Fuzz(func(t *testing.T, h []byte, size int64) {
		_ = checkHeader(h, size)
		_ = validCursor(string(h))
	})
}
