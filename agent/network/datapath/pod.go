package datapath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Pod is one attachment to wire or unwire.
type Pod struct {
	ContainerID string
	IfName      string
	// Netns is the path of the pod's network namespace.
	Netns string
	// Addr is the pod's IPv4 address. DelPod accepts an invalid Addr when
	// the address is unknown; the pod's rules then stay for GC.
	Addr netip.Addr
	// RouteTable, ENIMAC and Subnet describe the ENI holding Addr; a zero
	// RouteTable means the primary ENI (main table) and needs neither.
	RouteTable int
	ENIMAC     string
	Subnet     netip.Prefix
	// MTU overrides the Datapath's MTU for this pod when non-zero.
	MTU int
}

// PodLinks describes the links AddPod made.
type PodLinks struct {
	HostVeth string
	HostMAC  net.HardwareAddr
	PodMAC   net.HardwareAddr
}

// OpenNetns checks that path is a network namespace; AddPod's callers use it
// to fail before allocating anything.
func OpenNetns(path string) (ns.NetNS, error) {
	n, err := ns.GetNS(path)
	if err != nil {
		return nil, fmt.Errorf("netns %q: %w", path, err)
	}
	return n, nil
}

func (p Pod) validate() error {
	if p.ContainerID == "" {
		return errors.New("empty container id")
	}
	if p.IfName == "" || len(p.IfName) > unix.IFNAMSIZ-1 || p.IfName == "." || p.IfName == ".." {
		return fmt.Errorf("container %s: invalid interface name %q", p.ContainerID, p.IfName)
	}
	if !p.Addr.Is4() {
		return fmt.Errorf("container %s: address %s is not IPv4", p.ContainerID, p.Addr)
	}
	return nil
}

// AddPod creates the pod's veth pair and its addresses, routes, neighbours
// and rules. An earlier, partial attempt for the same attachment is replaced.
// On failure it removes what it made.
func (d *Datapath) AddPod(ctx context.Context, p Pod) (PodLinks, error) {
	if err := ctx.Err(); err != nil {
		return PodLinks{}, err
	}
	if err := p.validate(); err != nil {
		return PodLinks{}, err
	}
	mtu := p.MTU
	if mtu == 0 {
		mtu = d.opts.MTU
	}
	if p.RouteTable != 0 {
		// Before the veth, so that a missing ENI leaves nothing to undo.
		if err := d.EnsureENI(ctx, ENI{MAC: p.ENIMAC, Table: p.RouteTable, Subnet: p.Subnet}); err != nil {
			return PodLinks{}, fmt.Errorf("container %s: %w", p.ContainerID, err)
		}
	}
	podNS, err := OpenNetns(p.Netns)
	if err != nil {
		return PodLinks{}, fmt.Errorf("container %s: %w", p.ContainerID, err)
	}
	defer podNS.Close()

	hostName := HostVethName(p.ContainerID, p.IfName)
	if err := d.delLink(hostName); err != nil {
		return PodLinks{}, err
	}
	links, err := d.addPod(p, podNS, hostName, mtu)
	if err != nil {
		// Deleting the host end takes its peer, routes and neighbours.
		if derr := d.DelPod(context.WithoutCancel(ctx), p); derr != nil {
			d.log.Error("cleaning up after failed ADD", "container", p.ContainerID, "link", hostName, "err", derr)
		}
		return PodLinks{}, fmt.Errorf("container %s: %w", p.ContainerID, err)
	}
	return links, nil
}

func (d *Datapath) addPod(p Pod, podNS ns.NetNS, hostName string, mtu int) (PodLinks, error) {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostName, MTU: mtu},
		PeerName:      p.IfName,
		PeerNamespace: netlink.NsFd(int(podNS.Fd())),
	}
	// Created with its peer already in the pod netns, so the pod's
	// interface name never exists (and never clashes) on the node.
	if err := d.nl.LinkAdd(veth); err != nil {
		return PodLinks{}, fmt.Errorf("creating veth %s (peer %s in netns %s): %w", hostName, p.IfName, p.Netns, err)
	}
	host, err := d.nl.LinkByName(hostName)
	if err != nil {
		return PodLinks{}, fmt.Errorf("finding host veth %s: %w", hostName, err)
	}
	// Proxy ARP off: the host veth must not answer for other pods.
	if err := d.sysctl(filepath.Join("net/ipv4/conf", hostName, "proxy_arp"), "0"); err != nil {
		return PodLinks{}, err
	}
	if err := d.nl.LinkSetUp(host); err != nil {
		return PodLinks{}, fmt.Errorf("setting host veth %s up: %w", hostName, err)
	}

	podMAC, err := configurePod(p, podNS, host.Attrs().HardwareAddr)
	if err != nil {
		return PodLinks{}, err
	}

	podIP := hostNet(p.Addr)
	// A permanent neighbour spares the first packet an ARP round trip; the
	// pod would answer ARP just as well, since it routes everything to us.
	if err := d.nl.NeighSet(&netlink.Neigh{LinkIndex: host.Attrs().Index, Family: unix.AF_INET,
		State: netlink.NUD_PERMANENT, IP: podIP.IP, HardwareAddr: podMAC}); err != nil {
		return PodLinks{}, fmt.Errorf("neighbour %s on host veth %s: %w", p.Addr, hostName, err)
	}
	if err := d.nl.RouteReplace(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: podIP, Scope: netlink.SCOPE_LINK}); err != nil {
		return PodLinks{}, fmt.Errorf("route %s dev %s: %w", podIP, hostName, err)
	}
	for _, r := range d.podRules(p) {
		if err := d.nl.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return PodLinks{}, fmt.Errorf("adding rule %s: %w", r, err)
		}
	}
	return PodLinks{HostVeth: hostName, HostMAC: host.Attrs().HardwareAddr, PodMAC: podMAC}, nil
}

// configurePod gives the pod end its address, gateway route, default route
// and the gateway's neighbour entry, and returns its MAC.
func configurePod(p Pod, podNS ns.NetNS, hostMAC net.HardwareAddr) (net.HardwareAddr, error) {
	h, err := netlink.NewHandleAt(netns.NsHandle(podNS.Fd()))
	if err != nil {
		return nil, fmt.Errorf("netlink handle in netns %s: %w", p.Netns, err)
	}
	defer h.Close()
	link, err := h.LinkByName(p.IfName)
	if err != nil {
		return nil, fmt.Errorf("finding %s in netns %s: %w", p.IfName, p.Netns, err)
	}
	idx := link.Attrs().Index
	gw := Gateway().AsSlice()
	steps := []struct {
		what string
		do   func() error
	}{
		{"setting up", func() error { return h.LinkSetUp(link) }},
		{"adding address " + p.Addr.String() + "/32", func() error {
			err := h.AddrAdd(link, &netlink.Addr{IPNet: hostNet(p.Addr)})
			if errors.Is(err, unix.EEXIST) {
				return nil
			}
			return err
		}},
		{"route to gateway", func() error {
			return h.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: hostNet(Gateway()), Scope: netlink.SCOPE_LINK})
		}},
		{"default route", func() error {
			return h.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: ipNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)), Gw: gw})
		}},
		{"gateway neighbour", func() error {
			return h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: gw, HardwareAddr: hostMAC})
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return nil, fmt.Errorf("%s on %s in netns %s: %w", s.what, p.IfName, p.Netns, err)
		}
	}
	return link.Attrs().HardwareAddr, nil
}

// podRules are the policy rules for a pod: to-pod via main for every pod,
// and for secondary-ENI pods from-pod via the ENI's table, limited to the VPC
// CIDRs when we SNAT (external traffic must leave through the primary ENI,
// whose address it is translated to).
func (d *Datapath) podRules(p Pod) []*netlink.Rule {
	to := netlink.NewRule()
	to.Family = unix.AF_INET
	to.Priority = ToPodRulePriority
	to.Dst = hostNet(p.Addr)
	to.Table = unix.RT_TABLE_MAIN
	rules := []*netlink.Rule{to}
	if p.RouteTable == 0 {
		return rules
	}
	dsts := []*net.IPNet{nil}
	if !d.opts.SNAT.External && len(d.opts.VPCCIDRs) > 0 {
		dsts = dsts[:0]
		for _, c := range d.opts.VPCCIDRs {
			dsts = append(dsts, ipNet(c.Masked()))
		}
	}
	for _, dst := range dsts {
		from := netlink.NewRule()
		from.Family = unix.AF_INET
		from.Priority = FromPodRulePriority
		from.Src = hostNet(p.Addr)
		from.Dst = dst
		from.Table = p.RouteTable
		rules = append(rules, from)
	}
	return rules
}

// DelPod removes the pod's veth pair (with its routes and neighbours) and its
// rules. Whatever is already gone is not an error, so DEL is idempotent.
func (d *Datapath) DelPod(ctx context.Context, p Pod) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []error
	if err := d.delLink(HostVethName(p.ContainerID, p.IfName)); err != nil {
		errs = append(errs, err)
	}
	if p.Addr.IsValid() {
		if err := d.delRules(func(a netip.Addr) bool { return a == p.Addr }); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("container %s: %w", p.ContainerID, err)
	}
	return nil
}

func (d *Datapath) delLink(name string) error {
	link, err := d.nl.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("finding link %s: %w", name, err)
	}
	if err := d.nl.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting link %s: %w", name, err)
	}
	return nil
}

// delRules removes our pod rules (by priority) whose pod address matches.
func (d *Datapath) delRules(match func(netip.Addr) bool) error {
	rules, err := d.nl.RuleList(unix.AF_INET)
	if err != nil {
		return fmt.Errorf("listing rules: %w", err)
	}
	var errs []error
	for _, r := range rules {
		addr, ok := rulePodAddr(r)
		if !ok || !match(addr) {
			continue
		}
		if err := d.nl.RuleDel(&r); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting rule %s: %w", r, err))
		}
	}
	return errors.Join(errs...)
}

// rulePodAddr returns the pod address of one of our rules.
func rulePodAddr(r netlink.Rule) (netip.Addr, bool) {
	var n *net.IPNet
	switch r.Priority {
	case ToPodRulePriority:
		n = r.Dst
	case FromPodRulePriority:
		n = r.Src
	default:
		return netip.Addr{}, false
	}
	if n == nil {
		return netip.Addr{}, false
	}
	if ones, bits := n.Mask.Size(); ones != 32 || bits != 32 {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	return a, ok
}

// CheckPod verifies that the pod is wired as AddPod left it: the host veth,
// the pod's address and routes, the host route and the rules. The error
// names each thing missing.
func (d *Datapath) CheckPod(ctx context.Context, p Pod) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := p.validate(); err != nil {
		return err
	}
	hostName := HostVethName(p.ContainerID, p.IfName)
	host, err := d.nl.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("container %s: host veth %s: %w", p.ContainerID, hostName, err)
	}
	var errs []error
	if host.Attrs().Flags&net.FlagUp == 0 {
		errs = append(errs, fmt.Errorf("host veth %s is down", hostName))
	}
	if err := checkPodSide(p); err != nil {
		errs = append(errs, err)
	}
	routes, err := d.nl.RouteListFiltered(unix.AF_INET, &netlink.Route{Dst: hostNet(p.Addr), Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing routes to %s: %w", p.Addr, err))
	} else if !hasRouteVia(routes, host.Attrs().Index) {
		errs = append(errs, fmt.Errorf("route %s/32 dev %s: missing", p.Addr, hostName))
	}
	rules, err := d.nl.RuleList(unix.AF_INET)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing rules: %w", err))
	} else {
		for _, want := range d.podRules(p) {
			if !hasRule(rules, want) {
				errs = append(errs, fmt.Errorf("rule %s: missing", want))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("container %s: %w", p.ContainerID, err)
	}
	return nil
}

func checkPodSide(p Pod) error {
	podNS, err := OpenNetns(p.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	h, err := netlink.NewHandleAt(netns.NsHandle(podNS.Fd()))
	if err != nil {
		return fmt.Errorf("netlink handle in netns %s: %w", p.Netns, err)
	}
	defer h.Close()
	link, err := h.LinkByName(p.IfName)
	if err != nil {
		return fmt.Errorf("%s in netns %s: %w", p.IfName, p.Netns, err)
	}
	addrs, err := h.AddrList(link, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("listing addresses of %s in netns %s: %w", p.IfName, p.Netns, err)
	}
	found := false
	for _, a := range addrs {
		if ones, _ := a.Mask.Size(); ones == 32 && a.IP.Equal(p.Addr.AsSlice()) {
			found = true
		}
	}
	var errs []error
	if !found {
		errs = append(errs, fmt.Errorf("address %s/32 on %s in netns %s: missing", p.Addr, p.IfName, p.Netns))
	}
	routes, err := h.RouteList(link, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("listing routes in netns %s: %w", p.Netns, err)
	}
	defaultOK := false
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw.Equal(Gateway().AsSlice()) {
			defaultOK = true
		}
	}
	if !defaultOK {
		errs = append(errs, fmt.Errorf("default route via %s on %s in netns %s: missing", Gateway(), p.IfName, p.Netns))
	}
	return errors.Join(errs...)
}

func hasRouteVia(routes []netlink.Route, ifIndex int) bool {
	for _, r := range routes {
		if r.LinkIndex == ifIndex {
			return true
		}
	}
	return false
}

func hasRule(rules []netlink.Rule, want *netlink.Rule) bool {
	for _, r := range rules {
		if r.Priority == want.Priority && r.Table == want.Table && sameNet(r.Src, want.Src) && sameNet(r.Dst, want.Dst) {
			return true
		}
	}
	return false
}

func sameNet(a, b *net.IPNet) bool {
	if a == nil || b == nil {
		return (a == nil || a.IP.IsUnspecified()) && (b == nil || b.IP.IsUnspecified())
	}
	return a.String() == b.String()
}

// GC removes host veths named like ours that keepVeth rejects, and our pod
// rules whose address keepAddr rejects: leftovers of attachments the agent
// no longer knows (a crash between steps, a lost DEL).
func (d *Datapath) GC(ctx context.Context, keepVeth func(string) bool, keepAddr func(netip.Addr) bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	links, err := d.nl.LinkList()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		if l.Type() != "veth" || !isHostVethName(name) || keepVeth(name) {
			continue
		}
		d.log.Info("removing stale pod veth", "link", name)
		if err := d.delLink(name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.delRules(func(a netip.Addr) bool { return !keepAddr(a) }); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
