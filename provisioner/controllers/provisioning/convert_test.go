package provisioning

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/provisioner/cloud"
	"github.com/autonode/autonode/provisioner/controllers/claimutil"
	"github.com/autonode/autonode/provisioner/disruption"
	"github.com/autonode/autonode/provisioner/scheduling"
)

func list(pairs ...string) corev1.ResourceList {
	l := corev1.ResourceList{}
	for i := 0; i < len(pairs); i += 2 {
		l[corev1.ResourceName(pairs[i])] = resource.MustParse(pairs[i+1])
	}
	return l
}

func TestInstanceTypes(t *testing.T) {
	t.Parallel()
	in := []*cloud.InstanceType{{
		Name: "g5.xlarge", Arch: "amd64", Labels: map[string]string{"autonode.dev/instance-family": "g5"},
		Capacity:    list("cpu", "4", "memory", "16Gi", "pods", "58", "nvidia.com/gpu", "1", "example.com/dongle", "2"),
		Allocatable: list("cpu", "3920m", "memory", "14Gi", "pods", "58", "nvidia.com/gpu", "1", "ephemeral-storage", "17Gi"),
		Offerings:   []cloud.Offering{{Zone: "us-west-2a", CapacityType: "spot", Price: 0.4, Available: false}},
	}}
	out := InstanceTypes(in)
	if len(out) != 1 {
		t.Fatalf("got %d types", len(out))
	}
	got := out[0]
	want := scheduling.Resources{}
	want[scheduling.CPU], want[scheduling.Memory], want[scheduling.Pods], want[scheduling.NvidiaGPU] = 4000, 16<<30, 58, 1
	if got.Capacity != want {
		t.Errorf("capacity = %v, want %v (the unmodelled dongle left out)", got.Capacity, want)
	}
	if got.Allocatable[scheduling.CPU] != 3920 || got.Allocatable[scheduling.EphemeralStorage] != 17<<30 {
		t.Errorf("allocatable = %v", got.Allocatable)
	}
	if got.Name != "g5.xlarge" || got.Arch != "amd64" || got.Labels["autonode.dev/instance-family"] != "g5" {
		t.Errorf("type = %+v", got)
	}
	if len(got.Offerings) != 1 || got.Offerings[0] != (scheduling.Offering{Zone: "us-west-2a", CapacityType: "spot", Price: 0.4, Available: false}) {
		t.Errorf("offerings = %+v", got.Offerings)
	}
	in[0].Labels["autonode.dev/instance-family"] = "changed"
	if got.Labels["autonode.dev/instance-family"] != "g5" {
		t.Error("labels share the provider's map")
	}
}

func TestRequirementsRoundTrip(t *testing.T) {
	t.Parallel()
	two := int32(2)
	api := []v1.NodeSelectorRequirementWithMinValues{
		{Key: v1.LabelInstanceCategory, Operator: corev1.NodeSelectorOpIn, Values: []string{"c", "m"}, MinValues: &two},
		{Key: v1.LabelInstanceGeneration, Operator: corev1.NodeSelectorOpGt, Values: []string{"5"}},
	}
	s := Requirements(api)
	if s[0].MinValues != 2 || s[1].MinValues != 0 || s[1].Operator != corev1.NodeSelectorOpGt {
		t.Fatalf("scheduling requirements = %+v", s)
	}
	back, err := APIRequirements(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 || *back[0].MinValues != 2 || back[1].MinValues != nil || !slices.Equal(back[0].Values, []string{"c", "m"}) {
		t.Errorf("round trip = %+v", back)
	}
}

func TestAPIRequirementsInstanceTypes(t *testing.T) {
	t.Parallel()
	var names []string
	for i := range 150 {
		names = append(names, "t"+string(rune('A'+i%26))+string(rune('a'+i/26)))
	}
	reqs := []scheduling.Requirement{{Key: corev1.LabelInstanceTypeStable, Operator: corev1.NodeSelectorOpIn, Values: slices.Sorted(slices.Values(names))}}
	got, err := APIRequirements(reqs, names)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got[0].Values, names[:maxClaimInstanceTypes]) {
		t.Errorf("kept %v, want the %d cheapest in price order", got[0].Values, maxClaimInstanceTypes)
	}
	reqs[0].MinValues = 80
	if got, _ = APIRequirements(reqs, names); len(got[0].Values) != 80 {
		t.Errorf("kept %d types, want 80 for minValues 80", len(got[0].Values))
	}
	zones := []scheduling.Requirement{{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: names}}
	if _, err := APIRequirements(zones, nil); err == nil {
		t.Error("150 zone values accepted, want an error naming the requirement")
	}
}

func TestNodeClaimFor(t *testing.T) {
	t.Parallel()
	weight := int32(5)
	pool := &v1.NodePool{
		ObjectMeta: metav1.ObjectMeta{Name: "batch", UID: "uid-1"},
		Spec: v1.NodePoolSpec{
			Weight: &weight,
			Template: v1.NodeClaimTemplate{
				ObjectMeta: v1.TemplateMeta{Labels: map[string]string{"team": "a"}, Annotations: map[string]string{"note": "x"}},
				Spec: v1.NodeClaimTemplateSpec{
					NodeClassRef: v1.NodeClassReference{Name: "default"},
					Taints:       []corev1.Taint{{Key: "batch", Effect: corev1.TaintEffectNoSchedule}},
				},
			},
		},
	}
	var req, overhead scheduling.Resources
	req[scheduling.CPU], req[scheduling.Pods] = 1500, 2
	overhead[scheduling.CPU], overhead[scheduling.Pods] = 100, 1
	n := scheduling.NewNode{
		NodePool: "batch", Name: "batch-0",
		InstanceTypes: []*scheduling.InstanceType{{Name: "c5.large"}, {Name: "m5.large"}},
		Requirements: []scheduling.Requirement{
			{Key: corev1.LabelInstanceTypeStable, Operator: corev1.NodeSelectorOpIn, Values: []string{"m5.large", "c5.large"}},
			{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"us-west-2a"}},
		},
		Labels:   map[string]string{corev1.LabelTopologyZone: "us-west-2a", corev1.LabelHostname: "batch-0", v1.LabelNodePool: "batch"},
		Requests: req, Overhead: overhead,
	}
	c, err := NodeClaimFor(pool, n)
	if err != nil {
		t.Fatal(err)
	}
	if c.GenerateName != "batch-" || c.Labels[v1.LabelNodePool] != "batch" || c.Labels["team"] != "a" ||
		c.Labels[corev1.LabelTopologyZone] != "us-west-2a" || c.Labels[corev1.LabelHostname] != "" || c.Annotations["note"] != "x" {
		t.Errorf("metadata = %+v", c.ObjectMeta)
	}
	if c.Annotations[disruption.AnnotationNodePoolHash] != disruption.TemplateHash(pool) || c.Annotations[disruption.AnnotationNodePoolHashVersion] != disruption.HashVersion {
		t.Errorf("annotations %v lack the pool's template hash", c.Annotations)
	}
	if !slices.Contains(c.Finalizers, claimutil.TerminationFinalizer) || len(c.OwnerReferences) != 1 || c.OwnerReferences[0].UID != "uid-1" {
		t.Errorf("finalizers %v, owners %+v", c.Finalizers, c.OwnerReferences)
	}
	if !slices.Equal(c.Spec.Requirements[0].Values, []string{"c5.large", "m5.large"}) {
		t.Errorf("instance types %v, want cheapest first", c.Spec.Requirements[0].Values)
	}
	if cpu := c.Spec.Resources.Requests[corev1.ResourceCPU]; cpu.MilliValue() != 1600 {
		t.Errorf("cpu request %s, want the pods' 1500m plus 100m DaemonSet overhead", cpu.String())
	}
	if !slices.ContainsFunc(c.Spec.StartupTaints, func(t corev1.Taint) bool { return t.Key == v1.StartupTaintAgentNotReady }) {
		t.Errorf("startup taints %v lack %s", c.Spec.StartupTaints, v1.StartupTaintAgentNotReady)
	}
	if c.Spec.ExpireAfter == nil || c.Spec.ExpireAfter.Duration.String() != "336h0m0s" || len(c.Spec.Taints) != 1 {
		t.Errorf("spec = %+v", c.Spec)
	}
}

func TestRemaining(t *testing.T) {
	t.Parallel()
	pool := &v1.NodePool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1.NodePoolSpec{Limits: list("cpu", "10", "nvidia.com/gpu", "2")}}
	its := []*cloud.InstanceType{
		{Name: "small", Capacity: list("cpu", "2")},
		{Name: "big", Capacity: list("cpu", "8")},
	}
	claim := func(pool string, capacity corev1.ResourceList, types ...string) v1.NodeClaim {
		c := v1.NodeClaim{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{v1.LabelNodePool: pool}}}
		c.Status.Capacity = capacity
		if len(types) > 0 {
			c.Spec.Requirements = []v1.NodeSelectorRequirementWithMinValues{{Key: corev1.LabelInstanceTypeStable, Operator: corev1.NodeSelectorOpIn, Values: types}}
		}
		return c
	}
	left := remaining(pool, []v1.NodeClaim{
		claim("p", list("cpu", "2", "nvidia.com/gpu", "1")), // launched
		claim("p", nil, "small"),                            // not launched: counts 2
		claim("other", list("cpu", "64")),                   // another pool's
	}, its)
	if left[scheduling.CPU] != 6000 || left[scheduling.NvidiaGPU] != 1 || left[scheduling.Memory] != scheduling.Unlimited {
		t.Errorf("remaining = %v, want cpu 6, one GPU, memory unlimited", left)
	}
	left = remaining(pool, []v1.NodeClaim{claim("p", nil)}, its) // any type: the biggest counts
	if left[scheduling.CPU] != 2000 {
		t.Errorf("remaining cpu = %d, want 2000 after a claim that may become the 8-cpu type", left[scheduling.CPU])
	}
}

func TestDaemonOverhead(t *testing.T) {
	t.Parallel()
	ds := func(name, cpu string, edit func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "c", Resources: corev1.ResourceRequirements{Requests: list("cpu", cpu)},
		}}}}
		if edit != nil {
			edit(p)
		}
		return p
	}
	daemons := []*corev1.Pod{
		ds("everywhere", "100m", func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
		}),
		ds("untolerating", "200m", nil),
		ds("arm-only", "400m", func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
			p.Spec.NodeSelector = map[string]string{corev1.LabelArchStable: "arm64"}
		}),
		ds("zone-affinity", "800m", func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
					{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"us-west-2b"}},
				}}},
			}}}
		}),
	}
	taints := []corev1.Taint{{Key: "dedicated", Value: "x", Effect: corev1.TaintEffectNoSchedule}}
	for _, tt := range []struct {
		name   string
		labels map[string]string
		taints []corev1.Taint
		cpu    int64
	}{
		{"tainted amd64 in zone a", map[string]string{corev1.LabelArchStable: "amd64", corev1.LabelTopologyZone: "us-west-2a"}, taints, 100},
		{"untainted", map[string]string{corev1.LabelArchStable: "amd64", corev1.LabelTopologyZone: "us-west-2a"}, nil, 300},
		{"zone unknown yet counts", map[string]string{corev1.LabelArchStable: "amd64"}, taints, 900},
		{"arm64 in zone b", map[string]string{corev1.LabelArchStable: "arm64", corev1.LabelTopologyZone: "us-west-2b"}, taints, 1300},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := daemonOverhead(daemons, tt.labels, tt.taints); got[scheduling.CPU] != tt.cpu {
				t.Errorf("overhead cpu = %dm, want %dm", got[scheduling.CPU], tt.cpu)
			}
		})
	}
}

func TestTermsRequirements(t *testing.T) {
	t.Parallel()
	in := func(key string, values ...string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: key, Operator: corev1.NodeSelectorOpIn, Values: values}
	}
	zone := corev1.LabelTopologyZone
	for _, tt := range []struct {
		name  string
		terms []corev1.NodeSelectorTerm
		want  []scheduling.Requirement
	}{
		{"none", nil, nil},
		{"one term", []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{in(zone, "a"), in("arch", "x")}}},
			[]scheduling.Requirement{{Key: zone, Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}, {Key: "arch", Operator: corev1.NodeSelectorOpIn, Values: []string{"x"}}}},
		{"terms on one key merge", []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{in(zone, "a")}}, {MatchExpressions: []corev1.NodeSelectorRequirement{in(zone, "b", "a")}}},
			[]scheduling.Requirement{{Key: zone, Operator: corev1.NodeSelectorOpIn, Values: []string{"a", "b"}}}},
		{"terms on different keys cannot", []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{in(zone, "a")}}, {MatchExpressions: []corev1.NodeSelectorRequirement{in("arch", "x")}}}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := termsRequirements(tt.terms)
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i].Key != tt.want[i].Key || got[i].Operator != tt.want[i].Operator || !slices.Equal(got[i].Values, tt.want[i].Values) {
					t.Errorf("requirement %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestIsPending(t *testing.T) {
	t.Parallel()
	unschedulable := corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable}}}
	now := metav1.Now()
	for _, tt := range []struct {
		name string
		pod  corev1.Pod
		want bool
	}{
		{"unschedulable", corev1.Pod{Status: unschedulable}, true},
		{"not yet tried", corev1.Pod{}, false},
		{"scheduling gated", corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonSchedulingGated}}}}, false},
		{"bound", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n"}, Status: unschedulable}, false},
		{"deleting", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}, Status: unschedulable}, false},
		{"daemonset", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Name: "d", Controller: ptr(true)}}}, Status: unschedulable}, false},
		{"failed", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, Conditions: unschedulable.Conditions}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsPending(&tt.pod); got != tt.want {
				t.Errorf("IsPending = %v, want %v", got, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
