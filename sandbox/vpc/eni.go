package vpc

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Limits are the per-instance-type caps EC2 enforces on network interfaces.
// A zero field means no cap.
type Limits struct {
	// MaxENIs caps the ENIs attached to one network card of an instance.
	MaxENIs int
	// NetworkCards is how many network cards the type has; 0 means 1.
	NetworkCards int
	// IPv4PerENI caps an ENI's IPv4 slots (see ENI.Slots).
	IPv4PerENI int
}

// LimitsFunc returns the limits of an instance type. The model calls it with
// the type of the instance an ENI is attached to, or with "" for an ENI that
// is not attached. It runs under the model's lock, so it must not call the
// model. A nil LimitsFunc imposes no limits.
type LimitsFunc func(instanceType string) Limits

func (f LimitsFunc) of(instanceType string) Limits {
	if f == nil {
		return Limits{}
	}
	return f(instanceType)
}

// ENISpec describes a network interface to create.
type ENISpec struct {
	SubnetID    string
	Description string
	// SecurityGroupIDs default to the VPC's default group when empty.
	SecurityGroupIDs []string
	Tags             map[string]string
	// SecondaryIPs is how many secondary addresses to assign besides the primary.
	SecondaryIPs int
	// Prefixes is how many /28 prefixes to delegate.
	Prefixes int
}

// AddressRequest says which IPv4 addresses and prefixes to add to an ENI:
// particular ones, a number the model picks, or both.
type AddressRequest struct {
	Addresses   []netip.Addr
	Count       int
	Prefixes    []netip.Prefix
	PrefixCount int
}

// slots is how many ENI slots the request takes.
func (r AddressRequest) slots() int {
	return len(r.Addresses) + r.Count + len(r.Prefixes) + r.PrefixCount
}

// Assigned is what AssignAddresses added.
type Assigned struct {
	Addresses []netip.Addr
	Prefixes  []netip.Prefix
}

// ENIChange is a change to an ENI's attributes; nil fields stay as they are.
type ENIChange struct {
	Description      *string
	SecurityGroupIDs []string
	// AttachmentID must name the ENI's attachment when DeleteOnTermination is set.
	AttachmentID        string
	DeleteOnTermination *bool
}

// CreateENI creates an available (unattached) ENI in spec.SubnetID with a
// primary address and the secondary addresses and prefixes spec asks for.
// Either every address is assigned or, on error, none is.
func (m *Model) CreateENI(spec ENISpec, limits LimitsFunc) (ENI, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.subnets[spec.SubnetID]
	if !ok {
		return ENI{}, fmt.Errorf("creating network interface: %w", notFound(KindSubnet, spec.SubnetID))
	}
	sgs, err := m.securityGroups(spec.SecurityGroupIDs)
	if err != nil {
		return ENI{}, fmt.Errorf("creating network interface in subnet %s: %w", s.ID, err)
	}
	req := AddressRequest{Count: spec.SecondaryIPs, PrefixCount: spec.Prefixes}
	if req.Count < 0 || req.PrefixCount < 0 {
		return ENI{}, fmt.Errorf("creating network interface in subnet %s: negative count: %w", s.ID, ErrInvalid)
	}
	if lim := limits.of("").IPv4PerENI; lim > 0 && 1+req.slots() > lim {
		return ENI{}, fmt.Errorf("creating network interface in subnet %s: %d ipv4 slots, limit %d: %w", s.ID, 1+req.slots(), lim, ErrAddressLimit)
	}
	primary, err := s.allocIP()
	if err != nil {
		return ENI{}, fmt.Errorf("creating network interface: %w", err)
	}
	e := &ENI{
		ID:               m.newID("eni"),
		MAC:              m.newMAC(),
		SubnetID:         s.ID,
		VPCID:            m.vpc.ID,
		Zone:             s.Zone,
		Description:      spec.Description,
		Status:           ENIAvailable,
		PrivateIPs:       []PrivateIP{{Address: primary, Primary: true}},
		SecurityGroupIDs: sgs,
		Tags:             copyTags(spec.Tags),
	}
	if _, err := assign(s, e, req); err != nil {
		s.releaseIP(primary)
		return ENI{}, fmt.Errorf("creating network interface in subnet %s: %w", s.ID, err)
	}
	m.enis[e.ID], m.eniIDs = e, append(m.eniIDs, e.ID)
	return e.clone(), nil
}

// AttachENI attaches an available ENI to an instance at a device index of a
// network card, with DeleteOnTermination false as EC2 sets it. It fails with
// ErrInUse when the ENI is attached or the device index is taken,
// ErrAttachmentLimit when the card has MaxENIs already, ErrAddressLimit when
// the ENI holds more slots than the type allows, and ErrInvalid for another
// zone or a network card the type lacks.
func (m *Model) AttachENI(eniID, instanceID string, deviceIndex, networkCardIndex int, limits LimitsFunc) (Attachment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enis[eniID]
	if !ok {
		return Attachment{}, notFound(KindENI, eniID)
	}
	inst, ok := m.instances[instanceID]
	if !ok {
		return Attachment{}, fmt.Errorf("eni %s: %w", eniID, notFound(KindInstance, instanceID))
	}
	lim := limits.of(inst.Type)
	cards := max(lim.NetworkCards, 1)
	switch {
	case e.Attachment != nil:
		return Attachment{}, fmt.Errorf("eni %s: attached to %s: %w", eniID, e.Attachment.InstanceID, ErrInUse)
	case deviceIndex < 0:
		return Attachment{}, fmt.Errorf("eni %s: device index %d: %w", eniID, deviceIndex, ErrInvalid)
	case networkCardIndex < 0 || networkCardIndex >= cards:
		return Attachment{}, fmt.Errorf("eni %s: network card %d of %s (%s has %d): %w", eniID, networkCardIndex, instanceID, inst.Type, cards, ErrInvalid)
	case e.Zone != inst.Zone:
		return Attachment{}, fmt.Errorf("eni %s in %s: instance %s is in %s: %w", eniID, e.Zone.Name, instanceID, inst.Zone.Name, ErrInvalid)
	}
	var onCard int
	for _, id := range inst.ENIIDs {
		if a := m.enis[id].Attachment; a.NetworkCardIndex == networkCardIndex {
			onCard++
		}
	}
	// The limit goes before the device index, as EC2 reports a full instance
	// as full whatever index was asked for.
	if lim.MaxENIs > 0 && onCard >= lim.MaxENIs {
		return Attachment{}, fmt.Errorf("eni %s: instance %s (%s) has %d of %d interfaces on network card %d: %w", eniID, instanceID, inst.Type, onCard, lim.MaxENIs, networkCardIndex, ErrAttachmentLimit)
	}
	for _, id := range inst.ENIIDs {
		if a := m.enis[id].Attachment; a.NetworkCardIndex == networkCardIndex && a.DeviceIndex == deviceIndex {
			return Attachment{}, fmt.Errorf("eni %s: instance %s device index %d on network card %d: %w", eniID, instanceID, deviceIndex, networkCardIndex, ErrInUse)
		}
	}
	if lim.IPv4PerENI > 0 && e.Slots() > lim.IPv4PerENI {
		return Attachment{}, fmt.Errorf("eni %s: %d ipv4 slots, %s allows %d: %w", eniID, e.Slots(), inst.Type, lim.IPv4PerENI, ErrAddressLimit)
	}
	e.Attachment = &Attachment{
		ID: m.newID("eni-attach"), InstanceID: inst.ID, DeviceIndex: deviceIndex, NetworkCardIndex: networkCardIndex,
		AttachTime: m.now().UTC(),
	}
	e.Status = ENIInUse
	inst.ENIIDs = append(inst.ENIIDs, e.ID)
	slices.SortStableFunc(inst.ENIIDs, func(a, b string) int {
		x, y := m.enis[a].Attachment, m.enis[b].Attachment
		return cmp.Or(cmp.Compare(x.DeviceIndex, y.DeviceIndex), cmp.Compare(x.NetworkCardIndex, y.NetworkCardIndex))
	})
	return *e.Attachment, nil
}

// DetachENI detaches the ENI that attachmentID names; it becomes available at
// once. The primary ENI (device index 0 on card 0) cannot be detached:
// ErrNotPermitted. Force is accepted for EC2's sake; detaching is always
// immediate in the sandbox, so it changes nothing.
func (m *Model) DetachENI(attachmentID string, force bool) error {
	_ = force
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.attached(attachmentID)
	if e == nil {
		return notFound(KindAttachment, attachmentID)
	}
	a := e.Attachment
	if a.DeviceIndex == 0 && a.NetworkCardIndex == 0 {
		return fmt.Errorf("eni %s: primary interface of %s: %w", e.ID, a.InstanceID, ErrNotPermitted)
	}
	inst := m.instances[a.InstanceID]
	inst.ENIIDs = slices.DeleteFunc(inst.ENIIDs, func(id string) bool { return id == e.ID })
	e.Attachment, e.Status = nil, ENIAvailable
	return nil
}

// ModifyENI changes an ENI's description, security groups or the
// DeleteOnTermination flag of its attachment. Nothing changes unless the
// whole change is valid.
func (m *Model) ModifyENI(eniID string, c ENIChange) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enis[eniID]
	if !ok {
		return notFound(KindENI, eniID)
	}
	var sgs []string
	if c.SecurityGroupIDs != nil {
		var err error
		if sgs, err = m.securityGroups(c.SecurityGroupIDs); err != nil {
			return fmt.Errorf("eni %s: %w", eniID, err)
		}
	}
	if c.DeleteOnTermination != nil || c.AttachmentID != "" {
		if c.AttachmentID == "" || c.DeleteOnTermination == nil {
			return fmt.Errorf("eni %s: attachment id and delete-on-termination go together: %w", eniID, ErrInvalid)
		}
		if e.Attachment == nil || e.Attachment.ID != c.AttachmentID {
			return fmt.Errorf("eni %s: %w", eniID, notFound(KindAttachment, c.AttachmentID))
		}
		e.Attachment.DeleteOnTermination = *c.DeleteOnTermination
	}
	if c.Description != nil {
		e.Description = *c.Description
	}
	if sgs != nil {
		e.SecurityGroupIDs = sgs
	}
	return nil
}

// AssignAddresses adds secondary addresses and /28 prefixes to an ENI, all or
// none. It fails with ErrAddressLimit when the ENI would exceed its instance
// type's IPv4PerENI, ErrNoFreeAddresses when the subnet runs out,
// ErrNoFreePrefix when no aligned /28 is free, ErrAddressInUse when a named
// address or prefix is taken and ErrInvalid when one does not fit the subnet.
func (m *Model) AssignAddresses(eniID string, req AddressRequest, limits LimitsFunc) (Assigned, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enis[eniID]
	if !ok {
		return Assigned{}, notFound(KindENI, eniID)
	}
	if req.Count < 0 || req.PrefixCount < 0 {
		return Assigned{}, fmt.Errorf("eni %s: negative count: %w", eniID, ErrInvalid)
	}
	instanceType := ""
	if e.Attachment != nil {
		instanceType = m.instances[e.Attachment.InstanceID].Type
	}
	if lim := limits.of(instanceType).IPv4PerENI; lim > 0 && e.Slots()+req.slots() > lim {
		return Assigned{}, fmt.Errorf("eni %s: %d ipv4 slots held, %d asked, limit %d: %w", eniID, e.Slots(), req.slots(), lim, ErrAddressLimit)
	}
	got, err := assign(m.subnets[e.SubnetID], e, req)
	if err != nil {
		return Assigned{}, fmt.Errorf("eni %s: %w", eniID, err)
	}
	return got, nil
}

// assign takes what req asks for from s and adds it to e. Named addresses and
// prefixes go first, so that the counted ones cannot take them; on any error
// everything taken is released again.
func assign(s *subnetState, e *ENI, req AddressRequest) (Assigned, error) {
	var got Assigned
	undo := func(err error) (Assigned, error) {
		for _, a := range got.Addresses {
			s.releaseIP(a)
		}
		for _, p := range got.Prefixes {
			s.releasePrefix(p)
		}
		return Assigned{}, err
	}
	for _, a := range req.Addresses {
		if err := s.takeIP(a); err != nil {
			return undo(err)
		}
		got.Addresses = append(got.Addresses, a)
	}
	for _, p := range req.Prefixes {
		if err := s.takePrefix(p); err != nil {
			return undo(err)
		}
		got.Prefixes = append(got.Prefixes, p)
	}
	for range req.PrefixCount {
		p, err := s.allocPrefix()
		if err != nil {
			return undo(err)
		}
		got.Prefixes = append(got.Prefixes, p)
	}
	for range req.Count {
		a, err := s.allocIP()
		if err != nil {
			return undo(err)
		}
		got.Addresses = append(got.Addresses, a)
	}
	for _, a := range got.Addresses {
		e.PrivateIPs = append(e.PrivateIPs, PrivateIP{Address: a})
	}
	e.IPv4Prefixes = append(e.IPv4Prefixes, got.Prefixes...)
	return got, nil
}

// UnassignAddresses returns secondary addresses and prefixes of an ENI to its
// subnet's free map, all or none. Each must be on the ENI, and the primary
// address cannot be unassigned: ErrInvalid otherwise.
func (m *Model) UnassignAddresses(eniID string, addrs []netip.Addr, prefixes []netip.Prefix) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enis[eniID]
	if !ok {
		return notFound(KindENI, eniID)
	}
	dropIP := map[netip.Addr]bool{}
	for _, a := range addrs {
		i := slices.IndexFunc(e.PrivateIPs, func(ip PrivateIP) bool { return ip.Address == a })
		switch {
		case i < 0:
			return fmt.Errorf("eni %s: address %s is not assigned to it: %w", eniID, a, ErrInvalid)
		case e.PrivateIPs[i].Primary:
			return fmt.Errorf("eni %s: address %s is the primary: %w", eniID, a, ErrInvalid)
		}
		dropIP[a] = true
	}
	dropPrefix := map[netip.Prefix]bool{}
	for _, p := range prefixes {
		if !slices.Contains(e.IPv4Prefixes, p) {
			return fmt.Errorf("eni %s: prefix %s is not assigned to it: %w", eniID, p, ErrInvalid)
		}
		dropPrefix[p] = true
	}
	s := m.subnets[e.SubnetID]
	// DeleteFunc keeps the order, so the primary stays first for IMDS.
	e.PrivateIPs = slices.DeleteFunc(e.PrivateIPs, func(ip PrivateIP) bool { return dropIP[ip.Address] })
	e.IPv4Prefixes = slices.DeleteFunc(e.IPv4Prefixes, func(p netip.Prefix) bool { return dropPrefix[p] })
	for a := range dropIP {
		s.releaseIP(a)
	}
	for p := range dropPrefix {
		s.releasePrefix(p)
	}
	return nil
}

// DeleteENI deletes a detached ENI and returns all its addresses and
// prefixes to the subnet. An attached ENI is refused with ErrInUse.
func (m *Model) DeleteENI(eniID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enis[eniID]
	if !ok {
		return notFound(KindENI, eniID)
	}
	if e.Attachment != nil {
		return fmt.Errorf("eni %s: attached to %s: %w", eniID, e.Attachment.InstanceID, ErrInUse)
	}
	s := m.subnets[e.SubnetID]
	for _, ip := range e.PrivateIPs {
		s.releaseIP(ip.Address)
	}
	for _, p := range e.IPv4Prefixes {
		s.releasePrefix(p)
	}
	delete(m.enis, eniID)
	m.eniIDs = slices.DeleteFunc(m.eniIDs, func(id string) bool { return id == eniID })
	return nil
}

// Reserve marks addresses of a subnet as taken without giving them to any
// ENI; they are never released. It is a test aid, for shaping a subnet's free
// map, and is all or nothing.
func (m *Model) Reserve(subnetID string, addrs ...netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.subnets[subnetID]
	if !ok {
		return notFound(KindSubnet, subnetID)
	}
	for i, a := range addrs {
		if err := s.takeIP(a); err != nil {
			for _, b := range addrs[:i] {
				s.releaseIP(b)
			}
			return fmt.Errorf("reserving in subnet %s: %w", subnetID, err)
		}
	}
	return nil
}

// Fragment is a test aid: it reserves the last address of every aligned /28
// of the subnet that is still wholly free, so that no prefix can be delegated
// (InsufficientCidrBlocks) while the other addresses stay free for single
// assignment. It returns the addresses it reserved.
func (m *Model) Fragment(subnetID string) ([]netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.subnets[subnetID]
	if !ok {
		return nil, notFound(KindSubnet, subnetID)
	}
	var out []netip.Addr
	for i := 0; i < s.size; i += prefixSize {
		if s.blockFree(i) {
			a := s.addr(i + prefixSize - 1)
			if err := s.takeIP(a); err != nil {
				return out, fmt.Errorf("fragmenting subnet %s: %w", subnetID, err)
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// attached returns the ENI whose attachment has id, or nil.
func (m *Model) attached(id string) *ENI {
	for _, eid := range m.eniIDs {
		if e := m.enis[eid]; e.Attachment != nil && e.Attachment.ID == id {
			return e
		}
	}
	return nil
}

// securityGroups checks ids, defaulting to the VPC's default group.
func (m *Model) securityGroups(ids []string) ([]string, error) {
	if len(ids) == 0 {
		return []string{m.defaultSG}, nil
	}
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if _, ok := m.sgs[id]; !ok {
			return nil, notFound(KindSecurityGroup, id)
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out, nil
}
