package v1_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/sandbox/testenv"
)

const root = "../../.."

func newClient(t *testing.T, env *testenv.Env) client.Client {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(env.AdminConfig(), client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestBuiltinPools applies the shipped pools and NodeClass to a real
// apiserver and reads them back through the Go types, defaults included.
func TestBuiltinPools(t *testing.T) {
	env := testenv.Start(t, testenv.Options{CRDDirectoryPaths: []string{filepath.Join(root, "deploy/crds")}})
	paths, err := filepath.Glob(filepath.Join(root, "deploy/nodepools/*.yaml"))
	if err != nil || len(paths) != 3 {
		t.Fatalf("built-in manifests: %v %v", paths, err)
	}
	env.Apply(t, paths...)
	c := newClient(t, env)
	ctx := t.Context()

	var nc v1.NodeClass
	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, &nc); err != nil {
		t.Fatal(err)
	}
	if got := nc.Spec.AMISelectorTerms; len(got) != 1 || got[0].Alias != "autonode@latest" {
		t.Errorf("default NodeClass AMI terms = %+v", got)
	}
	for _, tt := range []struct {
		name   string
		arches []string
		taint  bool
	}{
		{"system", []string{"amd64", "arm64"}, true},
		{"general-purpose", []string{"amd64"}, false},
	} {
		var np v1.NodePool
		if err := c.Get(ctx, client.ObjectKey{Name: tt.name}, &np); err != nil {
			t.Fatal(err)
		}
		spec := np.Spec.Template.Spec
		if spec.ExpireAfter == nil || spec.ExpireAfter.Duration != 336*time.Hour {
			t.Errorf("%s: expireAfter = %v, want 336h", tt.name, spec.ExpireAfter)
		}
		d := np.Spec.Disruption
		if d.ConsolidationPolicy != v1.ConsolidationWhenEmptyOrUnderutilized || d.ConsolidateAfter.Duration == nil ||
			*d.ConsolidateAfter.Duration != 30*time.Second || len(d.Budgets) != 1 || d.Budgets[0].Nodes != "10%" {
			t.Errorf("%s: disruption = %+v", tt.name, d)
		}
		if spec.NodeClassRef != (v1.NodeClassReference{Group: "autonode.dev", Kind: "NodeClass", Name: "default"}) {
			t.Errorf("%s: nodeClassRef = %+v", tt.name, spec.NodeClassRef)
		}
		hasCritical := len(spec.Taints) == 1 && spec.Taints[0].Key == "CriticalAddonsOnly" && spec.Taints[0].Effect == corev1.TaintEffectNoSchedule
		if hasCritical != tt.taint {
			t.Errorf("%s: taints = %+v", tt.name, spec.Taints)
		}
		if len(spec.StartupTaints) != 1 || spec.StartupTaints[0].Key != v1.StartupTaintAgentNotReady {
			t.Errorf("%s: startupTaints = %+v", tt.name, spec.StartupTaints)
		}
		req := map[string]v1.NodeSelectorRequirementWithMinValues{}
		for _, r := range spec.Requirements {
			req[r.Key] = r
		}
		if got := req[corev1.LabelArchStable].Values; strings.Join(got, ",") != strings.Join(tt.arches, ",") {
			t.Errorf("%s: arch = %v, want %v", tt.name, got, tt.arches)
		}
		if got := req[v1.LabelCapacityType].Values; strings.Join(got, ",") != "on-demand" {
			t.Errorf("%s: capacity types = %v", tt.name, got)
		}
		if r := req[v1.LabelInstanceGeneration]; r.Operator != corev1.NodeSelectorOpGt || strings.Join(r.Values, ",") != "4" {
			t.Errorf("%s: generation = %+v", tt.name, r)
		}
	}
}

// Minimal valid objects that the cases below change one thing in.
const (
	validPool = `
apiVersion: autonode.dev/v1
kind: NodePool
metadata: {name: p}
spec:
  template:
    spec:
      nodeClassRef: {name: default}
`
	validClass = `
apiVersion: autonode.dev/v1
kind: NodeClass
metadata: {name: c}
spec:
  role: r
  subnetSelectorTerms: [{tags: {a: b}}]
  securityGroupSelectorTerms: [{id: sg-123}]
  amiSelectorTerms: [{alias: autonode@latest}]
`
	validClaim = `
apiVersion: autonode.dev/v1
kind: NodeClaim
metadata: {name: nc}
spec:
  nodeClassRef: {name: default}
  requirements: [{key: node.kubernetes.io/instance-type, operator: In, values: [m5.large]}]
`
)

// TestValidation creates objects (dry run) on a real apiserver and checks
// that the schema and CEL rules accept the good and reject the bad, with the
// message a user would see.
func TestValidation(t *testing.T) {
	env := testenv.Start(t, testenv.Options{CRDDirectoryPaths: []string{filepath.Join(root, "deploy/crds")}})
	c := newClient(t, env)
	pool := func(path, value string) string { return patch(t, validPool, path, value) }
	class := func(path, value string) string { return patch(t, validClass, path, value) }
	claim := func(path, value string) string { return patch(t, validClaim, path, value) }
	tests := []struct {
		name    string
		obj     string
		wantErr string // "" accepts
	}{
		{"pool minimal", validPool, ""},
		{"pool all operators", pool("spec.template.spec.requirements", `[
			{key: a, operator: In, values: [v1, v2], minValues: 2},
			{key: b, operator: NotIn, values: [x]},
			{key: c, operator: Exists},
			{key: d, operator: DoesNotExist},
			{key: e, operator: Gt, values: ["4"]},
			{key: f, operator: Lt, values: ["-1"]}]`), ""},
		{"pool bad operator", pool("spec.template.spec.requirements", `[{key: a, operator: Near, values: [x]}]`), "Unsupported value"},
		{"pool In without values", pool("spec.template.spec.requirements", `[{key: a, operator: In}]`), "In needs at least one value"},
		{"pool Exists with values", pool("spec.template.spec.requirements", `[{key: a, operator: Exists, values: [x]}]`), "Exists and DoesNotExist take no values"},
		{"pool Gt two values", pool("spec.template.spec.requirements", `[{key: a, operator: Gt, values: ["1", "2"]}]`), "Gt and Lt take exactly one integer value"},
		{"pool Lt not a number", pool("spec.template.spec.requirements", `[{key: a, operator: Lt, values: [x]}]`), "Gt and Lt take exactly one integer value"},
		{"pool minValues above values", pool("spec.template.spec.requirements", `[{key: a, operator: In, values: [x], minValues: 2}]`), "minValues needs In with at least minValues values"},
		{"pool minValues with Gt", pool("spec.template.spec.requirements", `[{key: a, operator: Gt, values: ["1"], minValues: 1}]`), "minValues needs"},
		{"pool expireAfter 21d", pool("spec.template.spec.expireAfter", `504h`), ""},
		{"pool expireAfter over 21d", pool("spec.template.spec.expireAfter", `505h`), "at most 504h"},
		{"pool expireAfter zero", pool("spec.template.spec.expireAfter", `0s`), "more than 0s"},
		{"pool expireAfter not a duration", pool("spec.template.spec.expireAfter", `2w`), "should match"},
		{"pool budget count", pool("spec.disruption", `{consolidateAfter: 1m, budgets: [{nodes: "5"}]}`), ""},
		{"pool budget percent", pool("spec.disruption", `{consolidateAfter: Never, budgets: [{nodes: "100%"}]}`), ""},
		{"pool budget percent over 100", pool("spec.disruption", `{consolidateAfter: 1m, budgets: [{nodes: "101%"}]}`), "should match"},
		{"pool budget words", pool("spec.disruption", `{consolidateAfter: 1m, budgets: [{nodes: "some"}]}`), "should match"},
		{"pool budget window", pool("spec.disruption", `{consolidateAfter: 1m, budgets: [{nodes: "0", reasons: [Drifted], schedule: "0 9 * * mon-fri", duration: 8h}]}`), ""},
		{"pool budget schedule without duration", pool("spec.disruption", `{consolidateAfter: 1m, budgets: [{nodes: "0", schedule: "@daily"}]}`), "schedule and duration go together"},
		{"pool budget duration without schedule", pool("spec.disruption", `{consolidateAfter: 1m, budgets: [{nodes: "0", duration: 1h}]}`), "schedule and duration go together"},
		{"pool budget bad reason", pool("spec.disruption", `{consolidateAfter: 1m, budgets: [{reasons: [Bored]}]}`), "Unsupported value"},
		{"pool bad policy", pool("spec.disruption", `{consolidateAfter: 1m, consolidationPolicy: Always}`), "Unsupported value"},
		{"pool consolidateAfter bad", pool("spec.disruption", `{consolidateAfter: soon}`), "should match"},
		{"pool weight over 100", pool("spec.weight", `101`), "less than or equal to 100"},
		{"pool reserved label", pool("spec.template.metadata", `{labels: {autonode.dev/nodepool: x}}`), "set by the provisioner"},
		{"pool limits", pool("spec.limits", `{cpu: "1000", memory: 1000Gi, nvidia.com/gpu: "8"}`), ""},
		{"class minimal", validClass, ""},
		{"class role and profile", class("spec.instanceProfile", `p`), "set exactly one of role and instanceProfile"},
		{"class alias with id", class("spec.amiSelectorTerms", `[{alias: autonode@latest, id: ami-123}]`), "alias stands alone"},
		{"class alias with another term", class("spec.amiSelectorTerms", `[{alias: autonode@latest}, {id: ami-123}]`), "an alias term must be the only"},
		{"class alias version", class("spec.amiSelectorTerms", `[{alias: autonode@v1.2.3}]`), ""},
		{"class bad alias", class("spec.amiSelectorTerms", `[{alias: bottlerocket@latest}]`), "should match"},
		{"class ami by name and owner", class("spec.amiSelectorTerms", `[{name: "autonode-*", owner: self}]`), ""},
		{"class empty ami term", class("spec.amiSelectorTerms", `[{owner: self}]`), "a term needs alias, id, name or tags"},
		{"class subnet id and tags", class("spec.subnetSelectorTerms", `[{id: subnet-1, tags: {a: b}}]`), "by id or by tags, not both"},
		{"class no subnets", class("spec.subnetSelectorTerms", `[]`), "should have at least 1 items"},
		{"class sg two ways", class("spec.securityGroupSelectorTerms", `[{id: sg-1, name: web}]`), "exactly one of id, name and tags"},
		{"class reserved tag", class("spec.tags", `{autonode.dev/cluster: x}`), "set by the provisioner"},
		{"class two root volumes", class("spec.blockDeviceMappings", `[{deviceName: /dev/xvda, rootVolume: true, ebs: {volumeSize: 20Gi}}, {deviceName: /dev/xvdb, rootVolume: true, ebs: {}}]`), "at most one block device"},
		{"class volumes", class("spec.blockDeviceMappings", `[{deviceName: /dev/xvda, rootVolume: true, ebs: {volumeSize: 20Gi, volumeType: gp3, iops: 3000, throughput: 125, encrypted: true}}]`), ""},
		{"class instance store", class("spec.instanceStorePolicy", `RAID0`), ""},
		{"class bad instance store", class("spec.instanceStorePolicy", `RAID5`), "Unsupported value"},
		{"claim minimal", validClaim, ""},
		{"claim bad requirement", claim("spec.requirements", `[{key: a, operator: Gt}]`), "Gt and Lt take exactly one integer value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := decode(t, tt.obj)
			err := c.Create(t.Context(), obj, client.DryRunAll)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("accepted, want an error with %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %v, want one with %q", err, tt.wantErr)
			}
		})
	}

	t.Run("claim spec immutable", func(t *testing.T) {
		ctx := t.Context()
		nc := &v1.NodeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "immutable"},
			Spec: v1.NodeClaimSpec{
				NodeClassRef: v1.NodeClassReference{Name: "default"},
				Resources:    v1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}},
			},
		}
		if err := c.Create(ctx, nc); err != nil {
			t.Fatal(err)
		}
		nc.Spec.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("2")
		if err := c.Update(ctx, nc); err == nil || !strings.Contains(err.Error(), "spec is immutable") {
			t.Fatalf("update of spec: %v, want spec is immutable", err)
		}
		// Status stays writable through its subresource.
		if err := c.Get(ctx, client.ObjectKeyFromObject(nc), nc); err != nil {
			t.Fatal(err)
		}
		nc.Status.ProviderID = "aws:///us-west-2a/i-0123"
		if err := c.Status().Update(ctx, nc); err != nil {
			t.Fatalf("status update: %v", err)
		}
	})
}

// patch sets one dotted path of a YAML object to a YAML value.
func patch(t *testing.T, doc, path, value string) string {
	t.Helper()
	obj := decode(t, doc)
	var v any
	if err := yaml.Unmarshal([]byte(value), &v); err != nil {
		t.Fatalf("value %q: %v", value, err)
	}
	if err := unstructured.SetNestedField(obj.Object, v, strings.Split(path, ".")...); err != nil {
		t.Fatalf("setting %s: %v", path, err)
	}
	out, err := obj.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func decode(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("decoding %q: %v", doc, err)
	}
	return &unstructured.Unstructured{Object: m}
}
