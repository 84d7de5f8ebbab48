package termination

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
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

func TestDrainDeadline(t *testing.T) {
	t.Parallel()
	deleted := metav1.NewTime(time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC))
	tgp := &metav1.Duration{Duration: time.Minute}
	claim := func(tgp *metav1.Duration, status metav1.ConditionStatus, reason v1.DisruptionReason) *v1.NodeClaim {
		c := &v1.NodeClaim{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &deleted}, Spec: v1.NodeClaimSpec{TerminationGracePeriod: tgp}}
		if status != "" {
			c.Status.Conditions = []metav1.Condition{{Type: v1.ConditionDisrupting, Status: status, Reason: string(reason)}}
		}
		return c
	}
	forced := deleted.Add(time.Minute)
	for _, tt := range []struct {
		name  string
		claim *v1.NodeClaim
		want  time.Time
	}{
		{"no grace period", claim(nil, metav1.ConditionTrue, v1.ReasonExpired), time.Time{}},
		{"deleted by a user", claim(tgp, "", ""), forced},
		{"expired", claim(tgp, metav1.ConditionTrue, v1.ReasonExpired), forced},
		{"unhealthy", claim(tgp, metav1.ConditionTrue, v1.ReasonUnhealthy), forced},
		{"empty", claim(tgp, metav1.ConditionTrue, v1.ReasonEmpty), time.Time{}},
		{"underutilized", claim(tgp, metav1.ConditionTrue, v1.ReasonUnderutilized), time.Time{}},
		{"drifted", claim(tgp, metav1.ConditionTrue, v1.ReasonDrifted), time.Time{}},
		{"graceful disruption cancelled, then deleted by a user", claim(tgp, metav1.ConditionFalse, "DisruptionCancelled"), forced},
		{"not deleted", &v1.NodeClaim{Spec: v1.NodeClaimSpec{TerminationGracePeriod: tgp}}, time.Time{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := DrainDeadline(tt.claim); !got.Equal(tt.want) {
				t.Errorf("DrainDeadline = %v, want %v", got, tt.want)
			}
		})
	}
}
