package ec2

import (
	"context"
	"slices"
	"strconv"

	"github.com/autonode/autonode/sandbox/catalog"
	"github.com/autonode/autonode/sandbox/vpc"
)

type xmlState struct {
	Code int32  `xml:"code"`
	Name string `xml:"name"`
}

type xmlPlacement struct {
	AvailabilityZone   string `xml:"availabilityZone"`
	AvailabilityZoneID string `xml:"availabilityZoneId"`
	Tenancy            string `xml:"tenancy"`
}

type xmlInstance struct {
	InstanceID          string          `xml:"instanceId"`
	ImageID             string          `xml:"imageId"`
	InstanceState       xmlState        `xml:"instanceState"`
	PrivateDNSName      string          `xml:"privateDnsName"`
	InstanceType        string          `xml:"instanceType"`
	InstanceLifecycle   string          `xml:"instanceLifecycle,omitempty"`
	LaunchTime          string          `xml:"launchTime"`
	Placement           xmlPlacement    `xml:"placement"`
	SubnetID            string          `xml:"subnetId"`
	VpcID               string          `xml:"vpcId"`
	PrivateIPAddress    string          `xml:"privateIpAddress,omitempty"`
	Architecture        string          `xml:"architecture,omitempty"`
	RootDeviceType      string          `xml:"rootDeviceType"`
	VirtualizationType  string          `xml:"virtualizationType"`
	GroupSet            Items[xmlGroup] `xml:"groupSet"`
	NetworkInterfaceSet Items[xmlENI]   `xml:"networkInterfaceSet"`
	TagSet              Items[xmlTag]   `xml:"tagSet"`
}

type xmlReservation struct {
	ReservationID string             `xml:"reservationId"`
	OwnerID       string             `xml:"ownerId"`
	InstancesSet  Items[xmlInstance] `xml:"instancesSet"`
}

type describeInstancesResponse struct {
	ReservationSet Items[xmlReservation] `xml:"reservationSet"`
	NextToken      string                `xml:"nextToken,omitempty"`
}

// instanceView is an instance with its ENIs, read once per request.
type instanceView struct {
	vpc.Instance
	enis []vpc.ENI
}

func (s *Server) describeInstances(_ context.Context, r *Request) (any, error) {
	if err := s.advanceInstances(); err != nil {
		return nil, err
	}
	var views []instanceView
	for _, inst := range s.model.Instances() {
		enis, err := s.model.InstanceENIs(inst.ID)
		if err != nil {
			return nil, err
		}
		views = append(views, instanceView{Instance: inst, enis: enis})
	}
	if ids := r.List("InstanceId"); len(ids) > 0 {
		if err := requireKnown(ids, func(id string) bool {
			return slices.ContainsFunc(views, func(v instanceView) bool { return v.ID == id })
		}, CodeInstanceNotFound, "instance ID"); err != nil {
			return nil, err
		}
		views = slices.DeleteFunc(views, func(v instanceView) bool { return !slices.Contains(ids, v.ID) })
	}
	views, err := applyFilters(views, r.Filters(), fieldFuncs[instanceView]{
		"instance-id":         func(v instanceView) []string { return one(v.ID) },
		"instance-type":       func(v instanceView) []string { return one(v.Type) },
		"availability-zone":   func(v instanceView) []string { return one(v.Zone.Name) },
		"instance-state-name": func(v instanceView) []string { return one(string(v.State)) },
		"instance-state-code": func(v instanceView) []string { return one(strconv.Itoa(int(v.State.Code()))) },
		"subnet-id":           func(v instanceView) []string { return one(v.SubnetID) },
		"vpc-id":              func(v instanceView) []string { return one(v.VPCID) },
		"image-id":            func(v instanceView) []string { return one(v.ImageID) },
		"private-ip-address":  func(v instanceView) []string { return one(v.PrivateIP.String()) },
		"private-dns-name":    func(v instanceView) []string { return one(v.PrivateDNSName) },
		"instance-lifecycle":  func(v instanceView) []string { return one(lifecycle(v.Spot)) },
		"network-interface.network-interface-id": func(v instanceView) []string {
			return v.ENIIDs
		},
	}, func(v instanceView) map[string]string { return v.Tags })
	if err != nil {
		return nil, err
	}
	page, next, err := paginate(r, views, pageLimits{min: 5, max: 1000})
	if err != nil {
		return nil, err
	}
	account := s.model.AccountID()
	out := make([]xmlReservation, len(page))
	for i, v := range page {
		// Each launch in the sandbox is its own reservation.
		out[i] = xmlReservation{
			ReservationID: "r-" + v.ID[len("i-"):],
			OwnerID:       account,
			InstancesSet:  ItemsOf([]xmlInstance{s.instanceXML(v)}),
		}
	}
	return describeInstancesResponse{ReservationSet: ItemsOf(out), NextToken: next}, nil
}

func (s *Server) instanceXML(v instanceView) xmlInstance {
	x := xmlInstance{
		InstanceID: v.ID, ImageID: v.ImageID, InstanceState: xmlState{Code: v.State.Code(), Name: string(v.State)},
		PrivateDNSName: v.PrivateDNSName, InstanceType: v.Type, LaunchTime: timestamp(v.LaunchTime),
		Placement: xmlPlacement{AvailabilityZone: v.Zone.Name, AvailabilityZoneID: v.Zone.ID, Tenancy: "default"},
		SubnetID:  v.SubnetID, VpcID: v.VPCID, RootDeviceType: "ebs", VirtualizationType: "hvm", TagSet: tagSet(v.Tags),
	}
	if v.PrivateIP.IsValid() { // terminated instances have given theirs back
		x.PrivateIPAddress = v.PrivateIP.String()
	}
	if v.Spot {
		x.InstanceLifecycle = "spot"
	}
	if t, ok := s.instanceType(v.Type); ok {
		x.Architecture = t.EC2Architecture()
	}
	for _, e := range v.enis {
		ex := s.eniXML(e, false)
		x.NetworkInterfaceSet.Items = append(x.NetworkInterfaceSet.Items, ex)
		if e.Attachment != nil && e.Attachment.DeviceIndex == 0 {
			x.GroupSet = ex.GroupSet // an instance's groups are its primary ENI's
		}
	}
	return x
}

func (s *Server) instanceType(name string) (catalog.InstanceType, bool) {
	i := slices.IndexFunc(s.catalog, func(t catalog.InstanceType) bool { return t.Name == name })
	if i < 0 {
		return catalog.InstanceType{}, false
	}
	return s.catalog[i], true
}
