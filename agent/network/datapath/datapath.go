// Package datapath wires pods into the node the way the VPC CNI's routed ENI
// mode does, for IPv4, through netlink and nftables only (no shelling out).
//
// Each pod gets a veth pair: the host end, named by HostVethName, carries no
// address; the pod end (eth0) holds the pod's /32 and a default route via the
// link-local gateway 169.254.1.1, which a permanent neighbour entry maps to
// the host end's MAC. The host routes the /32 to the veth in the main table.
// Pods whose address lives on a secondary ENI also get a source rule into
// that ENI's route table, which holds the subnet route and a default route
// via the subnet gateway out of the ENI; a destination rule at a higher
// priority sends return traffic to every pod through the main table.
//
// Everything happens in the node netns (Options.NodeNetns; the agent's own by
// default), so tests can play the node in a namespace of their own. Every
// call converges: repeating it changes nothing, and deleting removes only
// what this package made.
package datapath

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Rule priorities, as in the VPC CNI: the destination rule for each pod comes
// first so that traffic to a pod always uses the main table (where its /32
// points at its veth), even when it comes from a pod whose source rule would
// send it out of a secondary ENI.
const (
	ToPodRulePriority   = 512
	FromPodRulePriority = 1536
)

// DefaultMTU is the veth MTU when Options.MTU is zero: the VPC's jumbo-frame
// MTU.
const DefaultMTU = 9001

// HostVethPrefix starts every host veth name; GC treats links named
// HostVethPrefix plus 11 lowercase hex digits as its own.
const HostVethPrefix = "an"

// Gateway is the pod's next hop. It is link-local and never configured on
// the host: a static neighbour entry in the pod resolves it to the host
// veth's MAC.
func Gateway() netip.Addr { return netip.AddrFrom4([4]byte{169, 254, 1, 1}) }

// Options configures a Datapath. Zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// NodeNetns is the path of the network namespace that plays the node.
	// Default is the namespace of the calling thread at New.
	NodeNetns string
	// ProcRoot is where procfs is mounted; sysctls are written below
	// ProcRoot/sys. Default is /proc. Writes happen from inside the node
	// netns, since /proc/sys/net shows the writer's namespace.
	ProcRoot string
	// MTU of both ends of each pod's veth pair. Default is DefaultMTU.
	MTU int
	// PrimaryMAC is the hardware address of the primary ENI. It is needed
	// for SNAT (the rule matches traffic leaving through it) and gets a
	// loose rp_filter. Empty skips both.
	PrimaryMAC string
	// PrimaryIP is the node's primary private address, the SNAT source.
	PrimaryIP netip.Addr
	// VPCCIDRs are the VPC's IPv4 CIDRs. Traffic to them is never SNATed;
	// with SNAT enabled, pods on secondary ENIs use their ENI only for
	// these destinations and leave through the primary ENI otherwise.
	VPCCIDRs []netip.Prefix
	// SNAT configures source NAT for traffic leaving the VPC.
	SNAT SNATOptions
}

// SNATOptions configures the nftables table "autonode".
type SNATOptions struct {
	// External turns our SNAT off, for VPCs whose NAT gateway translates
	// pod addresses (AWS_VPC_K8S_CNI_EXTERNALSNAT in the VPC CNI). Pods on
	// secondary ENIs then send all their traffic through their own ENI.
	External bool
	// ExcludedCIDRs are destinations outside the VPC CIDRs that must see
	// pod addresses too (peered VPCs, on-premises ranges).
	ExcludedCIDRs []netip.Prefix
}

// Datapath configures pod networking in the node netns. It is safe for
// concurrent use; callers serialise work on one attachment.
type Datapath struct {
	log    *slog.Logger
	opts   Options
	nodeNS ns.NetNS
	nl     *netlink.Handle
}

// New opens the node netns and a netlink handle in it. Close releases them.
func New(opts Options) (*Datapath, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.MTU == 0 {
		opts.MTU = DefaultMTU
	}
	if opts.MTU < 68 || opts.MTU > 65535 {
		return nil, fmt.Errorf("datapath MTU %d is outside 68..65535", opts.MTU)
	}
	for _, p := range append(append([]netip.Prefix{}, opts.VPCCIDRs...), opts.SNAT.ExcludedCIDRs...) {
		if !p.IsValid() || !p.Addr().Is4() {
			return nil, fmt.Errorf("datapath CIDR %s is not an IPv4 prefix", p)
		}
	}
	var (
		node ns.NetNS
		err  error
	)
	if opts.NodeNetns == "" {
		node, err = ns.GetCurrentNS()
	} else {
		node, err = ns.GetNS(opts.NodeNetns)
	}
	if err != nil {
		return nil, fmt.Errorf("opening node netns %q: %w", opts.NodeNetns, err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(node.Fd()))
	if err != nil {
		node.Close()
		return nil, fmt.Errorf("netlink handle in node netns %s: %w", node.Path(), err)
	}
	return &Datapath{log: opts.Logger, opts: opts, nodeNS: node, nl: h}, nil
}

// Close releases the netlink handle and the node netns.
func (d *Datapath) Close() error {
	d.nl.Close()
	return d.nodeNS.Close()
}

// MTU is the veth MTU used when a pod asks for none.
func (d *Datapath) MTU() int { return d.opts.MTU }

// HostVethName is the host end's name for one attachment: HostVethPrefix and
// the first 11 hex digits of sha1(containerID+ifName), 13 bytes, within
// IFNAMSIZ. It is stable, so DEL and CHECK find the link from the key alone.
func HostVethName(containerID, ifName string) string {
	sum := sha1.Sum([]byte(containerID + ifName))
	return HostVethPrefix + hex.EncodeToString(sum[:])[:11]
}

// isHostVethName reports whether name has HostVethName's shape.
func isHostVethName(name string) bool {
	rest, ok := strings.CutPrefix(name, HostVethPrefix)
	if !ok || len(rest) != 11 {
		return false
	}
	for _, c := range rest {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// SetupNode applies the node-wide settings: IPv4 forwarding, a loose
// rp_filter on the primary ENI, and the SNAT table. Call it before the first
// pod and again whenever the options' inputs change; it converges.
func (d *Datapath) SetupNode(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.sysctl("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if d.opts.PrimaryMAC != "" {
		link, err := d.linkByMAC(d.opts.PrimaryMAC)
		if err != nil {
			return fmt.Errorf("primary ENI: %w", err)
		}
		if err := d.looseRPFilter(link.Attrs().Name); err != nil {
			return err
		}
	}
	return d.ApplySNAT(ctx)
}

// sysctl writes value to ProcRoot/sys/key from inside the node netns.
func (d *Datapath) sysctl(key, value string) error {
	path := filepath.Join(d.opts.ProcRoot, "sys", key)
	err := d.nodeNS.Do(func(ns.NetNS) error {
		return os.WriteFile(path, []byte(value), 0o644)
	})
	if err != nil {
		return fmt.Errorf("setting sysctl %s to %s: %w", path, value, err)
	}
	return nil
}

// looseRPFilter sets rp_filter=2 on an ENI: with policy routing, replies to
// a secondary ENI's pods may arrive on a link other than the one the main
// table would pick, which the strict mode drops. It also turns proxy ARP off,
// so the ENI never answers for pod addresses on the VPC's behalf.
func (d *Datapath) looseRPFilter(link string) error {
	if err := d.sysctl(filepath.Join("net/ipv4/conf", link, "rp_filter"), "2"); err != nil {
		return err
	}
	return d.sysctl(filepath.Join("net/ipv4/conf", link, "proxy_arp"), "0")
}

// linkByMAC finds the node link with the given hardware address: ENIs are
// known by MAC from EC2, and their names depend on udev and boot order.
func (d *Datapath) linkByMAC(mac string) (netlink.Link, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return nil, fmt.Errorf("parsing MAC %q: %w", mac, err)
	}
	links, err := d.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		if !isHostVethName(l.Attrs().Name) && strings.EqualFold(l.Attrs().HardwareAddr.String(), hw.String()) {
			return l, nil
		}
	}
	return nil, fmt.Errorf("no link with MAC %s in node netns %s", mac, d.nodeNS.Path())
}

// ENI describes a secondary ENI's route table.
type ENI struct {
	// MAC finds the ENI's link.
	MAC string
	// Table is the ENI's route table; it must not be 0 (main).
	Table int
	// Subnet is the ENI's subnet; its first host is the VPC router.
	Subnet netip.Prefix
}

// EnsureENI brings a secondary ENI up and fills its route table: the subnet
// route and a default route via the subnet gateway, both out of the ENI.
// The table is shared by the ENI's pods, so pod DEL never removes it.
func (d *Datapath) EnsureENI(ctx context.Context, eni ENI) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if eni.Table <= 0 || eni.Table == unix.RT_TABLE_MAIN || eni.Table == unix.RT_TABLE_LOCAL {
		return fmt.Errorf("ENI %s: route table %d is reserved", eni.MAC, eni.Table)
	}
	if !eni.Subnet.IsValid() || !eni.Subnet.Addr().Is4() {
		return fmt.Errorf("ENI %s: subnet %s is not an IPv4 prefix", eni.MAC, eni.Subnet)
	}
	link, err := d.linkByMAC(eni.MAC)
	if err != nil {
		return fmt.Errorf("ENI %s: %w", eni.MAC, err)
	}
	name := link.Attrs().Name
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := d.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("setting ENI link %s up: %w", name, err)
		}
	}
	if err := d.looseRPFilter(name); err != nil {
		return err
	}
	subnet := eni.Subnet.Masked()
	gw := subnet.Addr().Next()
	routes := []*netlink.Route{
		{LinkIndex: link.Attrs().Index, Dst: ipNet(subnet), Scope: netlink.SCOPE_LINK, Table: eni.Table},
		{LinkIndex: link.Attrs().Index, Dst: ipNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)), Gw: gw.AsSlice(), Table: eni.Table},
	}
	for _, r := range routes {
		if err := d.nl.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s via %s dev %s table %d: %w", r.Dst, r.Gw, name, eni.Table, err)
		}
	}
	return nil
}

// ipNet converts a prefix for netlink.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func hostNet(a netip.Addr) *net.IPNet { return ipNet(netip.PrefixFrom(a, a.BitLen())) }

func isNotFound(err error) bool {
	return errors.As(err, new(netlink.LinkNotFoundError)) || errors.Is(err, unix.ENOENT) ||
		errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV)
}
