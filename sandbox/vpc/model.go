package vpc

import (
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Config describes the VPC a Model starts with. Every field has a default.
type Config struct {
	// Region is the AWS region. Default is us-west-2.
	Region string
	// AccountID owns every resource. Default is 111122223333.
	AccountID string
	// Zones are the region's availability zones. Default is <region>a, b and c
	// with ids like usw2-az1.
	Zones []Zone
	// VPCCIDR is the VPC's IPv4 block. Default is 10.0.0.0/16.
	VPCCIDR string
	// Subnets to create. Default is one /20 per zone, carved in order from the
	// start of the VPC block.
	Subnets []SubnetConfig
	// ImageID is the AMI that instances run. Default is ami-0abcdef1234567890.
	ImageID string
	// Now stamps launch and attach times. Default is time.Now.
	Now func() time.Time
}

// SubnetConfig is one subnet to create: its zone by name and its CIDR.
type SubnetConfig struct {
	Zone string
	CIDR string
	Tags map[string]string
}

// Model is the in-memory VPC. It is safe for concurrent use.
type Model struct {
	mu sync.Mutex

	region    string
	accountID string
	imageID   string
	now       func() time.Time
	zones     []Zone
	vpc       VPC
	defaultSG string
	seq       uint64 // feeds every generated id

	subnets   map[string]*subnetState
	subnetIDs []string // creation order
	sgs       map[string]*SecurityGroup
	sgIDs     []string
	instances map[string]*Instance
	instIDs   []string
	enis      map[string]*ENI
	eniIDs    []string
}

// New builds a model from cfg, filling in defaults.
func New(cfg Config) (*Model, error) {
	if cfg.Region == "" {
		cfg.Region = "us-west-2"
	}
	if cfg.AccountID == "" {
		cfg.AccountID = "111122223333"
	}
	if cfg.ImageID == "" {
		cfg.ImageID = "ami-0abcdef1234567890"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Zones) == 0 {
		cfg.Zones = defaultZones(cfg.Region)
	}
	if cfg.VPCCIDR == "" {
		cfg.VPCCIDR = "10.0.0.0/16"
	}
	vpcCIDR, err := netip.ParsePrefix(cfg.VPCCIDR)
	if err != nil || !vpcCIDR.Addr().Is4() {
		return nil, fmt.Errorf("vpc cidr %q: not an IPv4 prefix", cfg.VPCCIDR)
	}
	vpcCIDR = vpcCIDR.Masked()
	if len(cfg.Subnets) == 0 {
		cfg.Subnets, err = defaultSubnets(cfg.Zones, vpcCIDR)
		if err != nil {
			return nil, err
		}
	}

	m := &Model{
		region:    cfg.Region,
		accountID: cfg.AccountID,
		imageID:   cfg.ImageID,
		now:       cfg.Now,
		zones:     append([]Zone(nil), cfg.Zones...),
		subnets:   map[string]*subnetState{},
		sgs:       map[string]*SecurityGroup{},
		instances: map[string]*Instance{},
		enis:      map[string]*ENI{},
	}
	m.vpc = VPC{ID: m.newID("vpc"), CIDR: vpcCIDR}
	sg := &SecurityGroup{ID: m.newID("sg"), Name: "default", Description: "default VPC security group", VPCID: m.vpc.ID}
	m.sgs[sg.ID], m.sgIDs, m.defaultSG = sg, append(m.sgIDs, sg.ID), sg.ID

	for _, sc := range cfg.Subnets {
		if err := m.addSubnet(sc); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Model) addSubnet(sc SubnetConfig) error {
	cidr, err := netip.ParsePrefix(sc.CIDR)
	if err != nil || !cidr.Addr().Is4() {
		return fmt.Errorf("subnet cidr %q: not an IPv4 prefix", sc.CIDR)
	}
	cidr = cidr.Masked()
	if cidr.Bits() < m.vpc.CIDR.Bits() || !m.vpc.CIDR.Contains(cidr.Addr()) {
		return fmt.Errorf("subnet cidr %s: outside vpc %s", cidr, m.vpc.CIDR)
	}
	if cidr.Bits() > 28 {
		return fmt.Errorf("subnet cidr %s: smaller than /28", cidr)
	}
	zone, ok := m.zone(sc.Zone)
	if !ok {
		return fmt.Errorf("subnet cidr %s: unknown zone %q", cidr, sc.Zone)
	}
	for _, id := range m.subnetIDs {
		if m.subnets[id].CIDR.Overlaps(cidr) {
			return fmt.Errorf("subnet cidr %s: overlaps %s", cidr, id)
		}
	}
	s := newSubnetState(Subnet{ID: m.newID("subnet"), VPCID: m.vpc.ID, Zone: zone, CIDR: cidr, Tags: copyTags(sc.Tags)})
	m.subnets[s.ID], m.subnetIDs = s, append(m.subnetIDs, s.ID)
	return nil
}

func (m *Model) zone(name string) (Zone, bool) {
	for _, z := range m.zones {
		if z.Name == name {
			return z, true
		}
	}
	return Zone{}, false
}

// defaultZones names three zones the way AWS does: us-west-2a / usw2-az1.
func defaultZones(region string) []Zone {
	short := region
	if parts := strings.Split(region, "-"); len(parts) == 3 {
		dirs := map[string]string{"north": "n", "south": "s", "east": "e", "west": "w", "central": "c",
			"northeast": "ne", "southeast": "se", "northwest": "nw", "southwest": "sw"}
		if d, ok := dirs[parts[1]]; ok {
			short = parts[0] + d + parts[2]
		}
	}
	zones := make([]Zone, 3)
	for i := range zones {
		zones[i] = Zone{Name: fmt.Sprintf("%s%c", region, 'a'+i), ID: fmt.Sprintf("%s-az%d", short, i+1)}
	}
	return zones
}

func defaultSubnets(zones []Zone, vpc netip.Prefix) ([]SubnetConfig, error) {
	const bits = 20
	if vpc.Bits() > bits-2 { // three /20s need at least a /18
		return nil, fmt.Errorf("vpc cidr %s: too small for default /%d subnets; list subnets explicitly", vpc, bits)
	}
	out := make([]SubnetConfig, len(zones))
	base := vpc.Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	for i, z := range zones {
		a := start + uint32(i)<<(32-bits)
		addr := netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
		p := netip.PrefixFrom(addr, bits)
		if !vpc.Contains(addr) {
			return nil, fmt.Errorf("vpc cidr %s: no room for a default subnet in zone %s", vpc, z.Name)
		}
		out[i] = SubnetConfig{Zone: z.Name, CIDR: p.String()}
	}
	return out, nil
}

// Region returns the model's region.
func (m *Model) Region() string { return m.region }

// AccountID returns the account that owns every resource.
func (m *Model) AccountID() string { return m.accountID }

// Zones returns the availability zones.
func (m *Model) Zones() []Zone { return append([]Zone(nil), m.zones...) }

// VPC returns the VPC.
func (m *Model) VPC() VPC { return m.vpc }

// SecurityGroups lists the security groups in creation order.
func (m *Model) SecurityGroups() []SecurityGroup {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]SecurityGroup, 0, len(m.sgIDs))
	for _, id := range m.sgIDs {
		sg := *m.sgs[id]
		sg.Tags = maps.Clone(sg.Tags)
		out = append(out, sg)
	}
	return out
}

// Subnet returns a copy of one subnet.
func (m *Model) Subnet(id string) (Subnet, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.subnets[id]
	if !ok {
		return Subnet{}, notFound(KindSubnet, id)
	}
	return s.Subnet.clone(), nil
}

// Subnets lists the subnets in creation order.
func (m *Model) Subnets() []Subnet {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Subnet, 0, len(m.subnetIDs))
	for _, id := range m.subnetIDs {
		out = append(out, m.subnets[id].Subnet.clone())
	}
	return out
}

// Instance returns a copy of one instance.
func (m *Model) Instance(id string) (Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.instances[id]
	if !ok {
		return Instance{}, notFound(KindInstance, id)
	}
	return i.clone(), nil
}

// Instances lists the instances in launch order.
func (m *Model) Instances() []Instance {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Instance, 0, len(m.instIDs))
	for _, id := range m.instIDs {
		out = append(out, m.instances[id].clone())
	}
	return out
}

// ENI returns a copy of one network interface.
func (m *Model) ENI(id string) (ENI, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enis[id]
	if !ok {
		return ENI{}, notFound(KindENI, id)
	}
	return e.clone(), nil
}

// ENIs lists the network interfaces in creation order.
func (m *Model) ENIs() []ENI {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]ENI, 0, len(m.eniIDs))
	for _, id := range m.eniIDs {
		out = append(out, m.enis[id].clone())
	}
	return out
}

// InstanceENIs returns the ENIs attached to an instance, ordered by device index.
func (m *Model) InstanceENIs(instanceID string) ([]ENI, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	inst, ok := m.instances[instanceID]
	if !ok {
		return nil, notFound(KindInstance, instanceID)
	}
	out := make([]ENI, 0, len(inst.ENIIDs))
	for _, id := range inst.ENIIDs {
		out = append(out, m.enis[id].clone())
	}
	return out, nil
}

// LaunchInstance starts a running instance in subnetID (the first subnet when
// empty) with a primary ENI at device index 0 that holds one primary address.
// The model does not know instance types; EC2 checks them against its catalog.
func (m *Model) LaunchInstance(instanceType, subnetID string, tags map[string]string) (Instance, error) {
	return m.Launch(LaunchSpec{InstanceType: instanceType, SubnetID: subnetID, Tags: tags})
}

// AssignPrivateIP adds one secondary address from the ENI's subnet. It is the
// model-level primitive under EC2's AssignPrivateIpAddresses.
func (m *Model) AssignPrivateIP(eniID string) (netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enis[eniID]
	if !ok {
		return netip.Addr{}, notFound(KindENI, eniID)
	}
	ip, err := m.subnets[e.SubnetID].allocIP()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("eni %s: %w", eniID, err)
	}
	e.PrivateIPs = append(e.PrivateIPs, PrivateIP{Address: ip})
	return ip, nil
}

// AssignIPv4Prefix delegates one free, aligned /28 of the ENI's subnet to it,
// as EC2's prefix delegation does.
func (m *Model) AssignIPv4Prefix(eniID string) (netip.Prefix, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enis[eniID]
	if !ok {
		return netip.Prefix{}, notFound(KindENI, eniID)
	}
	p, err := m.subnets[e.SubnetID].allocPrefix()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("eni %s: %w", eniID, err)
	}
	e.IPv4Prefixes = append(e.IPv4Prefixes, p)
	return p, nil
}

// PrivateDNSName is EC2's private DNS name for an address in this region
// (ip-10-0-1-5.us-west-2.compute.internal; us-east-1 uses ec2.internal).
func (m *Model) PrivateDNSName(ip netip.Addr) string {
	domain := m.region + ".compute.internal"
	if m.region == "us-east-1" {
		domain = "ec2.internal"
	}
	return "ip-" + strings.ReplaceAll(ip.String(), ".", "-") + "." + domain
}

func copyTags(t map[string]string) map[string]string {
	out := make(map[string]string, len(t))
	for k, v := range t {
		out[k] = v
	}
	return out
}
