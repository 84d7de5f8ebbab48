package ec2

import (
	"context"
	"slices"
	"strconv"

	"github.com/autonode/autonode/sandbox/vpc"
)

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

// tagSet lists tags sorted by key, so answers are stable.
func tagSet(tags map[string]string) Items[xmlTag] {
	out := make([]xmlTag, 0, len(tags))
	for k, v := range tags {
		out = append(out, xmlTag{Key: k, Value: v})
	}
	slices.SortFunc(out, func(a, b xmlTag) int {
		if a.Key < b.Key {
			return -1
		}
		if a.Key > b.Key {
			return 1
		}
		return 0
	})
	return ItemsOf(out)
}

func one(s string) []string { return []string{s} }

// --- DescribeAvailabilityZones ---

type xmlZone struct {
	ZoneName           string `xml:"zoneName"`
	ZoneID             string `xml:"zoneId"`
	ZoneState          string `xml:"zoneState"`
	RegionName         string `xml:"regionName"`
	ZoneType           string `xml:"zoneType"`
	OptInStatus        string `xml:"optInStatus"`
	GroupName          string `xml:"groupName"`
	NetworkBorderGroup string `xml:"networkBorderGroup"`
}

type describeAvailabilityZonesResponse struct {
	AvailabilityZoneInfo Items[xmlZone] `xml:"availabilityZoneInfo"`
}

func (s *Server) describeAvailabilityZones(_ context.Context, r *Request) (any, error) {
	region := s.model.Region()
	zones := s.model.Zones()
	names, ids := r.List("ZoneName"), r.List("ZoneId")
	for _, list := range []struct {
		ids []string
		key func(vpc.Zone) string
	}{{names, func(z vpc.Zone) string { return z.Name }}, {ids, func(z vpc.Zone) string { return z.ID }}} {
		for _, want := range list.ids {
			if !slices.ContainsFunc(zones, func(z vpc.Zone) bool { return list.key(z) == want }) {
				return nil, Errorf(CodeInvalidParameterValue, "Invalid availability zone: [%s]", want)
			}
		}
	}
	zones = slices.DeleteFunc(zones, func(z vpc.Zone) bool {
		return (len(names) > 0 && !slices.Contains(names, z.Name)) || (len(ids) > 0 && !slices.Contains(ids, z.ID))
	})
	zones, err := applyFilters(zones, r.Filters(), fieldFuncs[vpc.Zone]{
		"zone-name":   func(z vpc.Zone) []string { return one(z.Name) },
		"zone-id":     func(z vpc.Zone) []string { return one(z.ID) },
		"region-name": func(vpc.Zone) []string { return one(region) },
		"state":       func(vpc.Zone) []string { return one("available") },
		"zone-type":   func(vpc.Zone) []string { return one("availability-zone") },
	}, nil)
	if err != nil {
		return nil, err
	}
	out := make([]xmlZone, len(zones))
	for i, z := range zones {
		out[i] = xmlZone{
			ZoneName: z.Name, ZoneID: z.ID, ZoneState: "available", RegionName: region, ZoneType: "availability-zone",
			OptInStatus: "opt-in-not-required", GroupName: region, NetworkBorderGroup: region,
		}
	}
	return describeAvailabilityZonesResponse{AvailabilityZoneInfo: ItemsOf(out)}, nil
}

// --- DescribeSubnets ---

type xmlSubnet struct {
	SubnetID                string        `xml:"subnetId"`
	SubnetArn               string        `xml:"subnetArn"`
	State                   string        `xml:"state"`
	VpcID                   string        `xml:"vpcId"`
	OwnerID                 string        `xml:"ownerId"`
	CidrBlock               string        `xml:"cidrBlock"`
	AvailableIPAddressCount int           `xml:"availableIpAddressCount"`
	AvailabilityZone        string        `xml:"availabilityZone"`
	AvailabilityZoneID      string        `xml:"availabilityZoneId"`
	DefaultForAz            bool          `xml:"defaultForAz"`
	MapPublicIPOnLaunch     bool          `xml:"mapPublicIpOnLaunch"`
	TagSet                  Items[xmlTag] `xml:"tagSet"`
}

type describeSubnetsResponse struct {
	SubnetSet Items[xmlSubnet] `xml:"subnetSet"`
	NextToken string           `xml:"nextToken,omitempty"`
}

func (s *Server) describeSubnets(_ context.Context, r *Request) (any, error) {
	subnets := s.model.Subnets()
	if ids := r.List("SubnetId"); len(ids) > 0 {
		if err := requireKnown(ids, func(id string) bool {
			return slices.ContainsFunc(subnets, func(s vpc.Subnet) bool { return s.ID == id })
		}, CodeSubnetNotFound, "subnet ID"); err != nil {
			return nil, err
		}
		subnets = slices.DeleteFunc(subnets, func(s vpc.Subnet) bool { return !slices.Contains(ids, s.ID) })
	}
	subnets, err := applyFilters(subnets, r.Filters(), fieldFuncs[vpc.Subnet]{
		"subnet-id":            func(s vpc.Subnet) []string { return one(s.ID) },
		"vpc-id":               func(s vpc.Subnet) []string { return one(s.VPCID) },
		"availability-zone":    func(s vpc.Subnet) []string { return one(s.Zone.Name) },
		"availability-zone-id": func(s vpc.Subnet) []string { return one(s.Zone.ID) },
		"cidr-block":           func(s vpc.Subnet) []string { return one(s.CIDR.String()) },
		"state":                func(vpc.Subnet) []string { return one("available") },
	}, func(s vpc.Subnet) map[string]string { return s.Tags })
	if err != nil {
		return nil, err
	}
	page, next, err := paginate(r, subnets, pageLimits{min: 5, max: 1000})
	if err != nil {
		return nil, err
	}
	account, region := s.model.AccountID(), s.model.Region()
	out := make([]xmlSubnet, len(page))
	for i, sn := range page {
		out[i] = xmlSubnet{
			SubnetID: sn.ID, SubnetArn: "arn:aws:ec2:" + region + ":" + account + ":subnet/" + sn.ID, State: "available",
			VpcID: sn.VPCID, OwnerID: account, CidrBlock: sn.CIDR.String(), AvailableIPAddressCount: sn.AvailableIPs,
			AvailabilityZone: sn.Zone.Name, AvailabilityZoneID: sn.Zone.ID, TagSet: tagSet(sn.Tags),
		}
	}
	return describeSubnetsResponse{SubnetSet: ItemsOf(out), NextToken: next}, nil
}

// --- network interfaces, shared by DescribeInstances and DescribeNetworkInterfaces ---

type xmlGroup struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName,omitempty"`
}

type xmlPrivateIP struct {
	PrivateIPAddress string `xml:"privateIpAddress"`
	PrivateDNSName   string `xml:"privateDnsName"`
	Primary          bool   `xml:"primary"`
}

type xmlPrefix struct {
	IPv4Prefix string `xml:"ipv4Prefix"`
}

type xmlAttachment struct {
	AttachmentID        string `xml:"attachmentId"`
	InstanceID          string `xml:"instanceId,omitempty"`
	InstanceOwnerID     string `xml:"instanceOwnerId,omitempty"`
	DeviceIndex         int    `xml:"deviceIndex"`
	NetworkCardIndex    int    `xml:"networkCardIndex"`
	Status              string `xml:"status"`
	AttachTime          string `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

// xmlENI holds the fields that InstanceNetworkInterface and NetworkInterface share.
type xmlENI struct {
	NetworkInterfaceID    string              `xml:"networkInterfaceId"`
	SubnetID              string              `xml:"subnetId"`
	VpcID                 string              `xml:"vpcId"`
	Description           string              `xml:"description"`
	OwnerID               string              `xml:"ownerId"`
	Status                string              `xml:"status"`
	MacAddress            string              `xml:"macAddress"`
	PrivateIPAddress      string              `xml:"privateIpAddress"`
	PrivateDNSName        string              `xml:"privateDnsName"`
	SourceDestCheck       bool                `xml:"sourceDestCheck"`
	InterfaceType         string              `xml:"interfaceType"`
	GroupSet              Items[xmlGroup]     `xml:"groupSet"`
	Attachment            *xmlAttachment      `xml:"attachment,omitempty"`
	PrivateIPAddressesSet Items[xmlPrivateIP] `xml:"privateIpAddressesSet"`
	IPv4PrefixSet         Items[xmlPrefix]    `xml:"ipv4PrefixSet"`
}

func (s *Server) eniXML(e vpc.ENI, withInstance bool) xmlENI {
	account := s.model.AccountID()
	names := map[string]string{}
	for _, g := range s.model.SecurityGroups() {
		names[g.ID] = g.Name
	}
	x := xmlENI{
		NetworkInterfaceID: e.ID, SubnetID: e.SubnetID, VpcID: e.VPCID, Description: e.Description,
		OwnerID: account, Status: string(e.Status), MacAddress: e.MAC, PrivateIPAddress: e.PrimaryIP().String(),
		PrivateDNSName: s.model.PrivateDNSName(e.PrimaryIP()), SourceDestCheck: true, InterfaceType: "interface",
	}
	for _, id := range e.SecurityGroupIDs {
		x.GroupSet.Items = append(x.GroupSet.Items, xmlGroup{GroupID: id, GroupName: names[id]})
	}
	for _, ip := range e.PrivateIPs {
		x.PrivateIPAddressesSet.Items = append(x.PrivateIPAddressesSet.Items, xmlPrivateIP{
			PrivateIPAddress: ip.Address.String(), PrivateDNSName: s.model.PrivateDNSName(ip.Address), Primary: ip.Primary,
		})
	}
	for _, p := range e.IPv4Prefixes {
		x.IPv4PrefixSet.Items = append(x.IPv4PrefixSet.Items, xmlPrefix{IPv4Prefix: p.String()})
	}
	if a := e.Attachment; a != nil {
		x.Attachment = &xmlAttachment{
			AttachmentID: a.ID, DeviceIndex: a.DeviceIndex, NetworkCardIndex: a.NetworkCardIndex, Status: "attached",
			AttachTime: timestamp(a.AttachTime), DeleteOnTermination: a.DeleteOnTermination,
		}
		if withInstance {
			x.Attachment.InstanceID, x.Attachment.InstanceOwnerID = a.InstanceID, account
		}
	}
	return x
}

// --- DescribeNetworkInterfaces ---

type xmlNetworkInterface struct {
	xmlENI
	AvailabilityZone   string        `xml:"availabilityZone"`
	AvailabilityZoneID string        `xml:"availabilityZoneId"`
	RequesterManaged   bool          `xml:"requesterManaged"`
	TagSet             Items[xmlTag] `xml:"tagSet"`
}

type describeNetworkInterfacesResponse struct {
	NetworkInterfaceSet Items[xmlNetworkInterface] `xml:"networkInterfaceSet"`
	NextToken           string                     `xml:"nextToken,omitempty"`
}

func (s *Server) describeNetworkInterfaces(_ context.Context, r *Request) (any, error) {
	enis := s.model.ENIs()
	if ids := r.List("NetworkInterfaceId"); len(ids) > 0 {
		if err := requireKnown(ids, func(id string) bool {
			return slices.ContainsFunc(enis, func(e vpc.ENI) bool { return e.ID == id })
		}, CodeNetworkInterfaceNotFound, "networkInterface ID"); err != nil {
			return nil, err
		}
		enis = slices.DeleteFunc(enis, func(e vpc.ENI) bool { return !slices.Contains(ids, e.ID) })
	}
	attached := func(f func(*vpc.Attachment) string) func(vpc.ENI) []string {
		return func(e vpc.ENI) []string {
			if e.Attachment == nil {
				return nil
			}
			return one(f(e.Attachment))
		}
	}
	enis, err := applyFilters(enis, r.Filters(), fieldFuncs[vpc.ENI]{
		"network-interface-id":          func(e vpc.ENI) []string { return one(e.ID) },
		"attachment.instance-id":        attached(func(a *vpc.Attachment) string { return a.InstanceID }),
		"attachment.device-index":       attached(func(a *vpc.Attachment) string { return strconv.Itoa(a.DeviceIndex) }),
		"attachment.status":             attached(func(*vpc.Attachment) string { return "attached" }),
		"attachment.attachment-id":      attached(func(a *vpc.Attachment) string { return a.ID }),
		"attachment.network-card-index": attached(func(a *vpc.Attachment) string { return strconv.Itoa(a.NetworkCardIndex) }),
		"subnet-id":                     func(e vpc.ENI) []string { return one(e.SubnetID) },
		"vpc-id":                        func(e vpc.ENI) []string { return one(e.VPCID) },
		"availability-zone":             func(e vpc.ENI) []string { return one(e.Zone.Name) },
		"status":                        func(e vpc.ENI) []string { return one(string(e.Status)) },
		"mac-address":                   func(e vpc.ENI) []string { return one(e.MAC) },
		"description":                   func(e vpc.ENI) []string { return one(e.Description) },
		"group-id":                      func(e vpc.ENI) []string { return e.SecurityGroupIDs },
		"private-ip-address": func(e vpc.ENI) []string {
			out := make([]string, len(e.PrivateIPs))
			for i, ip := range e.PrivateIPs {
				out[i] = ip.Address.String()
			}
			return out
		},
	}, func(e vpc.ENI) map[string]string { return e.Tags })
	if err != nil {
		return nil, err
	}
	page, next, err := paginate(r, enis, pageLimits{min: 5, max: 1000})
	if err != nil {
		return nil, err
	}
	out := make([]xmlNetworkInterface, len(page))
	for i, e := range page {
		out[i] = s.networkInterfaceXML(e)
	}
	return describeNetworkInterfacesResponse{NetworkInterfaceSet: ItemsOf(out), NextToken: next}, nil
}
