package ipam

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/autonode/autonode/agent/backoff"
)

// EC2API is the part of *ec2.Client the pool calls. The caller builds the
// client with the SDK's standard retryer, which already retries throttling
// and 5xx answers of single calls.
type EC2API interface {
	DescribeInstanceTypes(ctx context.Context, in *ec2.DescribeInstanceTypesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstanceTypesOutput, error)
	DescribeSubnets(ctx context.Context, in *ec2.DescribeSubnetsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error)
	DescribeNetworkInterfaces(ctx context.Context, in *ec2.DescribeNetworkInterfacesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeNetworkInterfacesOutput, error)
	CreateNetworkInterface(ctx context.Context, in *ec2.CreateNetworkInterfaceInput, optFns ...func(*ec2.Options)) (*ec2.CreateNetworkInterfaceOutput, error)
	AttachNetworkInterface(ctx context.Context, in *ec2.AttachNetworkInterfaceInput, optFns ...func(*ec2.Options)) (*ec2.AttachNetworkInterfaceOutput, error)
	ModifyNetworkInterfaceAttribute(ctx context.Context, in *ec2.ModifyNetworkInterfaceAttributeInput, optFns ...func(*ec2.Options)) (*ec2.ModifyNetworkInterfaceAttributeOutput, error)
	AssignPrivateIpAddresses(ctx context.Context, in *ec2.AssignPrivateIpAddressesInput, optFns ...func(*ec2.Options)) (*ec2.AssignPrivateIpAddressesOutput, error)
	UnassignPrivateIpAddresses(ctx context.Context, in *ec2.UnassignPrivateIpAddressesInput, optFns ...func(*ec2.Options)) (*ec2.UnassignPrivateIpAddressesOutput, error)
	DetachNetworkInterface(ctx context.Context, in *ec2.DetachNetworkInterfaceInput, optFns ...func(*ec2.Options)) (*ec2.DetachNetworkInterfaceOutput, error)
	DeleteNetworkInterface(ctx context.Context, in *ec2.DeleteNetworkInterfaceInput, optFns ...func(*ec2.Options)) (*ec2.DeleteNetworkInterfaceOutput, error)
}

// MetadataAPI is the part of *imds.Client the pool calls.
type MetadataAPI interface {
	GetMetadata(ctx context.Context, in *imds.GetMetadataInput, optFns ...func(*imds.Options)) (*imds.GetMetadataOutput, error)
}

// Tag keys on the ENIs the pool creates (see DESIGN.md). Only ENIs whose
// TagInstanceID is this instance's id are ever changed or deleted, besides the
// primary ENI's secondary addresses.
const (
	TagInstanceID = "autonode.dev/instance-id"
	TagCluster    = "autonode.dev/cluster"
)

// EC2 error codes the pool branches on.
const (
	codeInsufficientCidrBlocks = "InsufficientCidrBlocks"
	codeInsufficientAddresses  = "InsufficientFreeAddressesInSubnet"
	codeAddressLimit           = "PrivateIpAddressLimitExceeded"
	codeAttachmentLimit        = "AttachmentLimitExceeded"
	codeENINotFound            = "InvalidNetworkInterfaceID.NotFound"
	codeAttachmentNotFound     = "InvalidAttachmentID.NotFound"
)

// maxMetadataBody caps one IMDS answer; real ones are a few hundred bytes.
const maxMetadataBody = 64 << 10

func errorCode(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode()
	}
	return ""
}

// call runs one EC2 action and counts it and its failure.
func (p *Pool) call(action string, f func() error) error {
	p.metrics.ec2Calls.WithLabelValues(action).Inc()
	err := f()
	if err != nil {
		p.metrics.ec2Errors.WithLabelValues(action, errorCode(err)).Inc()
	}
	return err
}

// metadata reads one IMDS path.
func (p *Pool) metadata(ctx context.Context, path string) (string, error) {
	out, err := p.cfg.IMDS.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", fmt.Errorf("metadata %s: %w", path, err)
	}
	defer out.Content.Close()
	body, err := io.ReadAll(io.LimitReader(out.Content, maxMetadataBody+1))
	if err != nil {
		return "", fmt.Errorf("metadata %s: %w", path, err)
	}
	if len(body) > maxMetadataBody {
		return "", fmt.Errorf("metadata %s: answer larger than %d bytes", path, maxMetadataBody)
	}
	return strings.TrimSpace(string(body)), nil
}

// imdsENI is what IMDS says about one attached interface.
type imdsENI struct {
	id, mac, subnetID string
	device            int
	cidr              netip.Prefix
	ips               []netip.Addr // primary first
	prefixes          []netip.Prefix
}

// discoverIMDS lists the instance's interfaces from IMDS.
func (p *Pool) discoverIMDS(ctx context.Context) ([]imdsENI, error) {
	list, err := p.metadata(ctx, "network/interfaces/macs/")
	if err != nil {
		return nil, err
	}
	var out []imdsENI
	for _, line := range strings.Fields(list) {
		mac := strings.TrimSuffix(line, "/")
		base := "network/interfaces/macs/" + mac + "/"
		get := func(key string) (string, error) { return p.metadata(ctx, base+key) }
		e := imdsENI{mac: mac}
		var dev, cidr, ips string
		for _, f := range []struct {
			key string
			dst *string
		}{{"device-number", &dev}, {"interface-id", &e.id}, {"subnet-id", &e.subnetID}, {"subnet-ipv4-cidr-block", &cidr}, {"local-ipv4s", &ips}} {
			if *f.dst, err = get(f.key); err != nil {
				return nil, err
			}
		}
		if e.device, err = strconv.Atoi(dev); err != nil {
			return nil, fmt.Errorf("metadata %sdevice-number %q: %w", base, dev, err)
		}
		if e.cidr, err = netip.ParsePrefix(cidr); err != nil {
			return nil, fmt.Errorf("metadata %ssubnet-ipv4-cidr-block: %w", base, err)
		}
		for _, s := range strings.Fields(ips) {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("metadata %slocal-ipv4s: %w", base, err)
			}
			e.ips = append(e.ips, a)
		}
		// ipv4-prefix exists only once a prefix is delegated: a 404 is normal.
		if pfx, err := get("ipv4-prefix"); err == nil {
			for _, s := range strings.Fields(pfx) {
				if q, err := netip.ParsePrefix(s); err == nil {
					e.prefixes = append(e.prefixes, q)
				}
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// ec2ENI is EC2's view of one interface.
type ec2ENI struct {
	id, mac, subnetID, status, attachmentID, instanceID string
	device, card                                        int
	tags                                                map[string]string
	primary                                             netip.Addr
	ips                                                 []netip.Addr // secondary only
	prefixes                                            []netip.Prefix
	groups                                              []string
	// dotPending says DeleteOnTermination could not be set yet.
	dotPending bool
}

func fromEC2(n types.NetworkInterface) ec2ENI {
	e := ec2ENI{
		id: aws.ToString(n.NetworkInterfaceId), mac: aws.ToString(n.MacAddress), subnetID: aws.ToString(n.SubnetId),
		status: string(n.Status), tags: map[string]string{}, device: -1,
	}
	if a := n.Attachment; a != nil {
		e.attachmentID, e.instanceID = aws.ToString(a.AttachmentId), aws.ToString(a.InstanceId)
		e.device, e.card = int(aws.ToInt32(a.DeviceIndex)), int(aws.ToInt32(a.NetworkCardIndex))
	}
	for _, t := range n.TagSet {
		e.tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	for _, g := range n.Groups {
		e.groups = append(e.groups, aws.ToString(g.GroupId))
	}
	for _, ip := range n.PrivateIpAddresses {
		a, err := netip.ParseAddr(aws.ToString(ip.PrivateIpAddress))
		if err != nil {
			continue
		}
		if aws.ToBool(ip.Primary) {
			e.primary = a
		} else {
			e.ips = append(e.ips, a)
		}
	}
	for _, q := range n.Ipv4Prefixes {
		if pfx, err := netip.ParsePrefix(aws.ToString(q.Ipv4Prefix)); err == nil {
			e.prefixes = append(e.prefixes, pfx)
		}
	}
	return e
}

// describeENIs lists interfaces matching filters, every page.
func (p *Pool) describeENIs(ctx context.Context, filters ...types.Filter) ([]ec2ENI, error) {
	var out []ec2ENI
	pages := ec2.NewDescribeNetworkInterfacesPaginator(p.cfg.EC2, &ec2.DescribeNetworkInterfacesInput{Filters: filters})
	for pages.HasMorePages() {
		var page *ec2.DescribeNetworkInterfacesOutput
		err := p.call("DescribeNetworkInterfaces", func() (err error) { page, err = pages.NextPage(ctx); return err })
		if err != nil {
			return nil, fmt.Errorf("describing network interfaces: %w", err)
		}
		for _, n := range page.NetworkInterfaces {
			out = append(out, fromEC2(n))
		}
	}
	return out, nil
}

func filter(name string, values ...string) types.Filter {
	return types.Filter{Name: aws.String(name), Values: values}
}

// subnetCIDR returns a subnet's block, asking EC2 once per subnet.
func (p *Pool) subnetCIDR(ctx context.Context, id string) (netip.Prefix, error) {
	p.mu.Lock()
	c, ok := p.cidrs[id]
	p.mu.Unlock()
	if ok {
		return c, nil
	}
	var out *ec2.DescribeSubnetsOutput
	err := p.call("DescribeSubnets", func() (err error) {
		out, err = p.cfg.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{id}})
		return err
	})
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("describing subnet %s: %w", id, err)
	}
	if len(out.Subnets) != 1 {
		return netip.Prefix{}, fmt.Errorf("describing subnet %s: %d answers, want 1", id, len(out.Subnets))
	}
	c, err = netip.ParsePrefix(aws.ToString(out.Subnets[0].CidrBlock))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("subnet %s: %w", id, err)
	}
	p.mu.Lock()
	p.cidrs[id] = c
	p.mu.Unlock()
	return c, nil
}

// createENI creates an ENI in subnet, attaches it at device and marks it
// DeleteOnTermination. An ENI that cannot be attached is deleted again; if
// even that fails, the leaked-ENI sweep finds it by its tag later.
func (p *Pool) createENI(ctx context.Context, subnet string, device int) (ec2ENI, error) {
	tags := []types.Tag{{Key: aws.String(TagInstanceID), Value: aws.String(p.instanceID)}}
	if p.cfg.Cluster != "" {
		tags = append(tags, types.Tag{Key: aws.String(TagCluster), Value: aws.String(p.cfg.Cluster)})
	}
	var out *ec2.CreateNetworkInterfaceOutput
	err := p.call("CreateNetworkInterface", func() (err error) {
		out, err = p.cfg.EC2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{
			SubnetId:          aws.String(subnet),
			Description:       aws.String("autonode pod addresses of " + p.instanceID),
			Groups:            p.groups,
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface, Tags: tags}},
		})
		return err
	})
	if err != nil {
		return ec2ENI{}, fmt.Errorf("creating network interface in subnet %s: %w", subnet, err)
	}
	e := fromEC2(*out.NetworkInterface)
	var att *ec2.AttachNetworkInterfaceOutput
	err = p.call("AttachNetworkInterface", func() (err error) {
		att, err = p.cfg.EC2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{
			NetworkInterfaceId: aws.String(e.id), InstanceId: aws.String(p.instanceID), DeviceIndex: aws.Int32(int32(device)),
		})
		return err
	})
	if err != nil {
		if derr := p.deleteDetached(ctx, e.id); derr != nil {
			p.log.Warn("could not delete an ENI that failed to attach; the leak sweep will retry", "eni", e.id, "err", derr)
		}
		return ec2ENI{}, fmt.Errorf("attaching network interface %s at device %d: %w", e.id, device, err)
	}
	e.attachmentID, e.device, e.instanceID = aws.ToString(att.AttachmentId), device, p.instanceID
	// AttachNetworkInterface cannot set DeleteOnTermination; without it an
	// instance's termination would leak the ENI until the provisioner's GC.
	err = p.call("ModifyNetworkInterfaceAttribute", func() error {
		_, err := p.cfg.EC2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
			NetworkInterfaceId: aws.String(e.id),
			Attachment:         &types.NetworkInterfaceAttachmentChanges{AttachmentId: aws.String(e.attachmentID), DeleteOnTermination: aws.Bool(true)},
		})
		return err
	})
	if err != nil {
		// The ENI works; the next reconcile pass repairs the flag.
		p.log.Warn("could not set DeleteOnTermination; will retry", "eni", e.id, "err", err)
		e.dotPending = true
	}
	return e, nil
}

// setDeleteOnTermination repairs the flag on an ENI whose earlier attempt failed.
func (p *Pool) setDeleteOnTermination(ctx context.Context, eniID, attachmentID string) error {
	return p.call("ModifyNetworkInterfaceAttribute", func() error {
		_, err := p.cfg.EC2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
			NetworkInterfaceId: aws.String(eniID),
			Attachment:         &types.NetworkInterfaceAttachmentChanges{AttachmentId: aws.String(attachmentID), DeleteOnTermination: aws.Bool(true)},
		})
		if err != nil {
			return fmt.Errorf("setting DeleteOnTermination on %s: %w", eniID, err)
		}
		return nil
	})
}

// assign asks EC2 for n secondary addresses or n prefixes on an ENI.
func (p *Pool) assign(ctx context.Context, eniID string, n int, prefixes bool) ([]netip.Addr, []netip.Prefix, error) {
	in := &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eniID)}
	if prefixes {
		in.Ipv4PrefixCount = aws.Int32(int32(n))
	} else {
		in.SecondaryPrivateIpAddressCount = aws.Int32(int32(n))
	}
	var out *ec2.AssignPrivateIpAddressesOutput
	err := p.call("AssignPrivateIpAddresses", func() (err error) {
		out, err = p.cfg.EC2.AssignPrivateIpAddresses(ctx, in)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("assigning %d %s to %s: %w", n, map[bool]string{true: "prefixes", false: "addresses"}[prefixes], eniID, err)
	}
	var addrs []netip.Addr
	var pfxs []netip.Prefix
	for _, a := range out.AssignedPrivateIpAddresses {
		if v, err := netip.ParseAddr(aws.ToString(a.PrivateIpAddress)); err == nil {
			addrs = append(addrs, v)
		}
	}
	for _, q := range out.AssignedIpv4Prefixes {
		if v, err := netip.ParsePrefix(aws.ToString(q.Ipv4Prefix)); err == nil {
			pfxs = append(pfxs, v)
		}
	}
	return addrs, pfxs, nil
}

// unassign returns addresses and prefixes of an ENI to its subnet.
func (p *Pool) unassign(ctx context.Context, eniID string, addrs []netip.Addr, pfxs []netip.Prefix) error {
	if len(addrs) == 0 && len(pfxs) == 0 {
		return nil
	}
	in := &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eniID)}
	for _, a := range addrs {
		in.PrivateIpAddresses = append(in.PrivateIpAddresses, a.String())
	}
	for _, q := range pfxs {
		in.Ipv4Prefixes = append(in.Ipv4Prefixes, q.String())
	}
	return p.call("UnassignPrivateIpAddresses", func() error {
		if _, err := p.cfg.EC2.UnassignPrivateIpAddresses(ctx, in); err != nil {
			return fmt.Errorf("unassigning %d addresses and %d prefixes from %s: %w", len(addrs), len(pfxs), eniID, err)
		}
		return nil
	})
}

// releaseENI gives an attached ENI of ours back: its addresses, its
// attachment, then the ENI itself once EC2 reports it available.
func (p *Pool) releaseENI(ctx context.Context, eniID, attachmentID string, ips []netip.Addr, pfxs []netip.Prefix) error {
	if err := p.unassign(ctx, eniID, ips, pfxs); err != nil && errorCode(err) != codeENINotFound {
		return err
	}
	err := p.call("DetachNetworkInterface", func() error {
		_, err := p.cfg.EC2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: aws.String(attachmentID)})
		return err
	})
	if err != nil && errorCode(err) != codeAttachmentNotFound {
		return fmt.Errorf("detaching network interface %s: %w", eniID, err)
	}
	return p.deleteDetached(ctx, eniID)
}

// deleteDetached waits, with backoff, until EC2 reports the ENI available
// (detaching takes seconds on AWS) and deletes it. An ENI already gone is fine.
func (p *Pool) deleteDetached(ctx context.Context, eniID string) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DetachTimeout)
	defer cancel()
	delays := backoff.New(p.cfg.DetachPollInitial, p.cfg.DetachPollMax)
	for {
		var out *ec2.DescribeNetworkInterfacesOutput
		err := p.call("DescribeNetworkInterfaces", func() (err error) {
			out, err = p.cfg.EC2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eniID}})
			return err
		})
		switch {
		case errorCode(err) == codeENINotFound:
			return nil
		case err == nil && len(out.NetworkInterfaces) == 1 && out.NetworkInterfaces[0].Status == types.NetworkInterfaceStatusAvailable:
			err = p.call("DeleteNetworkInterface", func() error {
				_, err := p.cfg.EC2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(eniID)})
				return err
			})
			if err == nil || errorCode(err) == codeENINotFound {
				return nil
			}
		}
		if err := backoff.Sleep(ctx, delays.Step()); err != nil {
			return fmt.Errorf("deleting network interface %s: waiting for it to detach: %w", eniID, err)
		}
	}
}

// sweepLeaked deletes unattached ENIs tagged with this instance's id: ENIs
// that a crash or a failed attach left behind. ENIs of other instances are
// never looked at; the provisioner's GC owns them.
func (p *Pool) sweepLeaked(ctx context.Context) error {
	leaked, err := p.describeENIs(ctx, filter("tag:"+TagInstanceID, p.instanceID), filter("status", "available"))
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range leaked {
		if e.tags[TagInstanceID] != p.instanceID || e.attachmentID != "" {
			continue // a filter the API ignored must not make us delete others' ENIs
		}
		p.log.Info("deleting leaked ENI", "eni", e.id, "subnet", e.subnetID)
		if err := p.deleteDetached(ctx, e.id); err != nil {
			errs = append(errs, err)
			continue
		}
		p.metrics.leakedENIs.Inc()
	}
	return errors.Join(errs...)
}

// nextDevice returns the lowest free device index on network card 0.
func nextDevice(used []int) int {
	for i := 0; ; i++ {
		if !slices.Contains(used, i) {
			return i
		}
	}
}
