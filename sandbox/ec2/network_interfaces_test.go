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
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	sdkimds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	sdkec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/autonode/autonode/sandbox/imds"
	"github.com/autonode/autonode/sandbox/vpc"
)

// eniFixture is a server over a model with three subnets (a big one, a /28
// with 11 usable addresses, and a /24 for fragmenting), a t3.medium (3 ENIs
// × 6 IPv4) and an m5.large (3 ENIs × 10) in the big one, and the t3's IMDS.
type eniFixture struct {
	fixture
	main, tiny, frag string // subnet ids
	t3, m5           vpc.Instance
	imds             *sdkimds.Client
}

func newENIFixture(t *testing.T) eniFixture {
	t.Helper()
	m, err := vpc.New(vpc.Config{Subnets: []vpc.SubnetConfig{
		{Zone: "us-west-2a", CIDR: "10.0.0.0/20"},
		{Zone: "us-west-2a", CIDR: "10.0.16.0/28"},
		{Zone: "us-west-2a", CIDR: "10.0.32.0/24"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	subnets := m.Subnets()
	t3, err := m.LaunchInstance("t3.medium", subnets[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	m5, err := m.LaunchInstance("m5.large", subnets[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Model: m, Rand: rand.NewPCG(7, 7)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	md := httptest.NewServer(imds.New(m, t3.ID, imds.Options{}))
	t.Cleanup(md.Close)
	return eniFixture{
		fixture: fixture{srv: srv, model: m, url: ts.URL, insts: []vpc.Instance{t3, m5}},
		main:    subnets[0].ID, tiny: subnets[1].ID, frag: subnets[2].ID, t3: t3, m5: m5,
		imds: sdkimds.New(sdkimds.Options{Endpoint: md.URL}),
	}
}

// create makes an ENI through the SDK and returns its id.
func (f eniFixture) create(t *testing.T, c *sdkec2.Client, in sdkec2.CreateNetworkInterfaceInput) string {
	t.Helper()
	out, err := c.CreateNetworkInterface(t.Context(), &in)
	if err != nil {
		t.Fatalf("CreateNetworkInterface: %v", err)
	}
	return aws.ToString(out.NetworkInterface.NetworkInterfaceId)
}

// attach attaches an ENI through the SDK and returns the attachment id.
func attach(t *testing.T, c *sdkec2.Client, eni, instance string, device int32) string {
	t.Helper()
	out, err := c.AttachNetworkInterface(t.Context(), &sdkec2.AttachNetworkInterfaceInput{
		NetworkInterfaceId: aws.String(eni), InstanceId: aws.String(instance), DeviceIndex: aws.Int32(device),
	})
	if err != nil {
		t.Fatalf("AttachNetworkInterface(%s): %v", eni, err)
	}
	return aws.ToString(out.AttachmentId)
}

func describeENI(t *testing.T, c *sdkec2.Client, id string) types.NetworkInterface {
	t.Helper()
	out, err := c.DescribeNetworkInterfaces(t.Context(), &sdkec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}})
	if err != nil || len(out.NetworkInterfaces) != 1 {
		t.Fatalf("DescribeNetworkInterfaces(%s) = %v, %v", id, out, err)
	}
	return out.NetworkInterfaces[0]
}

func availableIPs(t *testing.T, c *sdkec2.Client, subnet string) int32 {
	t.Helper()
	out, err := c.DescribeSubnets(t.Context(), &sdkec2.DescribeSubnetsInput{SubnetIds: []string{subnet}})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToInt32(out.Subnets[0].AvailableIpAddressCount)
}

// imdsGet reads one metadata path; found is false on 404.
func imdsGet(t *testing.T, c *sdkimds.Client, path string) (string, bool) {
	t.Helper()
	out, err := c.GetMetadata(t.Context(), &sdkimds.GetMetadataInput{Path: path})
	if err != nil {
		var re interface{ HTTPStatusCode() int }
		if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
			return "", false
		}
		t.Fatalf("GetMetadata(%s): %v", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), true
}

func ipStrings(ips []types.NetworkInterfacePrivateIpAddress) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, aws.ToString(ip.PrivateIpAddress))
	}
	return out
}

func TestNetworkInterfaceLifecycle(t *testing.T) {
	t.Parallel()
	f := newENIFixture(t)
	c := f.client()
	ctx := t.Context()
	before := availableIPs(t, c, f.main)
	sg := f.model.SecurityGroups()[0].ID

	// Create: available, tagged, one secondary besides the primary.
	created, err := c.CreateNetworkInterface(ctx, &sdkec2.CreateNetworkInterfaceInput{
		SubnetId: aws.String(f.main), Description: aws.String("autonode pods"), Groups: []string{sg},
		SecondaryPrivateIpAddressCount: aws.Int32(1),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface, Tags: []types.Tag{
			{Key: aws.String("autonode.dev/instance-id"), Value: aws.String(f.t3.ID)},
			{Key: aws.String("autonode.dev/managed"), Value: aws.String("true")},
		}}},
	})
	if err != nil {
		t.Fatalf("CreateNetworkInterface: %v", err)
	}
	n := *created.NetworkInterface
	id := aws.ToString(n.NetworkInterfaceId)
	if n.Status != types.NetworkInterfaceStatusAvailable || n.Attachment != nil || len(n.PrivateIpAddresses) != 2 ||
		!aws.ToBool(n.PrivateIpAddresses[0].Primary) || aws.ToString(n.Description) != "autonode pods" ||
		len(n.TagSet) != 2 || aws.ToString(n.SubnetId) != f.main || len(n.Groups) != 1 || aws.ToString(n.Groups[0].GroupId) != sg {
		t.Fatalf("created = %+v", n)
	}
	primary := aws.ToString(n.PrivateIpAddress)

	// Tags and status are filterable.
	for _, fl := range [][]types.Filter{
		{filter("tag:autonode.dev/instance-id", f.t3.ID)},
		{filter("status", "available")},
		{filter("tag-key", "autonode.dev/managed"), filter("subnet-id", f.main)},
	} {
		out, err := c.DescribeNetworkInterfaces(ctx, &sdkec2.DescribeNetworkInterfacesInput{Filters: fl})
		if err != nil || len(out.NetworkInterfaces) != 1 || aws.ToString(out.NetworkInterfaces[0].NetworkInterfaceId) != id {
			t.Errorf("filters %v = %+v, %v", fl, out, err)
		}
	}

	// Attach: in-use, DeleteOnTermination false as in EC2.
	attID := attach(t, c, id, f.t3.ID, 1)
	n = describeENI(t, c, id)
	if n.Status != types.NetworkInterfaceStatusInUse || aws.ToString(n.Attachment.AttachmentId) != attID ||
		aws.ToString(n.Attachment.InstanceId) != f.t3.ID || aws.ToInt32(n.Attachment.DeviceIndex) != 1 ||
		aws.ToBool(n.Attachment.DeleteOnTermination) || n.Attachment.Status != types.AttachmentStatusAttached {
		t.Errorf("attached = %+v", n.Attachment)
	}
	byInstance, err := c.DescribeNetworkInterfaces(ctx, &sdkec2.DescribeNetworkInterfacesInput{
		Filters: []types.Filter{filter("attachment.instance-id", f.t3.ID)},
	})
	if err != nil || len(byInstance.NetworkInterfaces) != 2 {
		t.Errorf("attachment.instance-id = %+v, %v", byInstance, err)
	}

	// Modify DeleteOnTermination and the description.
	if _, err := c.ModifyNetworkInterfaceAttribute(ctx, &sdkec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: aws.String(id),
		Attachment:         &types.NetworkInterfaceAttachmentChanges{AttachmentId: aws.String(attID), DeleteOnTermination: aws.Bool(true)},
	}); err != nil {
		t.Fatalf("ModifyNetworkInterfaceAttribute: %v", err)
	}
	if _, err := c.ModifyNetworkInterfaceAttribute(ctx, &sdkec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: aws.String(id), Description: &types.AttributeValue{Value: aws.String("renamed")},
	}); err != nil {
		t.Fatalf("ModifyNetworkInterfaceAttribute(description): %v", err)
	}

	// Assign addresses, then a prefix: 2 + 2 + 1 = 5 of t3.medium's 6 slots.
	ips, err := c.AssignPrivateIpAddresses(ctx, &sdkec2.AssignPrivateIpAddressesInput{
		NetworkInterfaceId: aws.String(id), SecondaryPrivateIpAddressCount: aws.Int32(2),
	})
	if err != nil || len(ips.AssignedPrivateIpAddresses) != 2 || aws.ToString(ips.NetworkInterfaceId) != id {
		t.Fatalf("AssignPrivateIpAddresses = %+v, %v", ips, err)
	}
	pfx, err := c.AssignPrivateIpAddresses(ctx, &sdkec2.AssignPrivateIpAddressesInput{
		NetworkInterfaceId: aws.String(id), Ipv4PrefixCount: aws.Int32(1),
	})
	if err != nil || len(pfx.AssignedIpv4Prefixes) != 1 || len(pfx.AssignedPrivateIpAddresses) != 0 {
		t.Fatalf("AssignPrivateIpAddresses(prefix) = %+v, %v", pfx, err)
	}
	prefix := aws.ToString(pfx.AssignedIpv4Prefixes[0].Ipv4Prefix)
	if !strings.HasSuffix(prefix, "/28") {
		t.Errorf("prefix = %s", prefix)
	}
	n = describeENI(t, c, id)
	addrs := ipStrings(n.PrivateIpAddresses)
	if len(addrs) != 4 || addrs[0] != primary || !aws.ToBool(n.PrivateIpAddresses[0].Primary) ||
		addrs[2] != aws.ToString(ips.AssignedPrivateIpAddresses[0].PrivateIpAddress) ||
		len(n.Ipv4Prefixes) != 1 || aws.ToString(n.Ipv4Prefixes[0].Ipv4Prefix) != prefix ||
		!aws.ToBool(n.Attachment.DeleteOnTermination) || aws.ToString(n.Description) != "renamed" {
		t.Errorf("described = %+v", n)
	}

	// IMDS shows the attached ENI under its MAC.
	mac := aws.ToString(n.MacAddress)
	dir := "network/interfaces/macs/" + mac + "/"
	if macs, _ := imdsGet(t, f.imds, "network/interfaces/macs/"); !strings.Contains(macs, mac+"/") {
		t.Errorf("macs = %q, want %s/ in it", macs, mac)
	}
	for path, want := range map[string]string{
		"device-number":          "1",
		"interface-id":           id,
		"local-ipv4s":            strings.Join(addrs, "\n"),
		"ipv4-prefix":            prefix,
		"subnet-id":              f.main,
		"subnet-ipv4-cidr-block": "10.0.0.0/20",
		"vpc-ipv4-cidr-blocks":   "10.0.0.0/16",
	} {
		if got, ok := imdsGet(t, f.imds, dir+path); !ok || got != want {
			t.Errorf("imds %s = %q (found %v), want %q", path, got, ok, want)
		}
	}

	// Unassign one address and the prefix.
	if _, err := c.UnassignPrivateIpAddresses(ctx, &sdkec2.UnassignPrivateIpAddressesInput{
		NetworkInterfaceId: aws.String(id), PrivateIpAddresses: addrs[1:2], Ipv4Prefixes: []string{prefix},
	}); err != nil {
		t.Fatalf("UnassignPrivateIpAddresses: %v", err)
	}
	n = describeENI(t, c, id)
	if got := ipStrings(n.PrivateIpAddresses); !slices.Equal(got, []string{addrs[0], addrs[2], addrs[3]}) || len(n.Ipv4Prefixes) != 0 {
		t.Errorf("after unassign = %v, %d prefixes", got, len(n.Ipv4Prefixes))
	}
	if _, ok := imdsGet(t, f.imds, dir+"ipv4-prefix"); ok {
		t.Error("imds ipv4-prefix still there after the prefix was unassigned")
	}

	// Detach: available again and gone from IMDS.
	if _, err := c.DetachNetworkInterface(ctx, &sdkec2.DetachNetworkInterfaceInput{AttachmentId: aws.String(attID), Force: aws.Bool(true)}); err != nil {
		t.Fatalf("DetachNetworkInterface: %v", err)
	}
	if n = describeENI(t, c, id); n.Status != types.NetworkInterfaceStatusAvailable || n.Attachment != nil {
		t.Errorf("detached = %+v", n)
	}
	if _, ok := imdsGet(t, f.imds, dir+"interface-id"); ok {
		t.Error("imds still lists the detached ENI")
	}

	// Delete: gone, every address back in the subnet.
	if _, err := c.DeleteNetworkInterface(ctx, &sdkec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(id)}); err != nil {
		t.Fatalf("DeleteNetworkInterface: %v", err)
	}
	var apiErr smithy.APIError
	if _, err := c.DescribeNetworkInterfaces(ctx, &sdkec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}}); !errors.As(err, &apiErr) ||
		apiErr.ErrorCode() != CodeNetworkInterfaceNotFound {
		t.Errorf("describe deleted: err = %v", err)
	}
	if after := availableIPs(t, c, f.main); after != before {
		t.Errorf("available = %d after delete, want %d", after, before)
	}
	// The released addresses are handed out again, lowest first.
	again := f.create(t, c, sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String(f.main)})
	if got := aws.ToString(describeENI(t, c, again).PrivateIpAddress); got != primary {
		t.Errorf("new ENI's primary = %s, want the released %s", got, primary)
	}
}

func TestNetworkInterfaceErrors(t *testing.T) {
	t.Parallel()
	type env struct {
		f eniFixture
		c *sdkec2.Client
	}
	eni := func(t *testing.T, e env, subnet string) string {
		t.Helper()
		return e.f.create(t, e.c, sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String(subnet)})
	}
	assignN := func(ctx context.Context, e env, id string, n int32) error {
		_, err := e.c.AssignPrivateIpAddresses(ctx, &sdkec2.AssignPrivateIpAddressesInput{
			NetworkInterfaceId: aws.String(id), SecondaryPrivateIpAddressCount: aws.Int32(n),
		})
		return err
	}
	assignPrefixes := func(ctx context.Context, e env, id string, n int32) error {
		_, err := e.c.AssignPrivateIpAddresses(ctx, &sdkec2.AssignPrivateIpAddressesInput{
			NetworkInterfaceId: aws.String(id), Ipv4PrefixCount: aws.Int32(n),
		})
		return err
	}
	tests := []struct {
		name     string
		call     func(t *testing.T, e env) error
		code     string
		contains string // in the message, when set
	}{
		{"create in unknown subnet", func(t *testing.T, e env) error {
			_, err := e.c.CreateNetworkInterface(t.Context(), &sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String("subnet-0000000000000000a")})
			return err
		}, CodeSubnetNotFound, ""},
		{"create with unknown group", func(t *testing.T, e env) error {
			_, err := e.c.CreateNetworkInterface(t.Context(), &sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String(e.f.main), Groups: []string{"sg-0000000000000000a"}})
			return err
		}, CodeSecurityGroupNotFound, ""},
		{"create with wrong tag resource type", func(t *testing.T, e env) error {
			_, err := e.c.CreateNetworkInterface(t.Context(), &sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String(e.f.main),
				TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}}}})
			return err
		}, CodeInvalidParameterValue, "taggable"},
		{"create without subnet", func(t *testing.T, e env) error {
			_, err := e.c.CreateNetworkInterface(t.Context(), &sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String("")})
			return err
		}, CodeMissingParameter, ""},
		{"create beyond the largest type", func(t *testing.T, e env) error {
			_, err := e.c.CreateNetworkInterface(t.Context(), &sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String(e.f.main), SecondaryPrivateIpAddressCount: aws.Int32(50)})
			return err
		}, CodePrivateIPAddressLimitExceeded, ""},
		{"attach unknown eni", func(t *testing.T, e env) error {
			_, err := e.c.AttachNetworkInterface(t.Context(), &sdkec2.AttachNetworkInterfaceInput{
				NetworkInterfaceId: aws.String("eni-0000000000000000a"), InstanceId: aws.String(e.f.t3.ID), DeviceIndex: aws.Int32(1)})
			return err
		}, CodeNetworkInterfaceNotFound, ""},
		{"attach to unknown instance", func(t *testing.T, e env) error {
			_, err := e.c.AttachNetworkInterface(t.Context(), &sdkec2.AttachNetworkInterfaceInput{
				NetworkInterfaceId: aws.String(eni(t, e, e.f.main)), InstanceId: aws.String("i-0000000000000000a"), DeviceIndex: aws.Int32(1)})
			return err
		}, CodeInstanceNotFound, ""},
		{"attach at a taken device index", func(t *testing.T, e env) error {
			_, err := e.c.AttachNetworkInterface(t.Context(), &sdkec2.AttachNetworkInterfaceInput{
				NetworkInterfaceId: aws.String(eni(t, e, e.f.main)), InstanceId: aws.String(e.f.t3.ID), DeviceIndex: aws.Int32(0)})
			return err
		}, CodeInvalidParameterValue, "in use"},
		{"attach to a card the type lacks", func(t *testing.T, e env) error {
			_, err := e.c.AttachNetworkInterface(t.Context(), &sdkec2.AttachNetworkInterfaceInput{
				NetworkInterfaceId: aws.String(eni(t, e, e.f.main)), InstanceId: aws.String(e.f.t3.ID), DeviceIndex: aws.Int32(1), NetworkCardIndex: aws.Int32(1)})
			return err
		}, CodeInvalidParameterValue, ""},
		{"fourth ENI on t3.medium", func(t *testing.T, e env) error {
			attach(t, e.c, eni(t, e, e.f.main), e.f.t3.ID, 1)
			attach(t, e.c, eni(t, e, e.f.main), e.f.t3.ID, 2)
			_, err := e.c.AttachNetworkInterface(t.Context(), &sdkec2.AttachNetworkInterfaceInput{
				NetworkInterfaceId: aws.String(eni(t, e, e.f.main)), InstanceId: aws.String(e.f.t3.ID), DeviceIndex: aws.Int32(3)})
			return err
		}, CodeAttachmentLimitExceeded, ""},
		{"attach an ENI fuller than t3.medium allows", func(t *testing.T, e env) error {
			id := e.f.create(t, e.c, sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String(e.f.main), SecondaryPrivateIpAddressCount: aws.Int32(6)})
			_, err := e.c.AttachNetworkInterface(t.Context(), &sdkec2.AttachNetworkInterfaceInput{
				NetworkInterfaceId: aws.String(id), InstanceId: aws.String(e.f.t3.ID), DeviceIndex: aws.Int32(1)})
			return err
		}, CodePrivateIPAddressLimitExceeded, ""},
		{"seventh address on a t3.medium ENI", func(t *testing.T, e env) error {
			if err := assignN(t.Context(), e, e.f.t3.ENIIDs[0], 5); err != nil {
				t.Fatalf("five secondaries: %v", err)
			}
			return assignN(t.Context(), e, e.f.t3.ENIIDs[0], 1)
		}, CodePrivateIPAddressLimitExceeded, ""},
		{"prefixes count as slots on t3.medium", func(t *testing.T, e env) error {
			id := eni(t, e, e.f.main)
			attach(t, e.c, id, e.f.t3.ID, 1)
			if err := assignPrefixes(t.Context(), e, id, 4); err != nil {
				t.Fatalf("four prefixes: %v", err)
			}
			if err := assignN(t.Context(), e, id, 1); err != nil {
				t.Fatalf("sixth slot: %v", err)
			}
			return assignPrefixes(t.Context(), e, id, 1)
		}, CodePrivateIPAddressLimitExceeded, ""},
		{"tenth prefix on m5.large's primary ENI", func(t *testing.T, e env) error {
			if err := assignPrefixes(t.Context(), e, e.f.m5.ENIIDs[0], 9); err != nil {
				t.Fatalf("nine prefixes: %v", err)
			}
			return assignPrefixes(t.Context(), e, e.f.m5.ENIIDs[0], 1)
		}, CodePrivateIPAddressLimitExceeded, ""},
		{"subnet out of addresses", func(t *testing.T, e env) error {
			id := e.f.create(t, e.c, sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String(e.f.tiny), SecondaryPrivateIpAddressCount: aws.Int32(10)})
			return assignN(t.Context(), e, id, 1)
		}, CodeInsufficientAddresses, ""},
		{"no aligned /28 left", func(t *testing.T, e env) error {
			if _, err := e.f.model.Fragment(e.f.frag); err != nil {
				t.Fatal(err)
			}
			return assignPrefixes(t.Context(), e, eni(t, e, e.f.frag), 1)
		}, CodeInsufficientCidrBlocks, ""},
		{"named address taken", func(t *testing.T, e env) error {
			_, err := e.c.AssignPrivateIpAddresses(t.Context(), &sdkec2.AssignPrivateIpAddressesInput{
				NetworkInterfaceId: aws.String(eni(t, e, e.f.main)), PrivateIpAddresses: []string{e.f.t3.PrivateIP.String()}})
			return err
		}, CodeIPAddressInUse, ""},
		{"address and count together", func(t *testing.T, e env) error {
			_, err := e.c.AssignPrivateIpAddresses(t.Context(), &sdkec2.AssignPrivateIpAddressesInput{
				NetworkInterfaceId: aws.String(e.f.t3.ENIIDs[0]), PrivateIpAddresses: []string{"10.0.1.1"}, SecondaryPrivateIpAddressCount: aws.Int32(1)})
			return err
		}, CodeInvalidParameterCombination, ""},
		{"assign nothing", func(t *testing.T, e env) error {
			_, err := e.c.AssignPrivateIpAddresses(t.Context(), &sdkec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(e.f.t3.ENIIDs[0])})
			return err
		}, CodeMissingParameter, ""},
		{"assign to unknown eni", func(t *testing.T, e env) error { return assignN(t.Context(), e, "eni-0000000000000000a", 1) }, CodeNetworkInterfaceNotFound, ""},
		{"unassign the primary", func(t *testing.T, e env) error {
			_, err := e.c.UnassignPrivateIpAddresses(t.Context(), &sdkec2.UnassignPrivateIpAddressesInput{
				NetworkInterfaceId: aws.String(e.f.t3.ENIIDs[0]), PrivateIpAddresses: []string{e.f.t3.PrivateIP.String()}})
			return err
		}, CodeInvalidParameterValue, "primary"},
		{"modify with a stale attachment", func(t *testing.T, e env) error {
			_, err := e.c.ModifyNetworkInterfaceAttribute(t.Context(), &sdkec2.ModifyNetworkInterfaceAttributeInput{
				NetworkInterfaceId: aws.String(e.f.t3.ENIIDs[0]),
				Attachment:         &types.NetworkInterfaceAttachmentChanges{AttachmentId: aws.String("eni-attach-0000000000000000a"), DeleteOnTermination: aws.Bool(false)}})
			return err
		}, CodeAttachmentNotFound, ""},
		{"detach unknown attachment", func(t *testing.T, e env) error {
			_, err := e.c.DetachNetworkInterface(t.Context(), &sdkec2.DetachNetworkInterfaceInput{AttachmentId: aws.String("eni-attach-0000000000000000a")})
			return err
		}, CodeAttachmentNotFound, ""},
		{"detach the primary ENI", func(t *testing.T, e env) error {
			primary := describeENI(t, e.c, e.f.t3.ENIIDs[0])
			_, err := e.c.DetachNetworkInterface(t.Context(), &sdkec2.DetachNetworkInterfaceInput{AttachmentId: primary.Attachment.AttachmentId, Force: aws.Bool(true)})
			return err
		}, CodeOperationNotPermitted, ""},
		{"delete while attached", func(t *testing.T, e env) error {
			id := eni(t, e, e.f.main)
			attach(t, e.c, id, e.f.t3.ID, 1)
			_, err := e.c.DeleteNetworkInterface(t.Context(), &sdkec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(id)})
			return err
		}, CodeInvalidParameterValue, "in use"},
		{"delete unknown eni", func(t *testing.T, e env) error {
			_, err := e.c.DeleteNetworkInterface(t.Context(), &sdkec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String("eni-0000000000000000a")})
			return err
		}, CodeNetworkInterfaceNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newENIFixture(t)
			e := env{f: f, c: f.client(func(o *sdkec2.Options) { o.RetryMaxAttempts = 1 })}
			err := tt.call(t, e)
			var apiErr smithy.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode() != tt.code {
				t.Fatalf("err = %v, want API error %s", err, tt.code)
			}
			if !strings.Contains(apiErr.ErrorMessage(), tt.contains) {
				t.Errorf("message %q lacks %q", apiErr.ErrorMessage(), tt.contains)
			}
		})
	}
}

// TestFragmentedSubnet checks that a subnet with free addresses but no free
// aligned /28 refuses prefixes and still hands out single addresses.
func TestFragmentedSubnet(t *testing.T) {
	t.Parallel()
	f := newENIFixture(t)
	c := f.client()
	id := f.create(t, c, sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String(f.frag)})
	if _, err := f.model.Fragment(f.frag); err != nil {
		t.Fatal(err)
	}
	before := availableIPs(t, c, f.frag)
	tests := []struct {
		name string
		in   sdkec2.AssignPrivateIpAddressesInput
		code string // "" for success
	}{
		{"prefix count", sdkec2.AssignPrivateIpAddressesInput{Ipv4PrefixCount: aws.Int32(1)}, CodeInsufficientCidrBlocks},
		{"named prefix", sdkec2.AssignPrivateIpAddressesInput{Ipv4Prefixes: []string{"10.0.32.64/28"}}, CodeIPAddressInUse},
		{"misaligned prefix", sdkec2.AssignPrivateIpAddressesInput{Ipv4Prefixes: []string{"10.0.32.72/28"}}, CodeInvalidParameterValue},
		{"single address", sdkec2.AssignPrivateIpAddressesInput{SecondaryPrivateIpAddressCount: aws.Int32(1)}, ""},
		{"named address", sdkec2.AssignPrivateIpAddressesInput{PrivateIpAddresses: []string{"10.0.32.70"}}, ""},
	}
	for _, tt := range tests { // sequential: each changes the subnet
		in := tt.in
		in.NetworkInterfaceId = aws.String(id)
		_, err := c.AssignPrivateIpAddresses(t.Context(), &in)
		var apiErr smithy.APIError
		switch {
		case tt.code == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.code != "" && (!errors.As(err, &apiErr) || apiErr.ErrorCode() != tt.code):
			t.Errorf("%s: err = %v, want %s", tt.name, err, tt.code)
		}
	}
	if after := availableIPs(t, c, f.frag); after != before-2 {
		t.Errorf("available = %d, want %d: failed prefix requests must not keep addresses", after, before-2)
	}
	if _, err := c.CreateNetworkInterface(t.Context(), &sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String(f.frag), Ipv4PrefixCount: aws.Int32(1)}); err == nil {
		t.Error("CreateNetworkInterface with a prefix succeeded on a fragmented subnet")
	}
}

// TestConcurrentAssignment assigns addresses from many goroutines through the
// SDK and checks that no address is handed out twice. Run it with -race.
func TestConcurrentAssignment(t *testing.T) {
	t.Parallel()
	f := newENIFixture(t)
	c := f.client()
	var enis []string
	for range 4 {
		enis = append(enis, f.create(t, c, sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String(f.main)}))
	}
	var (
		mu  sync.Mutex
		got []string
		wg  sync.WaitGroup
	)
	for g := range 12 {
		wg.Go(func() {
			for i := range 4 {
				in := &sdkec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(enis[g%len(enis)]), SecondaryPrivateIpAddressCount: aws.Int32(1)}
				if i == 3 {
					in = &sdkec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: in.NetworkInterfaceId, Ipv4PrefixCount: aws.Int32(1)}
				}
				out, err := c.AssignPrivateIpAddresses(t.Context(), in)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, a := range out.AssignedPrivateIpAddresses {
					got = append(got, aws.ToString(a.PrivateIpAddress))
				}
				for _, p := range out.AssignedIpv4Prefixes {
					got = append(got, aws.ToString(p.Ipv4Prefix))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(got) != 48 {
		t.Fatalf("assigned %d, want 48", len(got))
	}
	seen := map[string]bool{}
	for _, a := range got {
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
	}
	// Addresses must not fall inside prefixes either.
	for _, e := range f.model.ENIs() {
		for _, ip := range e.PrivateIPs {
			for _, o := range f.model.ENIs() {
				for _, p := range o.IPv4Prefixes {
					if p.Contains(ip.Address) {
						t.Errorf("%s of %s lies in %s of %s", ip.Address, e.ID, p, o.ID)
					}
				}
			}
		}
	}
}

// TestNetworkInterfaceFaults checks that every new action honours injected
// faults, and that a throttled call changes nothing.
func TestNetworkInterfaceFaults(t *testing.T) {
	t.Parallel()
	type call func(context.Context, *sdkec2.Client, eniFixture, string) error
	tests := []struct {
		action string
		call   call
	}{
		{"CreateNetworkInterface", func(ctx context.Context, c *sdkec2.Client, f eniFixture, _ string) error {
			_, err := c.CreateNetworkInterface(ctx, &sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String(f.main)})
			return err
		}},
		{"AttachNetworkInterface", func(ctx context.Context, c *sdkec2.Client, f eniFixture, id string) error {
			_, err := c.AttachNetworkInterface(ctx, &sdkec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(id), InstanceId: aws.String(f.t3.ID), DeviceIndex: aws.Int32(1)})
			return err
		}},
		{"ModifyNetworkInterfaceAttribute", func(ctx context.Context, c *sdkec2.Client, _ eniFixture, id string) error {
			_, err := c.ModifyNetworkInterfaceAttribute(ctx, &sdkec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(id), Description: &types.AttributeValue{Value: aws.String("x")}})
			return err
		}},
		{"AssignPrivateIpAddresses", func(ctx context.Context, c *sdkec2.Client, _ eniFixture, id string) error {
			_, err := c.AssignPrivateIpAddresses(ctx, &sdkec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(id), SecondaryPrivateIpAddressCount: aws.Int32(1)})
			return err
		}},
		{"UnassignPrivateIpAddresses", func(ctx context.Context, c *sdkec2.Client, _ eniFixture, id string) error {
			_, err := c.UnassignPrivateIpAddresses(ctx, &sdkec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(id), PrivateIpAddresses: []string{"10.0.0.200"}})
			return err
		}},
		{"DetachNetworkInterface", func(ctx context.Context, c *sdkec2.Client, _ eniFixture, _ string) error {
			_, err := c.DetachNetworkInterface(ctx, &sdkec2.DetachNetworkInterfaceInput{AttachmentId: aws.String("eni-attach-0000000000000000a")})
			return err
		}},
		{"DeleteNetworkInterface", func(ctx context.Context, c *sdkec2.Client, _ eniFixture, id string) error {
			_, err := c.DeleteNetworkInterface(ctx, &sdkec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(id)})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.action, func(t *testing.T) {
			t.Parallel()
			f := newENIFixture(t)
			id := f.create(t, f.client(), sdkec2.CreateNetworkInterfaceInput{SubnetId: aws.String(f.main)})
			before, calls := f.model.ENIs(), f.srv.Calls(tt.action)
			f.srv.SetFault(tt.action, Fault{ThrottleFraction: 1})
			c := f.client(func(o *sdkec2.Options) {
				o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
					so.MaxAttempts, so.RateLimiter, so.MaxBackoff = 3, ratelimit.None, time.Millisecond
				})
			})
			err := tt.call(t.Context(), c, f, id)
			var apiErr smithy.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode() != CodeRequestLimitExceeded {
				t.Fatalf("err = %v, want %s", err, CodeRequestLimitExceeded)
			}
			if n := f.srv.Calls(tt.action) - calls; n != 3 {
				t.Errorf("calls = %d, want 3 (the SDK retries throttling)", n)
			}
			after := f.model.ENIs()
			if len(after) != len(before) || len(after[len(after)-1].PrivateIPs) != 1 || after[len(after)-1].Description != "" {
				t.Errorf("a throttled %s changed the model: %+v", tt.action, after)
			}
		})
	}
}

// TestNetworkInterfaceRawParams covers parameters the SDK never sends malformed.
func TestNetworkInterfaceRawParams(t *testing.T) {
	t.Parallel()
	f := newENIFixture(t)
	eni := f.t3.ENIIDs[0]
	tests := []struct {
		name, body, code string
	}{
		{"bad bool", "Action=DetachNetworkInterface&AttachmentId=eni-attach-1&Force=maybe", CodeInvalidParameterValue},
		{"bad address", "Action=AssignPrivateIpAddresses&NetworkInterfaceId=" + eni + "&PrivateIpAddress.1=10.0.0.300", CodeInvalidParameterValue},
		{"ipv6 address", "Action=AssignPrivateIpAddresses&NetworkInterfaceId=" + eni + "&PrivateIpAddress.1=fd00::1", CodeInvalidParameterValue},
		{"bad prefix", "Action=AssignPrivateIpAddresses&NetworkInterfaceId=" + eni + "&Ipv4Prefix.1=10.0.0.0", CodeInvalidParameterValue},
		{"negative count", "Action=AssignPrivateIpAddresses&NetworkInterfaceId=" + eni + "&SecondaryPrivateIpAddressCount=-1", CodeInvalidParameterValue},
		{"huge count", "Action=AssignPrivateIpAddresses&NetworkInterfaceId=" + eni + "&SecondaryPrivateIpAddressCount=99999999", CodeInvalidParameterValue},
		{"no device index", "Action=AttachNetworkInterface&NetworkInterfaceId=" + eni + "&InstanceId=" + f.t3.ID, CodeMissingParameter},
		{"modify nothing", "Action=ModifyNetworkInterfaceAttribute&NetworkInterfaceId=" + eni, CodeMissingParameter},
		{"modify flag alone", "Action=ModifyNetworkInterfaceAttribute&NetworkInterfaceId=" + eni + "&Attachment.DeleteOnTermination=true", CodeMissingParameter},
		{"unassign nothing", "Action=UnassignPrivateIpAddresses&NetworkInterfaceId=" + eni, CodeMissingParameter},
		{"delete without id", "Action=DeleteNetworkInterface", CodeMissingParameter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, body := rawPost(t, f.url, tt.body+"&Version=2016-11-15", true)
			if status != http.StatusBadRequest || !strings.Contains(body, "<Code>"+tt.code+"</Code>") {
				t.Errorf("status %d body %s; want 400 %s", status, body, tt.code)
			}
		})
	}
}

// FuzzParseAddressRequest feeds arbitrary bodies to the parsers of the
// network-interface actions, which read untrusted HTTP input.
func FuzzParseAddressRequest(f *testing.F) {
	f.Add("Action=AssignPrivateIpAddresses&NetworkInterfaceId=eni-1&SecondaryPrivateIpAddressCount=2&Ipv4PrefixCount=1")
	f.Add("Action=AssignPrivateIpAddresses&PrivateIpAddress.1=10.0.0.9&Ipv4Prefix.1=10.0.0.16%2F28&Ipv4Prefix.2=::%2F0")
	f.Add("Action=X&SecondaryPrivateIpAddressCount=-5&Force=TRUE&Attachment.DeleteOnTermination=nope")
	f.Fuzz(func(t *testing.T, body string) {
		r, err := ParseQuery(body)
		if err != nil {
			return
		}
		req, err := parseAddressRequest(r)
		if err == nil {
			if req.Count < 0 || req.Count > maxCount || req.PrefixCount < 0 || req.PrefixCount > maxCount {
				t.Fatalf("counts out of bounds: %+v", req)
			}
			for _, a := range req.Addresses {
				if !a.Is4() {
					t.Fatalf("non-IPv4 address %s", a)
				}
			}
			for _, p := range req.Prefixes {
				if !p.Addr().Is4() {
					t.Fatalf("non-IPv4 prefix %s", p)
				}
			}
		}
		_, _, _ = r.Bool("Force")
		_, _, _ = r.Bool("Attachment.DeleteOnTermination")
	})
}
