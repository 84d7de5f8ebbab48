package disruption

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodEventTime(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(t0.Add(d)) }
	cond := func(typ corev1.PodConditionType, s corev1.ConditionStatus, d time.Duration) corev1.PodCondition {
		return corev1.PodCondition{Type: typ, Status: s, LastTransitionTime: at(d)}
	}
	grace := int64(30)
	deleting := at(time.Minute + 30*time.Second)
	for _, tt := range []struct {
		name string
		pod  corev1.Pod
		want time.Time
	}{
		{"created", corev1.Pod{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: at(0)}}, t0},
		{"bound", corev1.Pod{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: at(0)}, Status: corev1.PodStatus{Conditions: []corev1.PodCondition{
			cond(corev1.PodScheduled, corev1.ConditionTrue, 10*time.Second), cond(corev1.PodReady, corev1.ConditionTrue, 20*time.Second)}}}, t0.Add(10 * time.Second)},
		{"finished", corev1.Pod{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: at(0)}, Status: corev1.PodStatus{Phase: corev1.PodSucceeded, Conditions: []corev1.PodCondition{
			cond(corev1.PodScheduled, corev1.ConditionTrue, 10*time.Second), cond(corev1.PodReady, corev1.ConditionFalse, time.Minute)}}}, t0.Add(time.Minute)},
		{"deleting", corev1.Pod{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: at(0), DeletionTimestamp: &deleting, DeletionGracePeriodSeconds: &grace},
			Status: corev1.PodStatus{Conditions: []corev1.PodCondition{cond(corev1.PodScheduled, corev1.ConditionTrue, 10*time.Second)}}}, t0.Add(time.Minute)},
	} {
		if got := podEventTime(&tt.pod); !got.Equal(tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
