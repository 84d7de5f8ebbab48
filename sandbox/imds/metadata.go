package imds

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/autonode/autonode/sandbox/catalog"
	"github.com/autonode/autonode/sandbox/vpc"
)

// timeFormat is how IMDS writes times: UTC, whole seconds.
const timeFormat = "2006-01-02T15:04:05Z"

// tree builds the /latest tree from the model as it is now.
func (s *Server) tree() (*node, error) {
	inst, err := s.model.Instance(s.instanceID)
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", s.instanceID, err)
	}
	enis, err := s.model.InstanceENIs(s.instanceID)
	if err != nil {
		return nil, fmt.Errorf("instance %s enis: %w", s.instanceID, err)
	}
	region := s.model.Region()
	metaData := map[string]*node{
		"ami-id":         leaf(inst.ImageID),
		"hostname":       leaf(inst.PrivateDNSName),
		"instance-id":    leaf(inst.ID),
		"instance-type":  leaf(inst.Type),
		"local-hostname": leaf(inst.PrivateDNSName),
		"local-ipv4":     leaf(inst.PrivateIP.String()),
		"placement": dir(map[string]*node{
			"availability-zone":    leaf(inst.Zone.Name),
			"availability-zone-id": leaf(inst.Zone.ID),
			"region":               leaf(region),
		}),
	}
	macs := map[string]*node{}
	for _, e := range enis {
		n, err := s.interfaceNode(e)
		if err != nil {
			return nil, err
		}
		macs[e.MAC] = n
		if e.Attachment != nil && e.Attachment.DeviceIndex == 0 {
			metaData["mac"] = leaf(e.MAC)
		}
	}
	metaData["network"] = dir(map[string]*node{"interfaces": dir(map[string]*node{"macs": dir(macs)})})
	if s.opts.RoleName != "" {
		iam, err := s.iamNode()
		if err != nil {
			return nil, err
		}
		metaData["iam"] = iam
	}

	doc, err := s.identityDocument(inst)
	if err != nil {
		return nil, err
	}
	return dir(map[string]*node{
		"latest": dir(map[string]*node{
			"meta-data": dir(metaData),
			"dynamic": dir(map[string]*node{
				"instance-identity": dir(map[string]*node{"document": jsonLeaf(doc)}),
			}),
		}),
	}), nil
}

func (s *Server) interfaceNode(e vpc.ENI) (*node, error) {
	subnet, err := s.model.Subnet(e.SubnetID)
	if err != nil {
		return nil, fmt.Errorf("eni %s: %w", e.ID, err)
	}
	vpcCIDR := s.model.VPC().CIDR.String()
	ips := make([]string, 0, len(e.PrivateIPs))
	for _, ip := range e.PrivateIPs { // the model keeps the primary first, as IMDS lists it
		ips = append(ips, ip.Address.String())
	}
	n := map[string]*node{
		"device-number":          leaf(strconv.Itoa(deviceIndex(e))),
		"interface-id":           leaf(e.ID),
		"local-hostname":         leaf(s.model.PrivateDNSName(e.PrimaryIP())),
		"local-ipv4s":            leaf(strings.Join(ips, "\n")),
		"mac":                    leaf(e.MAC),
		"owner-id":               leaf(s.model.AccountID()),
		"security-group-ids":     leaf(strings.Join(e.SecurityGroupIDs, "\n")),
		"subnet-id":              leaf(e.SubnetID),
		"subnet-ipv4-cidr-block": leaf(subnet.CIDR.String()),
		"vpc-id":                 leaf(e.VPCID),
		"vpc-ipv4-cidr-block":    leaf(vpcCIDR),
		"vpc-ipv4-cidr-blocks":   leaf(vpcCIDR),
	}
	if e.Attachment != nil {
		n["network-card"] = leaf(strconv.Itoa(e.Attachment.NetworkCardIndex))
	}
	// Like the real service, the key exists only once prefixes are delegated.
	if len(e.IPv4Prefixes) > 0 {
		prefixes := make([]string, len(e.IPv4Prefixes))
		for i, p := range e.IPv4Prefixes {
			prefixes[i] = p.String()
		}
		n["ipv4-prefix"] = leaf(strings.Join(prefixes, "\n"))
	}
	return dir(n), nil
}

func deviceIndex(e vpc.ENI) int {
	if e.Attachment == nil {
		return -1
	}
	return e.Attachment.DeviceIndex
}

func (s *Server) iamNode() (*node, error) {
	now := s.opts.Now().UTC()
	role := s.opts.RoleName
	info, err := json.Marshal(map[string]string{
		"Code":               "Success",
		"LastUpdated":        now.Format(timeFormat),
		"InstanceProfileArn": fmt.Sprintf("arn:aws:iam::%s:instance-profile/%s", s.model.AccountID(), role),
		"InstanceProfileId":  "AIPAEXAMPLEPROFILEID0",
	})
	if err != nil {
		return nil, fmt.Errorf("iam info for role %s: %w", role, err)
	}
	creds := map[string]*node{}
	if s.opts.Credentials != nil {
		// Fetched only when this path is read, so other paths never wait on it.
		creds[role] = &node{json: true, get: s.credentials}
	}
	return dir(map[string]*node{
		"info":                 jsonLeaf(string(info)),
		"security-credentials": dir(creds),
	}), nil
}

// credentials renders the node role's credentials as ec2rolecreds reads them.
func (s *Server) credentials(ctx context.Context) (string, error) {
	now := s.opts.Now().UTC()
	role := s.opts.RoleName
	c, err := s.opts.Credentials.Retrieve(ctx)
	if err != nil {
		return "", fmt.Errorf("credentials for role %s: %w", role, err)
	}
	expires := c.Expires
	if !c.CanExpire {
		expires = now.Add(6 * time.Hour)
	}
	body, err := json.Marshal(map[string]string{
		"Code":            "Success",
		"LastUpdated":     now.Format(timeFormat),
		"Type":            "AWS-HMAC",
		"AccessKeyId":     c.AccessKeyID,
		"SecretAccessKey": c.SecretAccessKey,
		"Token":           c.SessionToken,
		"Expiration":      expires.UTC().Format(timeFormat),
	})
	if err != nil {
		return "", fmt.Errorf("credentials for role %s: %w", role, err)
	}
	return string(body), nil
}

func (s *Server) identityDocument(inst vpc.Instance) (string, error) {
	arch := "x86_64" // types outside the catalog are assumed to be Intel/AMD
	if t, ok := catalog.Lookup(inst.Type); ok {
		arch = t.EC2Architecture()
	}
	doc, err := json.MarshalIndent(map[string]any{
		"accountId":               s.model.AccountID(),
		"architecture":            arch,
		"availabilityZone":        inst.Zone.Name,
		"imageId":                 inst.ImageID,
		"instanceId":              inst.ID,
		"instanceType":            inst.Type,
		"pendingTime":             inst.LaunchTime.UTC().Format(timeFormat),
		"privateIp":               inst.PrivateIP.String(),
		"region":                  s.model.Region(),
		"version":                 "2017-09-30",
		"billingProducts":         nil,
		"devpayProductCodes":      nil,
		"marketplaceProductCodes": nil,
		"kernelId":                nil,
		"ramdiskId":               nil,
	}, "", "  ")
	if err != nil {
		return "", fmt.Errorf("identity document of %s: %w", inst.ID, err)
	}
	return string(doc), nil
}
