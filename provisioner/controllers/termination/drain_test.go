package termination

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMustEvict(t *testing.T) {
	t.Parallel()
	yes := true
	for _, tt := range []struct {
		name string
		pod  corev1.Pod
		want bool
	}{
		{"plain pod", corev1.Pod{}, true},
		{"replicaset pod", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Controller: &yes}}}}, true},
		{"daemonset pod", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Controller: &yes}}}}, false},
		{"mirror pod", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{corev1.MirrorPodAnnotationKey: "x"}}}, false},
		{"succeeded", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}, false},
		{"tolerates the disrupted taint", corev1.Pod{Spec: corev1.PodSpec{Tolerations: []corev1.Toleration{{Key: "autonode.dev/disrupted", Operator: corev1.TolerationOpExists}}}}, false},
		{"tolerates everything", corev1.Pod{Spec: corev1.PodSpec{Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}}}}, false},
		{"tolerates another taint", corev1.Pod{Spec: corev1.PodSpec{Tolerations: []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpExists}}}}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := MustEvict(&tt.pod); got != tt.want {
				t.Errorf("MustEvict = %v, want %v", got, tt.want)
			}
		})
	}
}
