package ec2

import (
	"context"
	"net/netip"

	"github.com/autonode/autonode/sandbox/vpc"
)

// maxCount bounds the address and prefix counts a request may ask for; the
// largest type allows 50 per ENI, and the bound keeps a hostile count from
// sweeping a whole subnet on a type the catalog does not know.
const maxCount = 1000

// returnTrue is the <return>true</return> answer of EC2's mutating actions.
type returnTrue struct {
	Return bool `xml:"return"`
}

// limits gives the model each instance type's ENI limits from the catalog.
// A detached ENI ("") may hold as many slots as the largest type allows,
// since it could still be attached to one; types outside the catalog have no
// limits.
func (s *Server) limits(instanceType string) vpc.Limits {
	if instanceType == "" {
		var most int32
		for _, t := range s.catalog {
			most = max(most, t.IPv4PerENI)
		}
		return vpc.Limits{IPv4PerENI: int(most)}
	}
	t, ok := s.instanceType(instanceType)
	if !ok {
		return vpc.Limits{}
	}
	return vpc.Limits{MaxENIs: int(t.MaxENIs), NetworkCards: int(t.NetworkCards), IPv4PerENI: int(t.IPv4PerENI)}
}

// required returns a parameter that must be present.
func required(r *Request, name string) (string, error) {
	v := r.Get(name)
	if v == "" {
		return "", Errorf(CodeMissingParameter, "The request must contain the parameter %s", name)
	}
	return v, nil
}

// count returns a non-negative count parameter no larger than maxCount.
func count(r *Request, name string) (int, error) {
	n, _, err := r.Int(name)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > maxCount {
		return 0, Errorf(CodeInvalidParameterValue, "Value (%d) for parameter %s is invalid", n, name)
	}
	return n, nil
}

// addresses parses a list of IPv4 addresses such as PrivateIpAddress.N.
func addresses(r *Request, name string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, v := range r.List(name) {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return nil, Errorf(CodeInvalidParameterValue, "Invalid IPv4 address %q in %s", v, name)
		}
		out = append(out, a)
	}
	return out, nil
}

// prefixes parses a list of IPv4 prefixes such as Ipv4Prefix.N.
func prefixes(r *Request, name string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range r.List(name) {
		p, err := netip.ParsePrefix(v)
		if err != nil || !p.Addr().Is4() {
			return nil, Errorf(CodeInvalidParameterValue, "Invalid IPv4 prefix %q in %s", v, name)
		}
		out = append(out, p)
	}
	return out, nil
}

// parseAddressRequest reads AssignPrivateIpAddresses' parameters. As in EC2,
// addresses are named or counted but not both, and so are prefixes.
func parseAddressRequest(r *Request) (vpc.AddressRequest, error) {
	var req vpc.AddressRequest
	var err error
	if req.Addresses, err = addresses(r, "PrivateIpAddress"); err != nil {
		return req, err
	}
	if req.Count, err = count(r, "SecondaryPrivateIpAddressCount"); err != nil {
		return req, err
	}
	if req.Prefixes, err = prefixes(r, "Ipv4Prefix"); err != nil {
		return req, err
	}
	if req.PrefixCount, err = count(r, "Ipv4PrefixCount"); err != nil {
		return req, err
	}
	switch {
	case len(req.Addresses) > 0 && req.Count > 0:
		return req, Errorf(CodeInvalidParameterCombination, "Specify either PrivateIpAddress or SecondaryPrivateIpAddressCount, not both")
	case len(req.Prefixes) > 0 && req.PrefixCount > 0:
		return req, Errorf(CodeInvalidParameterCombination, "Specify either Ipv4Prefix or Ipv4PrefixCount, not both")
	case len(req.Addresses) == 0 && req.Count == 0 && len(req.Prefixes) == 0 && req.PrefixCount == 0:
		return req, Errorf(CodeMissingParameter, "Specify PrivateIpAddress, SecondaryPrivateIpAddressCount, Ipv4Prefix or Ipv4PrefixCount")
	}
	return req, nil
}

func (s *Server) networkInterfaceXML(e vpc.ENI) xmlNetworkInterface {
	return xmlNetworkInterface{
		xmlENI: s.eniXML(e, true), AvailabilityZone: e.Zone.Name, AvailabilityZoneID: e.Zone.ID, TagSet: tagSet(e.Tags),
	}
}

// --- CreateNetworkInterface ---

type createNetworkInterfaceResponse struct {
	NetworkInterface xmlNetworkInterface `xml:"networkInterface"`
}

func (s *Server) createNetworkInterface(_ context.Context, r *Request) (any, error) {
	subnetID, err := required(r, "SubnetId")
	if err != nil {
		return nil, err
	}
	spec := vpc.ENISpec{SubnetID: subnetID, Description: r.Get("Description"), SecurityGroupIDs: r.List("SecurityGroupId")}
	if spec.SecondaryIPs, err = count(r, "SecondaryPrivateIpAddressCount"); err != nil {
		return nil, err
	}
	if spec.Prefixes, err = count(r, "Ipv4PrefixCount"); err != nil {
		return nil, err
	}
	for _, ts := range r.TagSpecifications() {
		if ts.ResourceType != "network-interface" {
			return nil, Errorf(CodeInvalidParameterValue, "'%s' is not a valid taggable resource type for this operation.", ts.ResourceType)
		}
		if spec.Tags == nil {
			spec.Tags = map[string]string{}
		}
		for _, t := range ts.Tags {
			spec.Tags[t.Key] = t.Value
		}
	}
	e, err := s.model.CreateENI(spec, s.limits)
	if err != nil {
		return nil, err
	}
	return createNetworkInterfaceResponse{NetworkInterface: s.networkInterfaceXML(e)}, nil
}

// --- AttachNetworkInterface ---

type attachNetworkInterfaceResponse struct {
	AttachmentID     string `xml:"attachmentId"`
	NetworkCardIndex int    `xml:"networkCardIndex"`
}

func (s *Server) attachNetworkInterface(_ context.Context, r *Request) (any, error) {
	eniID, err := required(r, "NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	instanceID, err := required(r, "InstanceId")
	if err != nil {
		return nil, err
	}
	device, ok, err := r.Int("DeviceIndex")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, Errorf(CodeMissingParameter, "The request must contain the parameter DeviceIndex")
	}
	card, _, err := r.Int("NetworkCardIndex")
	if err != nil {
		return nil, err
	}
	a, err := s.model.AttachENI(eniID, instanceID, device, card, s.limits)
	if err != nil {
		return nil, err
	}
	return attachNetworkInterfaceResponse{AttachmentID: a.ID, NetworkCardIndex: a.NetworkCardIndex}, nil
}

// --- ModifyNetworkInterfaceAttribute ---

func (s *Server) modifyNetworkInterfaceAttribute(_ context.Context, r *Request) (any, error) {
	eniID, err := required(r, "NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	var c vpc.ENIChange
	if r.Params.Has("Description.Value") {
		d := r.Get("Description.Value")
		c.Description = &d
	}
	c.SecurityGroupIDs = r.List("SecurityGroupId")
	c.AttachmentID = r.Get("Attachment.AttachmentId")
	dot, set, err := r.Bool("Attachment.DeleteOnTermination")
	if err != nil {
		return nil, err
	}
	if set {
		c.DeleteOnTermination = &dot
	}
	if c.Description == nil && c.SecurityGroupIDs == nil && c.AttachmentID == "" && !set {
		return nil, Errorf(CodeMissingParameter, "Specify an attribute to modify: Description, SecurityGroupId or Attachment")
	}
	if (c.AttachmentID == "") != !set {
		return nil, Errorf(CodeMissingParameter, "Attachment.AttachmentId and Attachment.DeleteOnTermination go together")
	}
	if err := s.model.ModifyENI(eniID, c); err != nil {
		return nil, err
	}
	return returnTrue{Return: true}, nil
}

// --- AssignPrivateIpAddresses ---

type xmlAssignedIP struct {
	PrivateIPAddress string `xml:"privateIpAddress"`
}

type assignPrivateIPAddressesResponse struct {
	NetworkInterfaceID            string               `xml:"networkInterfaceId"`
	AssignedPrivateIPAddressesSet Items[xmlAssignedIP] `xml:"assignedPrivateIpAddressesSet"`
	AssignedIPv4PrefixSet         Items[xmlPrefix]     `xml:"assignedIpv4PrefixSet"`
}

func (s *Server) assignPrivateIPAddresses(_ context.Context, r *Request) (any, error) {
	eniID, err := required(r, "NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	req, err := parseAddressRequest(r)
	if err != nil {
		return nil, err
	}
	got, err := s.model.AssignAddresses(eniID, req, s.limits)
	if err != nil {
		return nil, err
	}
	out := assignPrivateIPAddressesResponse{NetworkInterfaceID: eniID}
	for _, a := range got.Addresses {
		out.AssignedPrivateIPAddressesSet.Items = append(out.AssignedPrivateIPAddressesSet.Items, xmlAssignedIP{PrivateIPAddress: a.String()})
	}
	for _, p := range got.Prefixes {
		out.AssignedIPv4PrefixSet.Items = append(out.AssignedIPv4PrefixSet.Items, xmlPrefix{IPv4Prefix: p.String()})
	}
	return out, nil
}

// --- UnassignPrivateIpAddresses ---

func (s *Server) unassignPrivateIPAddresses(_ context.Context, r *Request) (any, error) {
	eniID, err := required(r, "NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	addrs, err := addresses(r, "PrivateIpAddress")
	if err != nil {
		return nil, err
	}
	pfx, err := prefixes(r, "Ipv4Prefix")
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 && len(pfx) == 0 {
		return nil, Errorf(CodeMissingParameter, "Specify PrivateIpAddress or Ipv4Prefix")
	}
	if err := s.model.UnassignAddresses(eniID, addrs, pfx); err != nil {
		return nil, err
	}
	return returnTrue{Return: true}, nil
}

// --- DetachNetworkInterface ---

func (s *Server) detachNetworkInterface(_ context.Context, r *Request) (any, error) {
	id, err := required(r, "AttachmentId")
	if err != nil {
		return nil, err
	}
	force, _, err := r.Bool("Force")
	if err != nil {
		return nil, err
	}
	if err := s.model.DetachENI(id, force); err != nil {
		return nil, err
	}
	return returnTrue{Return: true}, nil
}

// --- DeleteNetworkInterface ---

func (s *Server) deleteNetworkInterface(_ context.Context, r *Request) (any, error) {
	id, err := required(r, "NetworkInterfaceId")
	if err != nil {
		return nil, err
	}
	if err := s.model.DeleteENI(id); err != nil {
		return nil, err
	}
	return returnTrue{Return: true}, nil
}
