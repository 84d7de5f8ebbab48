package diagnostics

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NetworkDump is the network configuration of one netns, read over netlink,
// as it goes into network/netlink.json.
type NetworkDump struct {
	Links     []LinkInfo  `json:"links"`
	Addresses []AddrInfo  `json:"addresses"`
	Routes    []RouteInfo `json:"routes"`
	Rules     []RuleInfo  `json:"rules"`
}

// LinkInfo is one network interface.
type LinkInfo struct {
	Index        int    `json:"index"`
	Name         string `json:"name"`
	Type         string `json:"type"`
	MTU          int    `json:"mtu"`
	HardwareAddr string `json:"hardwareAddr,omitempty"`
	Flags        string `json:"flags"`
	OperState    string `json:"operState"`
	MasterIndex  int    `json:"masterIndex,omitempty"`
	ParentIndex  int    `json:"parentIndex,omitempty"`
	NetNSID      int    `json:"netnsID,omitempty"`
}

// AddrInfo is one address on a link.
type AddrInfo struct {
	Link    string `json:"link"`
	Address string `json:"address"`
	Scope   string `json:"scope"`
	Flags   int    `json:"flags,omitempty"`
}

// RouteInfo is one route, from any table.
type RouteInfo struct {
	Table     int       `json:"table"`
	Type      int       `json:"type"`
	Dst       string    `json:"dst"`
	Gw        string    `json:"gw,omitempty"`
	Src       string    `json:"src,omitempty"`
	Dev       string    `json:"dev,omitempty"`
	Protocol  string    `json:"protocol"`
	Scope     string    `json:"scope"`
	Priority  int       `json:"priority,omitempty"`
	MultiPath []NextHop `json:"multipath,omitempty"`
}

// NextHop is one path of a multipath route.
type NextHop struct {
	Gw  string `json:"gw,omitempty"`
	Dev string `json:"dev,omitempty"`
}

// RuleInfo is one policy-routing rule.
type RuleInfo struct {
	Family   int    `json:"family"`
	Priority int    `json:"priority"`
	Table    int    `json:"table"`
	Src      string `json:"src,omitempty"`
	Dst      string `json:"dst,omitempty"`
	IifName  string `json:"iif,omitempty"`
	OifName  string `json:"oif,omitempty"`
	Mark     uint32 `json:"fwmark,omitempty"`
	Invert   bool   `json:"invert,omitempty"`
}

// dumpNetwork reads links, addresses, routes of every table and rules
// through h, a handle on the netns to describe.
func dumpNetwork(h *netlink.Handle) (*NetworkDump, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	names := map[int]string{}
	d := &NetworkDump{}
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		li := LinkInfo{
			Index: a.Index, Name: a.Name, Type: l.Type(), MTU: a.MTU, Flags: a.Flags.String(),
			OperState: a.OperState.String(), MasterIndex: a.MasterIndex, ParentIndex: a.ParentIndex, NetNSID: a.NetNsID,
		}
		if len(a.HardwareAddr) > 0 {
			li.HardwareAddr = a.HardwareAddr.String()
		}
		d.Links = append(d.Links, li)
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		d.Addresses = append(d.Addresses, AddrInfo{
			Link: names[a.LinkIndex], Address: a.IPNet.String(), Scope: netlink.Scope(a.Scope).String(), Flags: a.Flags,
		})
	}
	// Table 0 with RT_FILTER_TABLE asks for every table, not only main.
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		ri := RouteInfo{
			Table: r.Table, Type: r.Type, Dst: "default", Dev: names[r.LinkIndex], Protocol: r.Protocol.String(),
			Scope: r.Scope.String(), Priority: r.Priority, Gw: ipString(r.Gw), Src: ipString(r.Src),
		}
		if r.Dst != nil {
			ri.Dst = r.Dst.String()
		}
		for _, p := range r.MultiPath {
			ri.MultiPath = append(ri.MultiPath, NextHop{Gw: ipString(p.Gw), Dev: names[p.LinkIndex]})
		}
		d.Routes = append(d.Routes, ri)
	}
	rules, err := h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing rules: %w", err)
	}
	for _, r := range rules {
		ri := RuleInfo{Family: r.Family, Priority: r.Priority, Table: r.Table, IifName: r.IifName, OifName: r.OifName, Invert: r.Invert}
		if r.Mark != 0 {
			ri.Mark = r.Mark
		}
		if r.Src != nil {
			ri.Src = r.Src.String()
		}
		if r.Dst != nil {
			ri.Dst = r.Dst.String()
		}
		d.Rules = append(d.Rules, ri)
	}
	return d, nil
}

func ipString(ip net.IP) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}

// JSON renders d for network/netlink.json.
func (d *NetworkDump) JSON() ([]byte, error) { return json.MarshalIndent(d, "", "  ") }

// RoutesText renders the routes one a line, close to `ip route show table all`.
func (d *NetworkDump) RoutesText() []byte {
	var b strings.Builder
	for _, r := range d.Routes {
		b.WriteString(r.Dst)
		if r.Gw != "" {
			b.WriteString(" via " + r.Gw)
		}
		if r.Dev != "" {
			b.WriteString(" dev " + r.Dev)
		}
		for _, p := range r.MultiPath {
			fmt.Fprintf(&b, " nexthop via %s dev %s", p.Gw, p.Dev)
		}
		fmt.Fprintf(&b, " table %d proto %s scope %s", r.Table, r.Protocol, r.Scope)
		if r.Src != "" {
			b.WriteString(" src " + r.Src)
		}
		if r.Priority != 0 {
			fmt.Fprintf(&b, " metric %d", r.Priority)
		}
		b.WriteByte('\n')
	}
	return []byte(b.String())
}
