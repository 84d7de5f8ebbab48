package scheduling

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestPodRequests(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	c := func(name, cpu, mem string) corev1.Container {
		return corev1.Container{Name: name, Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}}}
	}
	sidecar := func(name, cpu, mem string) corev1.Container {
		s := c(name, cpu, mem)
		s.RestartPolicy = &always
		return s
	}
	for _, tc := range []struct {
		name     string
		spec     corev1.PodSpec
		cpu, mem int64
	}{
		{"app containers add up", corev1.PodSpec{Containers: []corev1.Container{c("a", "1", "1Gi"), c("b", "500m", "512Mi")}}, 1500, 1536 << 20},
		{"a bigger init container wins", corev1.PodSpec{InitContainers: []corev1.Container{c("i", "2", "100Mi")},
			Containers: []corev1.Container{c("a", "1", "1Gi")}}, 2000, 1 << 30},
		{"init containers run one at a time", corev1.PodSpec{InitContainers: []corev1.Container{c("i1", "2", "100Mi"), c("i2", "1", "3Gi")},
			Containers: []corev1.Container{c("a", "1", "1Gi")}}, 2000, 3 << 30},
		{"a sidecar runs beside the app and the later init containers", corev1.PodSpec{
			InitContainers: []corev1.Container{sidecar("s", "500m", "256Mi"), c("i", "2", "100Mi")},
			Containers:     []corev1.Container{c("a", "1", "1Gi")}}, 2500, 1280 << 20},
		{"overhead is added", corev1.PodSpec{Containers: []corev1.Container{c("a", "1", "1Gi")},
			Overhead: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("160Mi")}}, 1250, 1184 << 20},
		{"pod-level resources override", corev1.PodSpec{Containers: []corev1.Container{c("a", "1", "1Gi")},
			Resources: &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3")}}}, 3000, 1 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PodRequests(&corev1.Pod{Spec: tc.spec})
			if err != nil {
				t.Fatal(err)
			}
			if got[CPU] != tc.cpu || got[Memory] != tc.mem || got[Pods] != 1 {
				t.Fatalf("got %s, want cpu=%dm memory=%d pods=1", got, tc.cpu, tc.mem)
			}
		})
	}
}

func TestResourcesFromList(t *testing.T) {
	r, err := ResourcesFromList(corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("1.5"), corev1.ResourceEphemeralStorage: resource.MustParse("10Gi"),
		ResourceNvidiaGPU: resource.MustParse("2"), ResourceNeuron: resource.MustParse("1"),
		ResourceNeuronCore: resource.MustParse("2"), ResourceEFA: resource.MustParse("1")})
	if err != nil {
		t.Fatal(err)
	}
	want := Resources{CPU: 1500, EphemeralStorage: 10 << 30, NvidiaGPU: 2, Neuron: 1, NeuronCore: 2, EFA: 1}
	if r != want {
		t.Fatalf("got %s, want %s", r, want)
	}
	if back, _ := ResourcesFromList(r.List()); back != r {
		t.Fatalf("List round trip: %s", back)
	}
	_, err = ResourcesFromList(corev1.ResourceList{"example.com/fpga": resource.MustParse("1")})
	if err == nil || !strings.Contains(err.Error(), "example.com/fpga") {
		t.Fatalf("unknown resource: got %v, want an error naming it", err)
	}
	if _, err := ResourcesFromList(corev1.ResourceList{"example.com/fpga": resource.MustParse("0")}); err != nil {
		t.Fatalf("a zero request of an unknown resource is harmless: %v", err)
	}
}
