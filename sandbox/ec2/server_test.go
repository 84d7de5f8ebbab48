package ec2

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	sdkec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/autonode/autonode/sandbox/catalog"
	"github.com/autonode/autonode/sandbox/vpc"
)

type fixture struct {
	srv   *Server
	model *vpc.Model
	url   string
	insts []vpc.Instance
}

// newFixture starts a server over a model with three instances: m5.large
// and g5.xlarge in us-west-2a, c6g.large in us-west-2b.
func newFixture(t *testing.T) fixture {
	t.Helper()
	m, err := vpc.New(vpc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	subnets := m.Subnets()
	var insts []vpc.Instance
	for _, l := range []struct {
		typ, subnet string
		tags        map[string]string
	}{
		{"m5.large", subnets[0].ID, map[string]string{"autonode.dev/nodepool": "default"}},
		{"g5.xlarge", subnets[0].ID, map[string]string{"autonode.dev/nodepool": "gpu"}},
		{"c6g.large", subnets[1].ID, nil},
	} {
		inst, err := m.LaunchInstance(l.typ, l.subnet, l.tags)
		if err != nil {
			t.Fatal(err)
		}
		insts = append(insts, inst)
	}
	srv, err := New(Options{Model: m, Rand: rand.NewPCG(7, 7)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return fixture{srv: srv, model: m, url: ts.URL, insts: insts}
}

func (f fixture) client(optFns ...func(*sdkec2.Options)) *sdkec2.Client {
	cfg := aws.Config{Region: "us-west-2", Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", "")}
	return sdkec2.NewFromConfig(cfg, append([]func(*sdkec2.Options){func(o *sdkec2.Options) {
		o.BaseEndpoint = aws.String(f.url)
	}}, optFns...)...)
}

func filter(name string, values ...string) types.Filter {
	return types.Filter{Name: aws.String(name), Values: values}
}

func TestDescribeInstances(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.client()
	ids := func(out *sdkec2.DescribeInstancesOutput) []string {
		var got []string
		for _, r := range out.Reservations {
			for _, i := range r.Instances {
				got = append(got, aws.ToString(i.InstanceId))
			}
		}
		return got
	}
	m5, g5, c6g := f.insts[0].ID, f.insts[1].ID, f.insts[2].ID
	tests := []struct {
		name string
		in   sdkec2.DescribeInstancesInput
		want []string
	}{
		{"all", sdkec2.DescribeInstancesInput{}, []string{m5, g5, c6g}},
		{"by id", sdkec2.DescribeInstancesInput{InstanceIds: []string{c6g, m5}}, []string{m5, c6g}},
		{"instance-id", sdkec2.DescribeInstancesInput{Filters: []types.Filter{filter("instance-id", g5)}}, []string{g5}},
		{"instance-type wildcard", sdkec2.DescribeInstancesInput{Filters: []types.Filter{filter("instance-type", "m5.*", "c6g.large")}}, []string{m5, c6g}},
		{"availability-zone", sdkec2.DescribeInstancesInput{Filters: []types.Filter{filter("availability-zone", "us-west-2b")}}, []string{c6g}},
		{"instance-state-name", sdkec2.DescribeInstancesInput{Filters: []types.Filter{filter("instance-state-name", "running")}}, []string{m5, g5, c6g}},
		{"stopped", sdkec2.DescribeInstancesInput{Filters: []types.Filter{filter("instance-state-name", "stopped")}}, nil},
		{"tag", sdkec2.DescribeInstancesInput{Filters: []types.Filter{filter("tag:autonode.dev/nodepool", "gpu")}}, []string{g5}},
		{"tag-key", sdkec2.DescribeInstancesInput{Filters: []types.Filter{filter("tag-key", "autonode.dev/nodepool")}}, []string{m5, g5}},
		{"filters and", sdkec2.DescribeInstancesInput{Filters: []types.Filter{filter("availability-zone", "us-west-2a"), filter("instance-type", "g5.*")}}, []string{g5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := c.DescribeInstances(t.Context(), &tt.in)
			if err != nil {
				t.Fatalf("DescribeInstances: %v", err)
			}
			if got := ids(out); !slices.Equal(got, tt.want) {
				t.Errorf("instances = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDescribeInstancesFields(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ip, err := f.model.AssignPrivateIP(f.insts[2].ENIIDs[0])
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.client().DescribeInstances(t.Context(), &sdkec2.DescribeInstancesInput{InstanceIds: []string{f.insts[2].ID}})
	if err != nil {
		t.Fatal(err)
	}
	want := f.insts[2]
	i := out.Reservations[0].Instances[0]
	if i.InstanceType != types.InstanceTypeC6gLarge {
		t.Errorf("type = %s", i.InstanceType)
	}
	if i.Architecture != types.ArchitectureValuesArm64 || aws.ToString(i.Placement.AvailabilityZone) != "us-west-2b" ||
		aws.ToString(i.PrivateIpAddress) != want.PrivateIP.String() || aws.ToString(i.PrivateDnsName) != want.PrivateDNSName ||
		i.State.Name != types.InstanceStateNameRunning || aws.ToInt32(i.State.Code) != 16 || !aws.ToTime(i.LaunchTime).Equal(want.LaunchTime.Truncate(time.Millisecond)) ||
		aws.ToString(i.ImageId) != want.ImageID || aws.ToString(i.SubnetId) != want.SubnetID || aws.ToString(i.VpcId) != want.VPCID {
		t.Errorf("instance = %+v", i)
	}
	if len(i.NetworkInterfaces) != 1 {
		t.Fatalf("network interfaces = %d", len(i.NetworkInterfaces))
	}
	ni := i.NetworkInterfaces[0]
	if aws.ToString(ni.NetworkInterfaceId) != want.ENIIDs[0] || aws.ToInt32(ni.Attachment.DeviceIndex) != 0 || len(ni.PrivateIpAddresses) != 2 ||
		!aws.ToBool(ni.PrivateIpAddresses[0].Primary) || aws.ToString(ni.PrivateIpAddresses[1].PrivateIpAddress) != ip.String() || len(ni.Groups) != 1 {
		t.Errorf("network interface = %+v", ni)
	}
}

func TestDescribeInstanceTypesPaginates(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := sdkec2.NewDescribeInstanceTypesPaginator(f.client(), &sdkec2.DescribeInstanceTypesInput{MaxResults: aws.Int32(5)})
	seen := map[string]int{}
	pages := 0
	for p.HasMorePages() {
		out, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		if len(out.InstanceTypes) > 5 {
			t.Errorf("page %d has %d types", pages, len(out.InstanceTypes))
		}
		for _, it := range out.InstanceTypes {
			seen[string(it.InstanceType)]++
		}
		pages++
	}
	cat := catalog.Default()
	if want := (len(cat) + 4) / 5; pages != want {
		t.Errorf("pages = %d, want %d", pages, want)
	}
	for _, it := range cat {
		if seen[it.Name] != 1 {
			t.Errorf("%s seen %d times", it.Name, seen[it.Name])
		}
	}
	if len(seen) != len(cat) {
		t.Errorf("types = %d, want %d", len(seen), len(cat))
	}
}

func TestDescribeInstanceTypesFields(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.client()
	out, err := c.DescribeInstanceTypes(t.Context(), &sdkec2.DescribeInstanceTypesInput{
		InstanceTypes: []types.InstanceType{"p4d.24xlarge", "g5.xlarge", "inf2.xlarge", "m5d.large"},
	})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]types.InstanceTypeInfo{}
	for _, it := range out.InstanceTypes {
		byName[string(it.InstanceType)] = it
	}
	p4d := byName["p4d.24xlarge"]
	if aws.ToInt32(p4d.VCpuInfo.DefaultVCpus) != 96 || aws.ToInt64(p4d.MemoryInfo.SizeInMiB) != 1179648 ||
		p4d.ProcessorInfo.SupportedArchitectures[0] != types.ArchitectureTypeX8664 ||
		aws.ToInt32(p4d.GpuInfo.Gpus[0].Count) != 8 || aws.ToString(p4d.GpuInfo.Gpus[0].Name) != "A100" ||
		!aws.ToBool(p4d.NetworkInfo.EfaSupported) || aws.ToInt32(p4d.NetworkInfo.EfaInfo.MaximumEfaInterfaces) != 4 ||
		aws.ToInt32(p4d.NetworkInfo.MaximumNetworkInterfaces) != 60 || len(p4d.NetworkInfo.NetworkCards) != 4 ||
		aws.ToInt32(p4d.NetworkInfo.Ipv4AddressesPerInterface) != 50 || aws.ToInt32(p4d.NetworkInfo.Ipv6AddressesPerInterface) != 50 ||
		aws.ToString(p4d.NetworkInfo.NetworkPerformance) != "4x 100 Gigabit" || aws.ToInt64(p4d.InstanceStorageInfo.TotalSizeInGB) != 8000 ||
		p4d.Hypervisor != types.InstanceTypeHypervisorNitro || aws.ToBool(p4d.BareMetal) || !slices.Contains(p4d.SupportedUsageClasses, types.UsageClassTypeSpot) {
		t.Errorf("p4d.24xlarge = %+v", p4d)
	}
	g5 := byName["g5.xlarge"]
	if aws.ToInt32(g5.GpuInfo.Gpus[0].MemoryInfo.SizeInMiB) != 22888 || aws.ToString(g5.GpuInfo.Gpus[0].Manufacturer) != "NVIDIA" ||
		aws.ToBool(g5.NetworkInfo.EfaSupported) || g5.NetworkInfo.EfaInfo != nil {
		t.Errorf("g5.xlarge gpu = %+v", g5.GpuInfo)
	}
	inf2 := byName["inf2.xlarge"]
	if inf2.NeuronInfo == nil || aws.ToString(inf2.NeuronInfo.NeuronDevices[0].Name) != "Inferentia2" ||
		aws.ToInt32(inf2.NeuronInfo.NeuronDevices[0].CoreInfo.Count) != 2 || inf2.GpuInfo != nil {
		t.Errorf("inf2.xlarge neuron = %+v", inf2.NeuronInfo)
	}
	m5d := byName["m5d.large"]
	if !aws.ToBool(m5d.InstanceStorageSupported) || aws.ToInt64(m5d.InstanceStorageInfo.Disks[0].SizeInGB) != 75 ||
		m5d.InstanceStorageInfo.NvmeSupport != types.EphemeralNvmeSupportRequired {
		t.Errorf("m5d.large storage = %+v", m5d.InstanceStorageInfo)
	}

	filters := []struct {
		name    string
		filters []types.Filter
		want    []string
	}{
		{"wildcard", []types.Filter{filter("instance-type", "m5.*")}, []string{"m5.4xlarge", "m5.large", "m5.metal", "m5.xlarge"}},
		{"arm64", []types.Filter{filter("processor-info.supported-architecture", "arm64")}, []string{"c6g.large", "c7g.large", "m6g.xlarge"}},
		{"arm64 and c", []types.Filter{filter("processor-info.supported-architecture", "arm64"), filter("instance-type", "c?g.*")}, []string{"c6g.large", "c7g.large"}},
	}
	for _, tt := range filters {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := c.DescribeInstanceTypes(t.Context(), &sdkec2.DescribeInstanceTypesInput{Filters: tt.filters})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, it := range out.InstanceTypes {
				got = append(got, string(it.InstanceType))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("types = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDescribeSubnetsAndZones(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.client()
	subnets := f.model.Subnets()
	tests := []struct {
		name string
		in   sdkec2.DescribeSubnetsInput
		want []string
	}{
		{"all", sdkec2.DescribeSubnetsInput{}, []string{subnets[0].ID, subnets[1].ID, subnets[2].ID}},
		{"by id", sdkec2.DescribeSubnetsInput{SubnetIds: []string{subnets[2].ID}}, []string{subnets[2].ID}},
		{"subnet-id", sdkec2.DescribeSubnetsInput{Filters: []types.Filter{filter("subnet-id", subnets[1].ID)}}, []string{subnets[1].ID}},
		{"vpc-id", sdkec2.DescribeSubnetsInput{Filters: []types.Filter{filter("vpc-id", f.model.VPC().ID)}}, []string{subnets[0].ID, subnets[1].ID, subnets[2].ID}},
		{"availability-zone", sdkec2.DescribeSubnetsInput{Filters: []types.Filter{filter("availability-zone", "us-west-2c")}}, []string{subnets[2].ID}},
		{"tag none", sdkec2.DescribeSubnetsInput{Filters: []types.Filter{filter("tag:kubernetes.io/role/internal-elb", "1")}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := c.DescribeSubnets(t.Context(), &tt.in)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range out.Subnets {
				got = append(got, aws.ToString(s.SubnetId))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("subnets = %v, want %v", got, tt.want)
			}
		})
	}
	out, err := c.DescribeSubnets(t.Context(), &sdkec2.DescribeSubnetsInput{SubnetIds: []string{subnets[0].ID}})
	if err != nil {
		t.Fatal(err)
	}
	if s := out.Subnets[0]; aws.ToString(s.CidrBlock) != "10.0.0.0/20" || aws.ToInt32(s.AvailableIpAddressCount) != 4091-2 ||
		aws.ToString(s.AvailabilityZoneId) != "usw2-az1" {
		t.Errorf("subnet = %+v", s)
	}

	zones, err := c.DescribeAvailabilityZones(t.Context(), &sdkec2.DescribeAvailabilityZonesInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(zones.AvailabilityZones) != 3 {
		t.Fatalf("zones = %d", len(zones.AvailabilityZones))
	}
	if z := zones.AvailabilityZones[1]; aws.ToString(z.ZoneName) != "us-west-2b" || aws.ToString(z.ZoneId) != "usw2-az2" ||
		aws.ToString(z.RegionName) != "us-west-2" || z.State != types.AvailabilityZoneStateAvailable {
		t.Errorf("zone = %+v", z)
	}
	one, err := c.DescribeAvailabilityZones(t.Context(), &sdkec2.DescribeAvailabilityZonesInput{ZoneNames: []string{"us-west-2c"}})
	if err != nil || len(one.AvailabilityZones) != 1 || aws.ToString(one.AvailabilityZones[0].ZoneId) != "usw2-az3" {
		t.Errorf("by name = %+v, %v", one, err)
	}
}

func TestDescribeNetworkInterfaces(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.client()
	eni := f.insts[0].ENIIDs[0]
	prefix, err := f.model.AssignIPv4Prefix(eni)
	if err != nil {
		t.Fatal(err)
	}
	all := []string{f.insts[0].ENIIDs[0], f.insts[1].ENIIDs[0], f.insts[2].ENIIDs[0]}
	tests := []struct {
		name string
		in   sdkec2.DescribeNetworkInterfacesInput
		want []string
	}{
		{"all", sdkec2.DescribeNetworkInterfacesInput{}, all},
		{"by id", sdkec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{all[1]}}, all[1:2]},
		{"network-interface-id", sdkec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{filter("network-interface-id", all[2])}}, all[2:]},
		{"attachment.instance-id", sdkec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{filter("attachment.instance-id", f.insts[1].ID)}}, all[1:2]},
		{"subnet-id", sdkec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{filter("subnet-id", f.insts[2].SubnetID)}}, all[2:]},
		{"status", sdkec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{filter("status", "available")}}, nil},
		{"tag", sdkec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{filter("tag:autonode.dev/instance-id", "*")}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := c.DescribeNetworkInterfaces(t.Context(), &tt.in)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, n := range out.NetworkInterfaces {
				got = append(got, aws.ToString(n.NetworkInterfaceId))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("interfaces = %v, want %v", got, tt.want)
			}
		})
	}
	out, err := c.DescribeNetworkInterfaces(t.Context(), &sdkec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
	if err != nil {
		t.Fatal(err)
	}
	n := out.NetworkInterfaces[0]
	if n.Status != types.NetworkInterfaceStatusInUse || aws.ToString(n.Attachment.InstanceId) != f.insts[0].ID ||
		aws.ToInt32(n.Attachment.DeviceIndex) != 0 || len(n.Ipv4Prefixes) != 1 || aws.ToString(n.Ipv4Prefixes[0].Ipv4Prefix) != prefix.String() ||
		len(n.PrivateIpAddresses) != 1 || !aws.ToBool(n.PrivateIpAddresses[0].Primary) || len(n.Groups) != 1 ||
		aws.ToString(n.MacAddress) == "" || aws.ToString(n.AvailabilityZone) != "us-west-2a" {
		t.Errorf("interface = %+v", n)
	}
}

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.client()
	tests := []struct {
		name string
		call func(context.Context) error
		code string
	}{
		{"unknown instance", func(ctx context.Context) error {
			_, err := c.DescribeInstances(ctx, &sdkec2.DescribeInstancesInput{InstanceIds: []string{"i-0000000000000000a"}})
			return err
		}, CodeInstanceNotFound},
		{"unknown subnet", func(ctx context.Context) error {
			_, err := c.DescribeSubnets(ctx, &sdkec2.DescribeSubnetsInput{SubnetIds: []string{"subnet-0000000000000000a"}})
			return err
		}, CodeSubnetNotFound},
		{"unknown eni", func(ctx context.Context) error {
			_, err := c.DescribeNetworkInterfaces(ctx, &sdkec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{"eni-0000000000000000a"}})
			return err
		}, CodeNetworkInterfaceNotFound},
		{"unknown instance type", func(ctx context.Context) error {
			_, err := c.DescribeInstanceTypes(ctx, &sdkec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{"m5.huge"}})
			return err
		}, CodeInvalidInstanceType},
		{"max results too small", func(ctx context.Context) error {
			_, err := c.DescribeInstanceTypes(ctx, &sdkec2.DescribeInstanceTypesInput{MaxResults: aws.Int32(4)})
			return err
		}, CodeInvalidParameterValue},
		{"max results too large", func(ctx context.Context) error {
			_, err := c.DescribeInstanceTypes(ctx, &sdkec2.DescribeInstanceTypesInput{MaxResults: aws.Int32(101)})
			return err
		}, CodeInvalidParameterValue},
		{"bad token", func(ctx context.Context) error {
			_, err := c.DescribeInstanceTypes(ctx, &sdkec2.DescribeInstanceTypesInput{NextToken: aws.String("garbage")})
			return err
		}, CodeInvalidPaginationToken},
		{"unknown filter", func(ctx context.Context) error {
			_, err := c.DescribeSubnets(ctx, &sdkec2.DescribeSubnetsInput{Filters: []types.Filter{filter("no-such-filter", "x")}})
			return err
		}, CodeInvalidParameterValue},
		{"unknown zone", func(ctx context.Context) error {
			_, err := c.DescribeAvailabilityZones(ctx, &sdkec2.DescribeAvailabilityZonesInput{ZoneNames: []string{"us-west-2z"}})
			return err
		}, CodeInvalidParameterValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var apiErr smithy.APIError
			if err := tt.call(t.Context()); !errors.As(err, &apiErr) || apiErr.ErrorCode() != tt.code {
				t.Fatalf("err = %v, want API error %s", err, tt.code)
			}
		})
	}
}

// rawPost sends a hand-built Query request, signed or not.
func rawPost(t *testing.T, url, body string, sign bool) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if sign {
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-west-2/ec2/aws4_request, SignedHeaders=host, Signature=00")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRawProtocol(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tests := []struct {
		name     string
		body     string
		sign     bool
		status   int
		contains string
	}{
		{"unknown action", "Action=LaunchRockets&Version=2016-11-15", true, 400, "<Code>InvalidAction</Code>"},
		{"no action", "Version=2016-11-15", true, 400, "<Code>MissingAction</Code>"},
		{"unsigned", "Action=DescribeAvailabilityZones&Version=2016-11-15", false, 401, "<Code>AuthFailure</Code>"},
		{"ok", "Action=DescribeAvailabilityZones&Version=2016-11-15", true, 200,
			`<DescribeAvailabilityZonesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>`},
	}
	t.Run("group", func(t *testing.T) { // returns once the parallel subtests finish
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				status, body := rawPost(t, f.url, tt.body, tt.sign)
				if status != tt.status || !strings.Contains(body, tt.contains) {
					t.Errorf("status %d body %s; want %d containing %s", status, body, tt.status, tt.contains)
				}
				if status != 200 && !strings.Contains(body, "<RequestID>") {
					t.Errorf("error without RequestID: %s", body)
				}
			})
		}
	})
	if f.srv.Calls("LaunchRockets") != 1 {
		t.Errorf("Calls(LaunchRockets) = %d, want 1", f.srv.Calls("LaunchRockets"))
	}
}

func TestHandleRegistersAction(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	type out struct {
		Echo  string        `xml:"echo"`
		Items Items[string] `xml:"itemSet"`
	}
	f.srv.Handle("Echo", func(_ context.Context, r *Request) (any, error) {
		return out{Echo: r.Get("Message"), Items: ItemsOf(r.List("Item"))}, nil
	})
	status, body := rawPost(t, f.url, "Action=Echo&Message=hi&Item.2=b&Item.1=a", true)
	if status != 200 || !strings.Contains(body, "<echo>hi</echo><itemSet><item>a</item><item>b</item></itemSet></EchoResponse>") {
		t.Errorf("status %d body %s", status, body)
	}
}

func TestFaultInjection(t *testing.T) {
	t.Parallel()
	retryer := func(attempts int) func(*sdkec2.Options) {
		return func(o *sdkec2.Options) {
			o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts = attempts
				so.RateLimiter = ratelimit.None
				so.MaxBackoff = time.Millisecond
			})
		}
	}
	tests := []struct {
		name      string
		fault     Fault
		attempts  int
		wantCode  string // "" for success
		wantCalls func(int) bool
	}{
		{"half throttled", Fault{ThrottleFraction: 0.5}, 20, "", func(n int) bool { return n > 1 }},
		{"half server errors", Fault{ServerErrorFraction: 0.5}, 20, "", func(n int) bool { return n > 1 }},
		{"always throttled", Fault{ThrottleFraction: 1}, 4, CodeRequestLimitExceeded, func(n int) bool { return n == 4 }},
		{"always failing", Fault{ServerErrorFraction: 1}, 3, CodeInternalError, func(n int) bool { return n == 3 }},
		{"latency only", Fault{Latency: 50 * time.Millisecond}, 3, "", func(n int) bool { return n == 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.srv.SetFault("DescribeAvailabilityZones", tt.fault)
			start := time.Now()
			_, err := f.client(retryer(tt.attempts)).DescribeAvailabilityZones(t.Context(), &sdkec2.DescribeAvailabilityZonesInput{})
			if took := time.Since(start); took < tt.fault.Latency {
				t.Errorf("the call took %s, less than the injected latency %s", took, tt.fault.Latency)
			}
			if tt.wantCode == "" && err != nil {
				t.Fatalf("err = %v, want success after retries", err)
			}
			var apiErr smithy.APIError
			if tt.wantCode != "" && (!errors.As(err, &apiErr) || apiErr.ErrorCode() != tt.wantCode) {
				t.Fatalf("err = %v, want %s", err, tt.wantCode)
			}
			if n := f.srv.Calls("DescribeAvailabilityZones"); !tt.wantCalls(n) {
				t.Errorf("calls = %d", n)
			}
		})
	}
}

func TestLatencyHonoursCancellation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.srv.SetFault("DescribeSubnets", Fault{Latency: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := f.client(func(o *sdkec2.Options) { o.RetryMaxAttempts = 1 }).DescribeSubnets(ctx, &sdkec2.DescribeSubnetsInput{})
		done <- err
	}()
	for f.srv.Calls("DescribeSubnets") == 0 {
		time.Sleep(time.Millisecond) // wait until the request is inside the server
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}
