package cloud

import (
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	sdkec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/pelletier/go-toml/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
	"github.com/autonode/autonode/sandbox/catalog"
	sandboxec2 "github.com/autonode/autonode/sandbox/ec2"
	"github.com/autonode/autonode/sandbox/vpc"
)

const testCA = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"

type env struct {
	srv      *sandboxec2.Server
	model    *vpc.Model
	client   *sdkec2.Client
	provider *Provider
	class    *v1.NodeClass
}

// newEnv starts the EC2 emulator over a VPC whose subnets and one security
// group carry autonode.dev/discovery, and a provider priced by the
// sandbox's built-in catalog.
func newEnv(t *testing.T, edit ...func(*Options)) *env {
	t.Helper()
	m, err := vpc.New(vpc.Config{Subnets: []vpc.SubnetConfig{
		{Zone: "us-west-2a", CIDR: "10.0.0.0/20", Tags: map[string]string{"autonode.dev/discovery": "test"}},
		{Zone: "us-west-2b", CIDR: "10.0.16.0/20", Tags: map[string]string{"autonode.dev/discovery": "test"}},
		{Zone: "us-west-2c", CIDR: "10.0.32.0/20", Tags: map[string]string{"autonode.dev/discovery": "test"}},
		{Zone: "us-west-2a", CIDR: "10.0.48.0/20", Tags: map[string]string{"other": "x"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	m.AddSecurityGroup("nodes", "autonode nodes", map[string]string{"autonode.dev/discovery": "test"})
	srv, err := sandboxec2.New(sandboxec2.Options{Model: m})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	client := sdkec2.NewFromConfig(aws.Config{Region: "us-west-2", Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", "")},
		func(o *sdkec2.Options) { o.BaseEndpoint = aws.String(ts.URL) })
	prices := StaticPrices{}
	for _, it := range catalog.Default() {
		prices[it.Name] = it.PriceUSDHour
	}
	opts := Options{
		EC2: client, Prices: prices,
		Cluster: Cluster{Name: "test", Endpoint: "https://10.0.0.1:6443", CA: []byte(testCA), DNSIP: "10.100.0.10"},
	}
	for _, e := range edit {
		e(&opts)
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	class := &v1.NodeClass{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1.NodeClassSpec{
			Role:                       "autonode-node",
			AMISelectorTerms:           []v1.AMISelectorTerm{{Alias: "autonode@latest"}},
			SubnetSelectorTerms:        []v1.SelectorTerm{{Tags: map[string]string{"autonode.dev/discovery": "*"}}},
			SecurityGroupSelectorTerms: []v1.SecurityGroupSelectorTerm{{Tags: map[string]string{"autonode.dev/discovery": "test"}}},
			Tags:                       map[string]string{"team": "platform"},
		},
	}
	return &env{srv: srv, model: m, client: client, provider: p, class: class}
}

func (e *env) resolve(t *testing.T) *ResolvedNodeClass {
	t.Helper()
	rc, err := e.provider.ResolveNodeClass(t.Context(), e.class)
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func claim(name string, reqs ...v1.NodeSelectorRequirementWithMinValues) *v1.NodeClaim {
	return &v1.NodeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1.LabelNodePool: "general", v1.LabelNodeClaim: name, "team": "a"}},
		Spec: v1.NodeClaimSpec{
			NodeClassRef:  v1.NodeClassReference{Name: "default"},
			Requirements:  reqs,
			Taints:        []corev1.Taint{{Key: "dedicated", Value: "batch", Effect: corev1.TaintEffectNoSchedule}},
			StartupTaints: []corev1.Taint{{Key: v1.StartupTaintAgentNotReady, Effect: corev1.TaintEffectNoSchedule}},
		},
	}
}

func req(key string, op corev1.NodeSelectorOperator, values ...string) v1.NodeSelectorRequirementWithMinValues {
	return v1.NodeSelectorRequirementWithMinValues{Key: key, Operator: op, Values: values}
}

func TestResolveNodeClass(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := e.resolve(t)
	if got := rc.Zones(); !slices.Equal(got, []string{"us-west-2a", "us-west-2b", "us-west-2c"}) {
		t.Errorf("zones = %v", got)
	}
	if len(rc.Subnets) != 3 || len(rc.SecurityGroups) != 1 || rc.SecurityGroups[0].Name != "nodes" || rc.InstanceProfile != "autonode-node" {
		t.Errorf("resolved %+v", rc)
	}
	tests := []struct {
		alias, amd64, arm64 string
	}{
		{"autonode@latest", sandboxec2.VariantImageName("x86_64", "v1.2.0"), sandboxec2.VariantImageName("arm64", "v1.2.0")},
		{"autonode@v1.1.0", sandboxec2.VariantImageName("x86_64", "v1.1.0"), sandboxec2.VariantImageName("arm64", "v1.1.0")},
		{"autonode@v1", sandboxec2.VariantImageName("x86_64", "v1.2.0"), sandboxec2.VariantImageName("arm64", "v1.2.0")},
		{"autonode@v1.0", sandboxec2.VariantImageName("x86_64", "v1.0.0"), sandboxec2.VariantImageName("arm64", "v1.0.0")},
	}
	for _, tt := range tests {
		e.class.Spec.AMISelectorTerms = []v1.AMISelectorTerm{{Alias: tt.alias}}
		rc := e.resolve(t)
		if rc.AMIs["amd64"].Name != tt.amd64 || rc.AMIs["arm64"].Name != tt.arm64 {
			t.Errorf("%s: amd64 %s arm64 %s, want %s and %s", tt.alias, rc.AMIs["amd64"].Name, rc.AMIs["arm64"].Name, tt.amd64, tt.arm64)
		}
	}
	// A new release becomes the alias's answer at once.
	newer := e.srv.AddImage(sandboxec2.Image{
		Name: sandboxec2.VariantImageName("x86_64", "v1.3.0"), OwnerID: e.model.AccountID(), Architecture: "x86_64",
		CreationDate: sandboxec2.DefaultImages(e.model.AccountID())[0].CreationDate.AddDate(1, 0, 0),
	})
	e.class.Spec.AMISelectorTerms = []v1.AMISelectorTerm{{Alias: "autonode@latest"}}
	if got := e.resolve(t).AMIs["amd64"].ID; got != newer.ID {
		t.Errorf("after a new release: %s, want %s", got, newer.ID)
	}

	e.class.Spec.SubnetSelectorTerms = []v1.SelectorTerm{{Tags: map[string]string{"autonode.dev/discovery": "nope"}}}
	if _, err := e.provider.ResolveNodeClass(t.Context(), e.class); err == nil || !strings.Contains(err.Error(), "nodeclass default: no subnet") {
		t.Errorf("no subnets: %v", err)
	}
}

func TestInstanceTypes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name        string
		overhead    float64
		wantMemMiB  int64
		wantPods    int64
		prefixDeleg bool
	}{
		{"default overhead", 0, 7578, 29, false}, // ceil(8192 * 0.925); 3 ENIs * 9 + 2
		{"10% overhead", 10, 7373, 29, false},
		{"prefix delegation", 0, 7578, 110, true}, // 3*9*16+2 = 434, capped at 110
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(o *Options) { o.VMMemoryOverheadPercent = tt.overhead; o.PrefixDelegation = tt.prefixDeleg })
			types, err := e.provider.InstanceTypes(t.Context(), e.resolve(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(types) != len(catalog.Default()) {
				t.Errorf("%d types, want the catalog's %d", len(types), len(catalog.Default()))
			}
			i := slices.IndexFunc(types, func(it *InstanceType) bool { return it.Name == "m5.large" })
			it := types[i]
			for k, want := range map[string]string{
				v1.LabelInstanceCategory: "m", v1.LabelInstanceGeneration: "5", v1.LabelInstanceFamily: "m5", v1.LabelInstanceSize: "large",
				corev1.LabelArchStable: "amd64", corev1.LabelInstanceTypeStable: "m5.large", LabelInstanceCPU: "2", LabelInstanceMemory: "8192",
			} {
				if it.Labels[k] != want {
					t.Errorf("label %s = %q, want %q", k, it.Labels[k], want)
				}
			}
			mem, pods, cpu := it.Capacity[corev1.ResourceMemory], it.Capacity[corev1.ResourcePods], it.Capacity[corev1.ResourceCPU]
			if mem.Value() != tt.wantMemMiB<<20 || pods.Value() != tt.wantPods || cpu.MilliValue() != 2000 {
				t.Errorf("capacity %v", it.Capacity)
			}
			eph := it.Capacity[corev1.ResourceEphemeralStorage]
			if eph.Cmp(resource.MustParse("20Gi")) != 0 {
				t.Errorf("ephemeral storage %s, want the 20Gi data volume", eph.String())
			}
			for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage} {
				a, c := it.Allocatable[name], it.Capacity[name]
				if a.Cmp(c) >= 0 || a.Sign() <= 0 {
					t.Errorf("%s allocatable %s, capacity %s: want reservations taken off", name, a.String(), c.String())
				}
			}
			if len(it.Offerings) != 6 {
				t.Fatalf("offerings %+v, want on-demand and spot in 3 zones", it.Offerings)
			}
			for _, o := range it.Offerings {
				want := 0.096
				if o.CapacityType == v1.CapacityTypeSpot {
					want, _ = e.srv.SpotPrice("m5.large", o.Zone)
				}
				if o.Price != want || !o.Available {
					t.Errorf("offering %+v, want price %v", o, want)
				}
			}
			g := types[slices.IndexFunc(types, func(it *InstanceType) bool { return it.Name == "p4d.24xlarge" })]
			gpus, efa := g.Allocatable[ResourceNVIDIAGPU], g.Allocatable[ResourceEFA]
			if gpus.Value() != 8 || efa.Value() != 4 || g.Labels[LabelInstanceGPUName] != "a100" {
				t.Errorf("p4d: gpus %v efa %v labels %v", gpus, efa, g.Labels)
			}
			inf := types[slices.IndexFunc(types, func(it *InstanceType) bool { return it.Name == "inf2.xlarge" })]
			if n, c := inf.Allocatable[ResourceNeuron], inf.Allocatable[ResourceNeuronCore]; n.Value() != 1 || c.Value() != 2 {
				t.Errorf("inf2: neuron %v cores %v", n, c)
			}
		})
	}
}

// launched describes the instance a Launch made, through the SDK.
func (e *env) described(t *testing.T, id string) map[string]string {
	t.Helper()
	out, err := e.client.DescribeInstances(t.Context(), &sdkec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	i := out.Reservations[0].Instances[0]
	tags := map[string]string{"@type": string(i.InstanceType), "@image": aws.ToString(i.ImageId), "@zone": aws.ToString(i.Placement.AvailabilityZone), "@lifecycle": string(i.InstanceLifecycle)}
	for _, tag := range i.Tags {
		tags[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
	}
	return tags
}

func TestLaunchOnDemand(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := e.resolve(t)
	c := claim("nc-od",
		req(v1.LabelCapacityType, corev1.NodeSelectorOpIn, "on-demand"),
		req(corev1.LabelInstanceTypeStable, corev1.NodeSelectorOpIn, "m5.xlarge", "c5.large", "m5.large"),
		req(corev1.LabelTopologyZone, corev1.NodeSelectorOpNotIn, "us-west-2a"))
	got, err := e.provider.Launch(t.Context(), c, rc)
	if err != nil {
		t.Fatal(err)
	}
	inst := got.Instance
	if inst.Type != "c5.large" || inst.CapacityType != "on-demand" || inst.Zone == "us-west-2a" || got.InstanceType.Name != "c5.large" {
		t.Fatalf("launched %+v", inst)
	}
	if !strings.HasPrefix(inst.ProviderID(), "aws:///us-west-2") || inst.ImageID != rc.AMIs["amd64"].ID {
		t.Errorf("provider id %s image %s", inst.ProviderID(), inst.ImageID)
	}
	tags := e.described(t, inst.ID)
	for k, want := range map[string]string{
		v1.TagCluster: "test", v1.TagNodePool: "general", v1.TagNodeClaim: "nc-od", "team": "platform",
		"@type": "c5.large", "@image": rc.AMIs["amd64"].ID, "@zone": inst.Zone, "@lifecycle": "",
	} {
		if tags[k] != want {
			t.Errorf("instance %s = %q, want %q", k, tags[k], want)
		}
	}
	// The launch template carries AMI, groups, profile, disks and user data.
	out, err := e.client.DescribeLaunchTemplates(t.Context(), &sdkec2.DescribeLaunchTemplatesInput{})
	if err != nil || len(out.LaunchTemplates) != 1 {
		t.Fatalf("launch templates %+v %v", out, err)
	}
	lt, _ := e.srv.LaunchTemplate(aws.ToString(out.LaunchTemplates[0].LaunchTemplateName))
	if lt.ImageID != rc.AMIs["amd64"].ID || lt.InstanceProfile != "autonode-node" || !slices.Equal(lt.SecurityGroupIDs, []string{rc.SecurityGroups[0].ID}) {
		t.Errorf("launch template %+v", lt)
	}
	if len(lt.BlockDevices) != 2 || lt.BlockDevices[0].DeviceName != "/dev/xvda" || lt.BlockDevices[1].VolumeSizeGiB != 20 || !lt.BlockDevices[1].Encrypted {
		t.Errorf("block devices %+v", lt.BlockDevices)
	}
	var ud struct {
		Settings struct {
			Kubernetes map[string]any `toml:"kubernetes"`
		} `toml:"settings"`
	}
	if err := toml.Unmarshal(lt.UserData, &ud); err != nil {
		t.Fatalf("user data is not TOML: %v\n%s", err, lt.UserData)
	}
	k := ud.Settings.Kubernetes
	ca, _ := base64.StdEncoding.DecodeString(k["cluster-certificate"].(string))
	if k["cluster-name"] != "test" || k["api-server"] != "https://10.0.0.1:6443" || string(ca) != testCA || k["cluster-dns-ip"] != "10.100.0.10" {
		t.Errorf("settings.kubernetes = %v", k)
	}
	labels, _ := k["node-labels"].(map[string]any)
	if labels[v1.LabelNodePool] != "general" || labels["team"] != "a" || labels[v1.LabelCapacityType] != "on-demand" || labels[v1.LabelNodeClaim] != nil {
		t.Errorf("node-labels = %v", labels)
	}
	taints, _ := k["node-taints"].(map[string]any)
	if !slices.Equal(anyStrings(taints["dedicated"]), []string{"batch:NoSchedule"}) || !slices.Equal(anyStrings(taints[v1.StartupTaintAgentNotReady]), []string{":NoSchedule"}) {
		t.Errorf("node-taints = %v", taints)
	}

	// A second claim of the same pool shares the template.
	if _, err := e.provider.Launch(t.Context(), claim("nc-od2", c.Spec.Requirements...), rc); err != nil {
		t.Fatal(err)
	}
	if out, _ := e.client.DescribeLaunchTemplates(t.Context(), &sdkec2.DescribeLaunchTemplatesInput{}); len(out.LaunchTemplates) != 1 {
		t.Errorf("%d launch templates after two launches, want 1", len(out.LaunchTemplates))
	}
}

func anyStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func TestLaunchFallsBackOnInsufficientCapacity(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name          string
		maxFleetTypes int
		ice           []sandboxec2.Offering
		wantType      string
		wantZone      string
		wantICE       bool
	}{
		// c5.large is cheapest; m5.large next (0.096), m7i.large after.
		{"next type in the same fleet", 0, []sandboxec2.Offering{{InstanceType: "c5.large", Zone: "*", CapacityType: "on-demand"}}, "m5.large", "", false},
		{"next fleet when the first had one type", 1, []sandboxec2.Offering{{InstanceType: "c5.large", Zone: "*", CapacityType: "on-demand"}}, "m5.large", "", false},
		{"another zone", 1, []sandboxec2.Offering{
			{InstanceType: "c5.large", Zone: "us-west-2a", CapacityType: "on-demand"},
			{InstanceType: "c5.large", Zone: "us-west-2b", CapacityType: "on-demand"},
		}, "c5.large", "us-west-2c", false},
		{"nothing left", 0, []sandboxec2.Offering{
			{InstanceType: "c5.large", Zone: "*", CapacityType: "*"}, {InstanceType: "m5.large", Zone: "*", CapacityType: "*"},
		}, "", "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(o *Options) { o.MaxFleetTypes = tt.maxFleetTypes })
			rc := e.resolve(t)
			for _, o := range tt.ice {
				e.srv.SetInsufficientCapacity(o, true)
			}
			c := claim("nc-ice",
				req(v1.LabelCapacityType, corev1.NodeSelectorOpIn, "on-demand"),
				req(corev1.LabelInstanceTypeStable, corev1.NodeSelectorOpIn, "c5.large", "m5.large"))
			got, err := e.provider.Launch(t.Context(), c, rc)
			if tt.wantICE {
				var ice *InsufficientCapacityError
				if !errors.As(err, &ice) || !IsInsufficientCapacity(err) || len(ice.Offerings) != 6 {
					t.Fatalf("Launch: %v, want InsufficientCapacityError over 6 offerings", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Instance.Type != tt.wantType || (tt.wantZone != "" && got.Instance.Zone != tt.wantZone) {
				t.Fatalf("launched %s in %s, want %s %s", got.Instance.Type, got.Instance.Zone, tt.wantType, tt.wantZone)
			}
			// The refused offerings are now reported unavailable.
			types, err := e.provider.InstanceTypes(t.Context(), rc)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range types {
				if it.Name != "c5.large" {
					continue
				}
				for _, o := range it.Offerings {
					refused := o.CapacityType == "on-demand" && (tt.wantType != "c5.large" || o.Zone != tt.wantZone)
					if o.Available == refused {
						t.Errorf("c5.large %s %s available=%v after the launch", o.Zone, o.CapacityType, o.Available)
					}
				}
			}
		})
	}
}

func TestLaunchSpot(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := e.resolve(t)
	// On demand c5.large is cheaper; as spot, m5.large in us-west-2b is.
	for _, z := range rc.Zones() {
		e.srv.SetSpotPrice("c5.large", z, 0.03)
		e.srv.SetSpotPrice("m5.large", z, 0.04)
	}
	e.srv.SetSpotPrice("m5.large", "us-west-2b", 0.02)
	if err := e.provider.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	both := []v1.NodeSelectorRequirementWithMinValues{
		req(v1.LabelCapacityType, corev1.NodeSelectorOpIn, "spot", "on-demand"),
		req(corev1.LabelInstanceTypeStable, corev1.NodeSelectorOpIn, "c5.large", "m5.large"),
	}
	got, err := e.provider.Launch(t.Context(), claim("nc-spot", both...), rc)
	if err != nil {
		t.Fatal(err)
	}
	if got.Instance.Type != "m5.large" || got.Instance.Zone != "us-west-2b" || got.Instance.CapacityType != "spot" {
		t.Fatalf("launched %+v, want spot m5.large in us-west-2b", got.Instance)
	}
	if tags := e.described(t, got.Instance.ID); tags["@lifecycle"] != "spot" {
		t.Errorf("lifecycle %q", tags["@lifecycle"])
	}
	// With every spot pool out, the claim falls back to on-demand.
	e.srv.SetInsufficientCapacity(sandboxec2.Offering{InstanceType: "c5.large", Zone: "*", CapacityType: "spot"}, true)
	e.srv.SetInsufficientCapacity(sandboxec2.Offering{InstanceType: "m5.large", Zone: "*", CapacityType: "spot"}, true)
	got, err = e.provider.Launch(t.Context(), claim("nc-spot2", both...), rc)
	if err != nil {
		t.Fatal(err)
	}
	if got.Instance.CapacityType != "on-demand" || got.Instance.Type != "c5.large" {
		t.Fatalf("fallback launched %+v, want on-demand c5.large", got.Instance)
	}
}

func TestLaunchPerArchitecture(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := e.resolve(t)
	for _, tt := range []struct {
		arch, ec2Arch string
	}{{"arm64", "arm64"}, {"amd64", "x86_64"}} {
		got, err := e.provider.Launch(t.Context(), claim("nc-"+tt.arch,
			req(corev1.LabelArchStable, corev1.NodeSelectorOpIn, tt.arch),
			req(v1.LabelCapacityType, corev1.NodeSelectorOpIn, "on-demand")), rc)
		if err != nil {
			t.Fatal(err)
		}
		it, _ := catalog.Lookup(got.Instance.Type)
		tags := e.described(t, got.Instance.ID)
		if it.Arch != tt.arch || tags["@image"] != rc.AMIs[tt.arch].ID || !strings.Contains(rc.AMIs[tt.arch].Name, tt.ec2Arch) {
			t.Errorf("%s: launched %s on %s (%s)", tt.arch, got.Instance.Type, tags["@image"], rc.AMIs[tt.arch].Name)
		}
	}
	// GPU requests narrow the types to those that have GPUs.
	c := claim("nc-gpu", req(v1.LabelCapacityType, corev1.NodeSelectorOpIn, "on-demand"))
	c.Spec.Resources.Requests = corev1.ResourceList{ResourceNVIDIAGPU: resource.MustParse("1")}
	got, err := e.provider.Launch(t.Context(), c, rc)
	if err != nil || got.Instance.Type != "g4dn.xlarge" {
		t.Fatalf("gpu claim: %+v %v, want the cheapest GPU type g4dn.xlarge", got, err)
	}
}

func TestInstancesLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := e.resolve(t)
	ctx := t.Context()
	var ids []string
	for _, name := range []string{"nc-1", "nc-2"} {
		got, err := e.provider.Launch(ctx, claim(name, req(v1.LabelCapacityType, corev1.NodeSelectorOpIn, "on-demand")), rc)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got.Instance.ID)
	}
	// An instance of someone else is not listed.
	if _, err := e.model.LaunchInstance("m5.large", "", map[string]string{v1.TagCluster: "other"}); err != nil {
		t.Fatal(err)
	}
	list := func() []string {
		t.Helper()
		insts, err := e.provider.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, i := range insts {
			out = append(out, i.ID+"="+i.NodeClaim())
		}
		slices.Sort(out)
		return out
	}
	want := []string{ids[0] + "=nc-1", ids[1] + "=nc-2"}
	slices.Sort(want)
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	got, err := e.provider.Get(ctx, ids[0])
	if err != nil || got.NodeClaim() != "nc-1" || got.State != "running" {
		t.Fatalf("Get = %+v %v", got, err)
	}
	if err := e.provider.Terminate(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := e.provider.Get(ctx, ids[0]); !errors.Is(err, ErrInstanceNotFound) {
		t.Errorf("Get after terminate: %v", err)
	}
	if err := e.provider.Terminate(ctx, ids[0]); !errors.Is(err, ErrInstanceNotFound) {
		t.Errorf("second terminate: %v", err)
	}
	if err := e.provider.Terminate(ctx, "i-0000000000000dead"); !errors.Is(err, ErrInstanceNotFound) {
		t.Errorf("unknown terminate: %v", err)
	}
	if got := list(); !slices.Equal(got, []string{ids[1] + "=nc-2"}) {
		t.Errorf("List after terminate = %v", got)
	}
}

func TestLaunchKeepsMinValues(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		minValues  *int32
		wantFleets int
		wantErr    string
	}{
		// One type per fleet: c5.large has no room, so a second fleet is needed.
		{"without minValues", nil, 2, ""},
		// minValues 2 puts two types in the first fleet, which falls back inside it.
		{"with minValues", ptr(int32(2)), 1, ""},
		// Only two types exist, and c5.large has no room.
		{"unmeetable", ptr(int32(3)), 0, "needs 3 distinct values"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(o *Options) { o.MaxFleetTypes = 1 })
			rc := e.resolve(t)
			e.srv.SetInsufficientCapacity(sandboxec2.Offering{InstanceType: "c5.large", Zone: "*", CapacityType: "*"}, true)
			r := req(corev1.LabelInstanceTypeStable, corev1.NodeSelectorOpIn, "c5.large", "m5.large")
			r.MinValues = tt.minValues
			_, err := e.provider.Launch(t.Context(), claim("nc-min", r, req(v1.LabelCapacityType, corev1.NodeSelectorOpIn, "on-demand")), rc)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Launch: %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := e.srv.Calls("CreateFleet"); got != tt.wantFleets {
				t.Errorf("%d CreateFleet calls, want %d", got, tt.wantFleets)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
