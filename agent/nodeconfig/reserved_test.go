package nodeconfig

import (
	"math"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestKubeReserved(t *testing.T) {
	tests := []struct {
		vcpus, pods int
		cpu, memMiB int64
	}{
		{1, 4, 60, 299},      // t3.nano-like: one core
		{2, 29, 70, 574},     // m5.large
		{4, 58, 80, 893},     // m5.xlarge
		{8, 58, 90, 893},     // m5.2xlarge: 80 + 4 × 2.5
		{96, 250, 310, 3005}, // m5.24xlarge: 80 + 92 × 2.5
		{3, 110, 75, 11*110 + 255},
	}
	for _, tt := range tests {
		got, err := KubeReserved(tt.vcpus, tt.pods)
		if err != nil || got.CPUMilli != tt.cpu || got.MemoryMiB != tt.memMiB || got.EphemeralStorage.String() != "1Gi" {
			t.Errorf("KubeReserved(%d, %d) = %+v, %v; want cpu %dm, memory %dMi, 1Gi", tt.vcpus, tt.pods, got, err, tt.cpu, tt.memMiB)
		}
	}
	for _, bad := range [][2]int{{0, 10}, {2, 0}, {-1, -1}} {
		if _, err := KubeReserved(bad[0], bad[1]); err == nil {
			t.Errorf("KubeReserved(%d, %d) succeeded", bad[0], bad[1])
		}
	}
}

// TestReservationsForEveryType checks kube-reserved and allocatable for
// every row of the shared instance table against the formulas written out
// in floating point, the way EKS's documentation states them.
func TestReservationsForEveryType(t *testing.T) {
	checked := 0
	for _, row := range instanceTable(t) {
		name := row["name"]
		vcpus, err1 := strconv.Atoi(row["vcpu"])
		memMiB, err2 := strconv.ParseInt(row["memory_mib"], 10, 64)
		enis, err3 := strconv.Atoi(row["enis"])
		ips, err4 := strconv.Atoi(row["ipv4_per_eni"])
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			continue
		}
		pods, err := MaxPods(InstanceLimits{Name: name, VCPUs: int32(vcpus), ENIs: int32(enis), IPv4PerENI: int32(ips)}, MaxPodsOptions{})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		wantCPU := 60.0
		for core := 2; core <= vcpus; core++ {
			switch {
			case core == 2:
				wantCPU += 10
			case core <= 4:
				wantCPU += 5
			default:
				wantCPU += 2.5
			}
		}
		r, err := KubeReserved(vcpus, pods)
		if err != nil || r.CPUMilli != int64(math.Floor(wantCPU)) || r.MemoryMiB != int64(11*pods+255) {
			t.Errorf("%s: KubeReserved = %+v, %v; want %.1fm and %dMi", name, r, err, wantCPU, 11*pods+255)
			continue
		}
		alloc, err := Allocatable(NodeCapacity{VCPUs: vcpus, MemoryMiB: memMiB, MaxPods: pods, EphemeralStorage: resource.MustParse("20Gi")}, AllocatableOptions{})
		if err != nil {
			t.Errorf("%s: Allocatable: %v", name, err)
			continue
		}
		wantMem := int64(math.Ceil(float64(memMiB)*0.925))<<20 - (r.MemoryMiB+100)<<20
		if got := alloc.Memory().Value(); got != wantMem {
			t.Errorf("%s: allocatable memory %d, want %d", name, got, wantMem)
		}
		if got := alloc.Cpu().MilliValue(); got != int64(vcpus)*1000-r.CPUMilli {
			t.Errorf("%s: allocatable cpu %dm, want %dm", name, got, int64(vcpus)*1000-r.CPUMilli)
		}
		if got := alloc.Pods().Value(); got != int64(pods) {
			t.Errorf("%s: allocatable pods %d, want %d", name, got, pods)
		}
		checked++
	}
	if checked < 1300 {
		t.Errorf("checked %d types, want every row with ENI data (1300+)", checked)
	}
}

func TestAllocatable(t *testing.T) {
	gpu := corev1.ResourceName("nvidia.com/gpu")
	m5large := NodeCapacity{VCPUs: 2, MemoryMiB: 8192, MaxPods: 29, EphemeralStorage: resource.MustParse("20Gi"),
		Extended: corev1.ResourceList{gpu: resource.MustParse("1")}}
	got, err := Allocatable(m5large, AllocatableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// 8192 × 0.925 = 7577.6 → 7578Mi; less 11 × 29 + 255 = 574Mi kube-reserved and 100Mi eviction.
	want := map[corev1.ResourceName]string{
		corev1.ResourceCPU: "1930m", corev1.ResourceMemory: "6904Mi", corev1.ResourcePods: "29", gpu: "1",
		// 20Gi − 1Gi kube-reserved − 10% of 20Gi nodefs eviction (2Gi).
		corev1.ResourceEphemeralStorage: "17Gi",
	}
	for name, w := range want {
		q := got[name]
		if q.Cmp(resource.MustParse(w)) != 0 {
			t.Errorf("allocatable %s = %s, want %s", name, q.String(), w)
		}
	}

	withSystem, err := Allocatable(m5large, AllocatableOptions{VMMemoryOverheadPercent: 10,
		SystemReserved: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}})
	if err != nil {
		t.Fatal(err)
	}
	if c := withSystem[corev1.ResourceCPU]; c.Cmp(resource.MustParse("1830m")) != 0 {
		t.Errorf("cpu with 100m system-reserved = %s, want 1830m", c.String())
	}
	if m := withSystem[corev1.ResourceMemory]; m.Cmp(resource.MustParse("6699Mi")) != 0 { // ceil(8192 × 0.9) = 7373
		t.Errorf("memory with 10%% overhead = %s, want 6699Mi", m.String())
	}

	for name, tc := range map[string]struct {
		c    NodeCapacity
		opts AllocatableOptions
	}{
		"no memory":              {NodeCapacity{VCPUs: 2, MaxPods: 10}, AllocatableOptions{}},
		"overhead of 100%":       {m5large, AllocatableOptions{VMMemoryOverheadPercent: 100}},
		"overhead NaN":           {m5large, AllocatableOptions{VMMemoryOverheadPercent: math.NaN()}},
		"reserved above memory":  {NodeCapacity{VCPUs: 1, MemoryMiB: 512, MaxPods: 110}, AllocatableOptions{}},
		"unknown system-reserve": {m5large, AllocatableOptions{SystemReserved: corev1.ResourceList{"example.com/x": resource.MustParse("1")}}},
	} {
		if _, err := Allocatable(tc.c, tc.opts); err == nil {
			t.Errorf("%s: Allocatable succeeded", name)
		}
	}
}

func TestEvictionHardIsEKSDefault(t *testing.T) {
	got := EvictionHard()
	want := map[string]string{"memory.available": "100Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%", "imagefs.available": "15%"}
	if len(got) != len(want) {
		t.Fatalf("EvictionHard() = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("EvictionHard()[%s] = %q, want %q", k, got[k], v)
		}
	}
}
