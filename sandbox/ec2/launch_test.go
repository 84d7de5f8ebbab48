package ec2

import (
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdkec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/autonode/autonode/sandbox/vpc"
)

// newLaunchFixture is newFixture with a launch template "lt-nodes" that boots the
// newest x86_64 variant image with one extra security group.
func newLaunchFixture(t *testing.T) (fixture, *sdkec2.Client, Image) {
	t.Helper()
	f := newFixture(t)
	c := f.client()
	sg := f.model.AddSecurityGroup("nodes", "autonode nodes", map[string]string{"autonode.dev/discovery": "test"})
	img := newestImage(t, f.srv, "x86_64")
	_, err := c.CreateLaunchTemplate(t.Context(), &sdkec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String("lt-nodes"),
		LaunchTemplateData: &types.RequestLaunchTemplateData{
			ImageId: aws.String(img.ID), SecurityGroupIds: []string{sg.ID},
			UserData: aws.String(base64.StdEncoding.EncodeToString([]byte("[settings.kubernetes]\n"))),
			TagSpecifications: []types.LaunchTemplateTagSpecificationRequest{{
				ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("from"), Value: aws.String("template")}},
			}},
		},
	})
	if err != nil {
		t.Fatalf("CreateLaunchTemplate: %v", err)
	}
	return f, c, img
}

func newestImage(t *testing.T, srv *Server, arch string) Image {
	t.Helper()
	var best Image
	for _, img := range DefaultImages("111122223333") {
		if img.Architecture == arch && strings.HasPrefix(img.Name, "autonode-") && img.CreationDate.After(best.CreationDate) {
			best = img
		}
	}
	if _, ok := srv.launch.image(best.ID); !ok {
		t.Fatalf("no %s image", arch)
	}
	return best
}

func fleetInput(capacityType types.DefaultTargetCapacityType, total int32, overrides ...types.FleetLaunchTemplateOverridesRequest) *sdkec2.CreateFleetInput {
	return &sdkec2.CreateFleetInput{
		Type: types.FleetTypeInstant,
		LaunchTemplateConfigs: []types.FleetLaunchTemplateConfigRequest{{
			LaunchTemplateSpecification: &types.FleetLaunchTemplateSpecificationRequest{LaunchTemplateName: aws.String("lt-nodes"), Version: aws.String("$Latest")},
			Overrides:                   overrides,
		}},
		TargetCapacitySpecification: &types.TargetCapacitySpecificationRequest{TotalTargetCapacity: aws.Int32(total), DefaultTargetCapacityType: capacityType},
		OnDemandOptions:             &types.OnDemandOptionsRequest{AllocationStrategy: types.FleetOnDemandAllocationStrategyLowestPrice},
		SpotOptions:                 &types.SpotOptionsRequest{AllocationStrategy: types.SpotAllocationStrategyPriceCapacityOptimized},
		TagSpecifications: []types.TagSpecification{{
			ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("autonode.dev/nodeclaim"), Value: aws.String("nc-1")}},
		}},
	}
}

func override(typ, zone string) types.FleetLaunchTemplateOverridesRequest {
	return types.FleetLaunchTemplateOverridesRequest{InstanceType: types.InstanceType(typ), AvailabilityZone: aws.String(zone)}
}

type launchedPool struct{ typ, zone, lifecycle string }

func pools(out *sdkec2.CreateFleetOutput) (launched []launchedPool, ids []string, errs []string) {
	for _, i := range out.Instances {
		o := i.LaunchTemplateAndOverrides.Overrides
		launched = append(launched, launchedPool{string(o.InstanceType), aws.ToString(o.AvailabilityZone), string(i.Lifecycle)})
		ids = append(ids, i.InstanceIds...)
	}
	for _, e := range out.Errors {
		o := e.LaunchTemplateAndOverrides.Overrides
		errs = append(errs, string(o.InstanceType)+"/"+aws.ToString(o.AvailabilityZone)+"/"+string(e.Lifecycle)+":"+aws.ToString(e.ErrorCode))
	}
	return launched, ids, errs
}

func TestCreateFleet(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		ice       []Offering
		in        func() *sdkec2.CreateFleetInput
		wantPools []launchedPool
		wantErrs  []string
		wantN     int
	}{
		{
			name: "on-demand lowest price",
			in: func() *sdkec2.CreateFleetInput {
				return fleetInput("on-demand", 1, override("m5.xlarge", "us-west-2a"), override("c5.large", "us-west-2b"), override("m5.large", "us-west-2a"))
			},
			wantPools: []launchedPool{{"c5.large", "us-west-2b", "on-demand"}},
			wantN:     1,
		},
		{
			name: "insufficient capacity falls back to the next pool",
			ice:  []Offering{{"c5.large", "us-west-2b", "on-demand"}},
			in: func() *sdkec2.CreateFleetInput {
				return fleetInput("on-demand", 1, override("c5.large", "us-west-2b"), override("m5.large", "us-west-2a"))
			},
			wantPools: []launchedPool{{"m5.large", "us-west-2a", "on-demand"}},
			wantErrs:  []string{"c5.large/us-west-2b/on-demand:InsufficientInstanceCapacity"},
			wantN:     1,
		},
		{
			name: "every pool exhausted is still HTTP 200",
			ice:  []Offering{{"c5.large", "*", "*"}, {"m5.large", "us-west-2a", "on-demand"}},
			in: func() *sdkec2.CreateFleetInput {
				return fleetInput("on-demand", 1, override("c5.large", "us-west-2b"), override("m5.large", "us-west-2a"))
			},
			wantErrs: []string{"c5.large/us-west-2b/on-demand:InsufficientInstanceCapacity", "m5.large/us-west-2a/on-demand:InsufficientInstanceCapacity"},
		},
		{
			name:      "spot exhaustion leaves on-demand alone",
			ice:       []Offering{{"c5.large", "us-west-2b", "spot"}},
			in:        func() *sdkec2.CreateFleetInput { return fleetInput("on-demand", 1, override("c5.large", "us-west-2b")) },
			wantPools: []launchedPool{{"c5.large", "us-west-2b", "on-demand"}},
			wantN:     1,
		},
		{
			name: "arm64 type on an x86_64 image",
			in: func() *sdkec2.CreateFleetInput {
				return fleetInput("on-demand", 1, override("c6g.large", "us-west-2a"), override("m5.large", "us-west-2a"))
			},
			wantPools: []launchedPool{{"m5.large", "us-west-2a", "on-demand"}},
			wantErrs:  []string{"c6g.large/us-west-2a/on-demand:InvalidParameterValue"},
			wantN:     1,
		},
		{
			name:      "several instances from one pool",
			in:        func() *sdkec2.CreateFleetInput { return fleetInput("on-demand", 3, override("m5.large", "us-west-2c")) },
			wantPools: []launchedPool{{"m5.large", "us-west-2c", "on-demand"}},
			wantN:     3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, c, img := newLaunchFixture(t)
			for _, o := range tt.ice {
				f.srv.SetInsufficientCapacity(o, true)
			}
			out, err := c.CreateFleet(t.Context(), tt.in())
			if err != nil {
				t.Fatalf("CreateFleet: %v", err)
			}
			got, ids, errs := pools(out)
			if !slices.Equal(got, tt.wantPools) {
				t.Errorf("launched %v, want %v", got, tt.wantPools)
			}
			if !slices.Equal(errs, tt.wantErrs) {
				t.Errorf("errors %v, want %v", errs, tt.wantErrs)
			}
			if len(ids) != tt.wantN || !strings.HasPrefix(aws.ToString(out.FleetId), "fleet-") {
				t.Fatalf("fleet %s launched %v, want %d instances", aws.ToString(out.FleetId), ids, tt.wantN)
			}
			if len(ids) == 0 {
				return
			}
			d, err := c.DescribeInstances(t.Context(), &sdkec2.DescribeInstancesInput{InstanceIds: ids})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range d.Reservations {
				for _, inst := range r.Instances {
					tags := map[string]string{}
					for _, tag := range inst.Tags {
						tags[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
					}
					if tags["autonode.dev/nodeclaim"] != "nc-1" || tags["from"] != "template" {
						t.Errorf("%s tags = %v, want the fleet's and the template's", aws.ToString(inst.InstanceId), tags)
					}
					if aws.ToString(inst.ImageId) != img.ID || inst.State.Name != types.InstanceStateNameRunning || len(inst.SecurityGroups) != 1 {
						t.Errorf("%s: image %s state %s groups %v", aws.ToString(inst.InstanceId), aws.ToString(inst.ImageId), inst.State.Name, inst.SecurityGroups)
					}
				}
			}
		})
	}
}

func TestCreateFleetSpot(t *testing.T) {
	t.Parallel()
	f, c, _ := newLaunchFixture(t)
	// m5.large is dearer on demand than c5.large, but cheaper as spot here.
	f.srv.SetSpotPrice("m5.large", "us-west-2a", 0.01)
	f.srv.SetSpotPrice("c5.large", "us-west-2a", 0.03)
	out, err := c.CreateFleet(t.Context(), fleetInput("spot", 1, override("c5.large", "us-west-2a"), override("m5.large", "us-west-2a")))
	if err != nil {
		t.Fatal(err)
	}
	got, ids, _ := pools(out)
	if want := []launchedPool{{"m5.large", "us-west-2a", "spot"}}; !slices.Equal(got, want) {
		t.Fatalf("launched %v, want %v", got, want)
	}
	d, err := c.DescribeInstances(t.Context(), &sdkec2.DescribeInstancesInput{InstanceIds: ids})
	if err != nil {
		t.Fatal(err)
	}
	if lc := d.Reservations[0].Instances[0].InstanceLifecycle; lc != types.InstanceLifecycleTypeSpot {
		t.Errorf("lifecycle = %q, want spot", lc)
	}
	// A MaxPrice under the market price fails that pool only.
	in := fleetInput("spot", 1, override("m5.large", "us-west-2a"), override("c5.large", "us-west-2a"))
	in.LaunchTemplateConfigs[0].Overrides[0].MaxPrice = aws.String("0.005")
	out, err = c.CreateFleet(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	got, _, errs := pools(out)
	if want := []launchedPool{{"c5.large", "us-west-2a", "spot"}}; !slices.Equal(got, want) || !slices.Equal(errs, []string{"m5.large/us-west-2a/spot:SpotMaxPriceTooLow"}) {
		t.Fatalf("launched %v errors %v", got, errs)
	}
}

func TestCreateFleetValidation(t *testing.T) {
	t.Parallel()
	_, c, _ := newLaunchFixture(t)
	tests := []struct {
		name string
		edit func(*sdkec2.CreateFleetInput)
		code string
	}{
		{"maintain fleets", func(in *sdkec2.CreateFleetInput) { in.Type = types.FleetTypeMaintain }, CodeUnsupportedOperation},
		{"unknown template", func(in *sdkec2.CreateFleetInput) {
			in.LaunchTemplateConfigs[0].LaunchTemplateSpecification.LaunchTemplateName = aws.String("nope")
		}, CodeLaunchTemplateNameNotFound},
		{"unknown template id", func(in *sdkec2.CreateFleetInput) {
			in.LaunchTemplateConfigs[0].LaunchTemplateSpecification = &types.FleetLaunchTemplateSpecificationRequest{LaunchTemplateId: aws.String("lt-0123")}
		}, CodeLaunchTemplateIDNotFound},
		{"bad version", func(in *sdkec2.CreateFleetInput) {
			in.LaunchTemplateConfigs[0].LaunchTemplateSpecification.Version = aws.String("7")
		}, CodeLaunchTemplateVersion},
		{"unknown subnet", func(in *sdkec2.CreateFleetInput) {
			in.LaunchTemplateConfigs[0].Overrides[0].SubnetId = aws.String("subnet-0nope")
		}, CodeSubnetNotFound},
		{"zero capacity", func(in *sdkec2.CreateFleetInput) { in.TargetCapacitySpecification.TotalTargetCapacity = aws.Int32(0) }, CodeInvalidParameterValue},
		{"bad strategy", func(in *sdkec2.CreateFleetInput) { in.SpotOptions.AllocationStrategy = "cheapest" }, CodeInvalidParameterValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := fleetInput("on-demand", 1, override("m5.large", "us-west-2a"))
			tt.edit(in)
			_, err := c.CreateFleet(t.Context(), in)
			var ae smithy.APIError
			if !errors.As(err, &ae) || ae.ErrorCode() != tt.code {
				t.Fatalf("error %v, want API error %s", err, tt.code)
			}
		})
	}
}

func TestInstanceLifecycle(t *testing.T) {
	t.Parallel()
	f, c, _ := newLaunchFixture(t)
	ctx := t.Context()
	out, err := c.CreateFleet(ctx, fleetInput("on-demand", 1, override("m5.large", "us-west-2a")))
	if err != nil {
		t.Fatal(err)
	}
	_, ids, _ := pools(out)
	inst, err := f.model.Instance(ids[0])
	if err != nil || inst.State != "pending" {
		t.Fatalf("after CreateFleet: %v %v, want pending", inst.State, err)
	}
	state := func() types.InstanceStateName {
		t.Helper()
		d, err := c.DescribeInstances(ctx, &sdkec2.DescribeInstancesInput{InstanceIds: ids})
		if err != nil {
			t.Fatal(err)
		}
		return d.Reservations[0].Instances[0].State.Name
	}
	if s := state(); s != types.InstanceStateNameRunning {
		t.Fatalf("state %s, want running", s)
	}
	term, err := c.TerminateInstances(ctx, &sdkec2.TerminateInstancesInput{InstanceIds: ids})
	if err != nil {
		t.Fatal(err)
	}
	sc := term.TerminatingInstances[0]
	if sc.PreviousState.Name != types.InstanceStateNameRunning || sc.CurrentState.Name != types.InstanceStateNameShuttingDown {
		t.Errorf("terminate: %s -> %s", sc.PreviousState.Name, sc.CurrentState.Name)
	}
	if s := state(); s != types.InstanceStateNameTerminated {
		t.Fatalf("state %s, want terminated", s)
	}
	if enis, _ := f.model.InstanceENIs(ids[0]); len(enis) != 0 {
		t.Errorf("terminated instance keeps ENIs %v", enis)
	}
	// Terminating again reports terminated twice; unknown ids fail the call.
	term, err = c.TerminateInstances(ctx, &sdkec2.TerminateInstancesInput{InstanceIds: ids})
	if err != nil || term.TerminatingInstances[0].CurrentState.Name != types.InstanceStateNameTerminated {
		t.Fatalf("second terminate: %+v %v", term, err)
	}
	_, err = c.TerminateInstances(ctx, &sdkec2.TerminateInstancesInput{InstanceIds: []string{"i-0nope"}})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != CodeInstanceNotFound {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestLaunchTemplates(t *testing.T) {
	t.Parallel()
	f, c, img := newLaunchFixture(t)
	ctx := t.Context()
	lt, ok := f.srv.LaunchTemplate("lt-nodes")
	if !ok || lt.ImageID != img.ID || string(lt.UserData) != "[settings.kubernetes]\n" || lt.InstanceTags["from"] != "template" {
		t.Fatalf("stored template %+v", lt)
	}
	var ae smithy.APIError
	for _, tt := range []struct {
		name string
		in   sdkec2.CreateLaunchTemplateInput
		code string
	}{
		{"duplicate", sdkec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("lt-nodes"), LaunchTemplateData: &types.RequestLaunchTemplateData{}}, CodeLaunchTemplateNameExists},
		{"bad name", sdkec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("a b"), LaunchTemplateData: &types.RequestLaunchTemplateData{}}, CodeLaunchTemplateNameMalformed},
		{"bad user data", sdkec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("user-data"), LaunchTemplateData: &types.RequestLaunchTemplateData{UserData: aws.String("%%%")}}, CodeUserDataMalformed},
		{"unknown group", sdkec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("groups"), LaunchTemplateData: &types.RequestLaunchTemplateData{SecurityGroupIds: []string{"sg-0nope"}}}, CodeSecurityGroupNotFound},
	} {
		if _, err := c.CreateLaunchTemplate(ctx, &tt.in); !errors.As(err, &ae) || ae.ErrorCode() != tt.code {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.code)
		}
	}
	d, err := c.DescribeLaunchTemplates(ctx, &sdkec2.DescribeLaunchTemplatesInput{LaunchTemplateNames: []string{"lt-nodes"}})
	if err != nil || len(d.LaunchTemplates) != 1 || aws.ToString(d.LaunchTemplates[0].LaunchTemplateId) != lt.ID {
		t.Fatalf("describe: %+v %v", d, err)
	}
	if _, err := c.DeleteLaunchTemplate(ctx, &sdkec2.DeleteLaunchTemplateInput{LaunchTemplateId: aws.String(lt.ID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeLaunchTemplates(ctx, &sdkec2.DescribeLaunchTemplatesInput{LaunchTemplateNames: []string{"lt-nodes"}}); !errors.As(err, &ae) || ae.ErrorCode() != CodeLaunchTemplateNameNotFound {
		t.Fatalf("describe deleted: %v", err)
	}
}

func TestDescribeImages(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.client()
	names := func(in *sdkec2.DescribeImagesInput) []string {
		t.Helper()
		out, err := c.DescribeImages(t.Context(), in)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, img := range out.Images {
			got = append(got, aws.ToString(img.Name))
		}
		return got
	}
	self := names(&sdkec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []types.Filter{filter("architecture", "arm64"), filter("name", "autonode-*")}})
	want := []string{VariantImageName("arm64", "v1.0.0"), VariantImageName("arm64", "v1.1.0"), VariantImageName("arm64", "v1.2.0")}
	if !slices.Equal(self, want) {
		t.Errorf("self arm64 = %v, want %v", self, want)
	}
	if got := names(&sdkec2.DescribeImagesInput{Owners: []string{"amazon"}}); len(got) != 2 || !strings.HasPrefix(got[0], "bottlerocket-") {
		t.Errorf("amazon = %v", got)
	}
	if got := names(&sdkec2.DescribeImagesInput{Filters: []types.Filter{filter("tag:autonode.dev/version", "v1.1.0")}}); len(got) != 2 {
		t.Errorf("by tag = %v", got)
	}
	_, err := c.DescribeImages(t.Context(), &sdkec2.DescribeImagesInput{ImageIds: []string{"ami-0nope"}})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != CodeImageNotFound {
		t.Errorf("unknown image: %v", err)
	}
}

func TestDescribeSpotPriceHistory(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.client()
	f.srv.SetSpotPrice("m5.large", "us-west-2b", 0.0123)
	var rows []types.SpotPrice
	p := sdkec2.NewDescribeSpotPriceHistoryPaginator(c, &sdkec2.DescribeSpotPriceHistoryInput{
		ProductDescriptions: []string{"Linux/UNIX"}, MaxResults: aws.Int32(7),
	})
	for p.HasMorePages() {
		out, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, out.SpotPriceHistory...)
	}
	if want := len(f.srv.catalog) * 3; len(rows) != want {
		t.Fatalf("%d rows, want one per type and zone (%d)", len(rows), want)
	}
	for _, r := range rows {
		price, err := strconv.ParseFloat(aws.ToString(r.SpotPrice), 64)
		it, _ := f.srv.instanceType(string(r.InstanceType))
		if r.InstanceType == "m5.large" && aws.ToString(r.AvailabilityZone) == "us-west-2b" {
			if price != 0.0123 {
				t.Errorf("set price = %v", price)
			}
			continue
		}
		if err != nil || price < 0.29*it.PriceUSDHour || price > 0.46*it.PriceUSDHour {
			t.Errorf("%s in %s: spot %v for on-demand %v", r.InstanceType, aws.ToString(r.AvailabilityZone), price, it.PriceUSDHour)
		}
	}
	out, err := c.DescribeSpotPriceHistory(t.Context(), &sdkec2.DescribeSpotPriceHistoryInput{
		InstanceTypes: []types.InstanceType{"c5.large"}, AvailabilityZone: aws.String("us-west-2a"),
	})
	if err != nil || len(out.SpotPriceHistory) != 1 {
		t.Fatalf("one type, one zone: %+v %v", out, err)
	}
}

func TestDescribeSecurityGroups(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.client()
	sg := f.model.AddSecurityGroup("nodes", "autonode nodes", map[string]string{"autonode.dev/discovery": "c1"})
	for _, tt := range []struct {
		name string
		in   sdkec2.DescribeSecurityGroupsInput
		want []string
	}{
		{"all", sdkec2.DescribeSecurityGroupsInput{}, []string{"default", "nodes"}},
		{"tag", sdkec2.DescribeSecurityGroupsInput{Filters: []types.Filter{filter("tag:autonode.dev/discovery", "*")}}, []string{"nodes"}},
		{"id", sdkec2.DescribeSecurityGroupsInput{GroupIds: []string{sg.ID}}, []string{"nodes"}},
		{"name", sdkec2.DescribeSecurityGroupsInput{Filters: []types.Filter{filter("group-name", "default")}}, []string{"default"}},
	} {
		out, err := c.DescribeSecurityGroups(t.Context(), &tt.in)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var got []string
		for _, g := range out.SecurityGroups {
			got = append(got, aws.ToString(g.GroupName))
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestInstanceStatesFollowTheClock(t *testing.T) {
	t.Parallel()
	var (
		mu  sync.Mutex
		now = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	tick := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	m, err := vpc.New(vpc.Config{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Model: m, Launch: LaunchOptions{Now: clock, PendingFor: time.Minute, ShuttingDownFor: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	c := fixture{url: ts.URL}.client()
	img := newestImage(t, srv, "x86_64")
	if _, err := c.CreateLaunchTemplate(t.Context(), &sdkec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String("lt-nodes"), LaunchTemplateData: &types.RequestLaunchTemplateData{ImageId: aws.String(img.ID)},
	}); err != nil {
		t.Fatal(err)
	}
	out, err := c.CreateFleet(t.Context(), fleetInput("on-demand", 1, override("m5.large", "us-west-2a")))
	if err != nil {
		t.Fatal(err)
	}
	_, ids, _ := pools(out)
	state := func() types.InstanceStateName {
		t.Helper()
		d, err := c.DescribeInstances(t.Context(), &sdkec2.DescribeInstancesInput{InstanceIds: ids})
		if err != nil {
			t.Fatal(err)
		}
		return d.Reservations[0].Instances[0].State.Name
	}
	for _, step := range []struct {
		advance   time.Duration
		terminate bool
		want      types.InstanceStateName
	}{
		{0, false, types.InstanceStateNamePending},
		{59 * time.Second, false, types.InstanceStateNamePending},
		{time.Second, false, types.InstanceStateNameRunning},
		{0, true, types.InstanceStateNameShuttingDown},
		{29 * time.Second, false, types.InstanceStateNameShuttingDown},
		{time.Second, false, types.InstanceStateNameTerminated},
	} {
		tick(step.advance)
		if step.terminate {
			if _, err := c.TerminateInstances(t.Context(), &sdkec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
				t.Fatal(err)
			}
		}
		if got := state(); got != step.want {
			t.Fatalf("after %v more: %s, want %s", step.advance, got, step.want)
		}
	}
}
