package vpc

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// LaunchSpec is what Launch starts.
type LaunchSpec struct {
	InstanceType string
	// SubnetID is where the primary ENI goes; the first subnet when empty.
	SubnetID string
	// ImageID defaults to the model's ImageID.
	ImageID string
	// SecurityGroupIDs of the primary ENI; the VPC's default group when empty.
	SecurityGroupIDs []string
	Tags             map[string]string
	Spot             bool
	// Pending starts the instance in the pending state, for EC2 actions
	// whose instances boot over time; otherwise it is running at once.
	Pending bool
}

// Launch starts an instance with a primary ENI at device index 0 that holds
// one primary address. The model does not know instance types; EC2 checks
// them against its catalog.
func (m *Model) Launch(spec LaunchSpec) (Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	subnetID := spec.SubnetID
	if subnetID == "" && len(m.subnetIDs) > 0 {
		subnetID = m.subnetIDs[0]
	}
	s, ok := m.subnets[subnetID]
	if !ok {
		return Instance{}, fmt.Errorf("launching %s: %w", spec.InstanceType, notFound(KindSubnet, subnetID))
	}
	sgs, err := m.securityGroups(spec.SecurityGroupIDs)
	if err != nil {
		return Instance{}, fmt.Errorf("launching %s: %w", spec.InstanceType, err)
	}
	ip, err := s.allocIP()
	if err != nil {
		return Instance{}, fmt.Errorf("launching %s: %w", spec.InstanceType, err)
	}
	image := spec.ImageID
	if image == "" {
		image = m.imageID
	}
	state := StateRunning
	if spec.Pending {
		state = StatePending
	}
	now := m.now().UTC()
	inst := &Instance{
		ID:             m.newID("i"),
		Type:           spec.InstanceType,
		Zone:           s.Zone,
		SubnetID:       s.ID,
		VPCID:          m.vpc.ID,
		ImageID:        image,
		State:          state,
		StateChanged:   now,
		LaunchTime:     now,
		PrivateIP:      ip,
		PrivateDNSName: m.PrivateDNSName(ip),
		Tags:           copyTags(spec.Tags),
		Spot:           spec.Spot,
	}
	eni := &ENI{
		ID:       m.newID("eni"),
		MAC:      m.newMAC(),
		SubnetID: s.ID,
		VPCID:    m.vpc.ID,
		Zone:     s.Zone,
		Status:   ENIInUse,
		Attachment: &Attachment{
			ID: m.newID("eni-attach"), InstanceID: inst.ID, DeviceIndex: 0, AttachTime: now, DeleteOnTermination: true,
		},
		PrivateIPs:       []PrivateIP{{Address: ip, Primary: true}},
		SecurityGroupIDs: sgs,
		Tags:             map[string]string{},
	}
	inst.ENIIDs = []string{eni.ID}
	m.instances[inst.ID], m.instIDs = inst, append(m.instIDs, inst.ID)
	m.enis[eni.ID], m.eniIDs = eni, append(m.eniIDs, eni.ID)
	return inst.clone(), nil
}

// SetInstanceState moves an instance along EC2's lifecycle: pending to
// running, running or pending to shutting-down, shutting-down to terminated.
// Reaching terminated releases the instance's address and deletes its ENIs
// marked DeleteOnTermination (others are detached), as EC2 does. Setting the
// state it already has is a no-op; any other move is ErrInvalid.
func (m *Model) SetInstanceState(id string, to InstanceState) (Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	inst, ok := m.instances[id]
	if !ok {
		return Instance{}, notFound(KindInstance, id)
	}
	if inst.State == to {
		return inst.clone(), nil
	}
	allowed := map[InstanceState][]InstanceState{
		StatePending:      {StateRunning, StateShuttingDown},
		StateRunning:      {StateShuttingDown},
		StateShuttingDown: {StateTerminated},
	}
	if !slices.Contains(allowed[inst.State], to) {
		return Instance{}, fmt.Errorf("instance %s: %s to %s: %w", id, inst.State, to, ErrInvalid)
	}
	inst.State, inst.StateChanged = to, m.now().UTC()
	if to == StateTerminated {
		m.releaseInstance(inst)
	}
	return inst.clone(), nil
}

// releaseInstance gives back what a terminated instance held.
func (m *Model) releaseInstance(inst *Instance) {
	for _, eid := range inst.ENIIDs {
		e := m.enis[eid]
		if e == nil {
			continue
		}
		if e.Attachment == nil || !e.Attachment.DeleteOnTermination {
			e.Attachment, e.Status = nil, ENIAvailable
			continue
		}
		s := m.subnets[e.SubnetID]
		for _, ip := range e.PrivateIPs {
			s.releaseIP(ip.Address)
		}
		for _, p := range e.IPv4Prefixes {
			s.releasePrefix(p)
		}
		delete(m.enis, eid)
		m.eniIDs = slices.DeleteFunc(m.eniIDs, func(id string) bool { return id == eid })
	}
	inst.ENIIDs = nil
	inst.PrivateIP, inst.PrivateDNSName = netip.Addr{}, ""
}

// AddSecurityGroup creates a security group in the VPC.
func (m *Model) AddSecurityGroup(name, description string, tags map[string]string) SecurityGroup {
	m.mu.Lock()
	defer m.mu.Unlock()
	sg := &SecurityGroup{ID: m.newID("sg"), Name: name, Description: description, VPCID: m.vpc.ID, Tags: maps.Clone(tags)}
	m.sgs[sg.ID], m.sgIDs = sg, append(m.sgIDs, sg.ID)
	return *sg
}
