package datapath_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/agent/network/datapath"
	"github.com/autonode/autonode/agent/network/datapath/datapathtest"
	"github.com/autonode/autonode/sandbox/privileged"
)

func TestHostVethName(t *testing.T) {
	for _, tc := range []struct{ id, ifname string }{
		{"abc", "eth0"},
		{strings.Repeat("f", 64), "eth0"},
		{strings.Repeat("f", 64), "net1"},
		{"", ""},
	} {
		name := datapath.HostVethName(tc.id, tc.ifname)
		if len(name) != 13 || !strings.HasPrefix(name, datapath.HostVethPrefix) {
			t.Errorf("HostVethName(%q, %q) = %q: want %q plus 11 hex digits", tc.id, tc.ifname, name, datapath.HostVethPrefix)
		}
		if again := datapath.HostVethName(tc.id, tc.ifname); again != name {
			t.Errorf("HostVethName(%q, %q) not stable: %q then %q", tc.id, tc.ifname, name, again)
		}
	}
	if datapath.HostVethName("x", "eth0") == datapath.HostVethName("x", "net1") {
		t.Error("HostVethName ignores the interface name")
	}
}

func newDatapath(t *testing.T, node *datapathtest.Node, opts datapath.Options) *datapath.Datapath {
	t.Helper()
	opts.NodeNetns = node.Path
	if opts.PrimaryMAC == "" {
		opts.PrimaryMAC, opts.PrimaryIP = node.Primary.MAC, node.Primary.Addr
	}
	if opts.VPCCIDRs == nil {
		opts.VPCCIDRs = []netip.Prefix{node.VPCCIDR}
	}
	dp, err := datapath.New(opts)
	if err != nil {
		t.Fatalf("datapath.New: %v", err)
	}
	t.Cleanup(func() { dp.Close() })
	return dp
}

// TestPrivilegedSysctls: with a fake /proc root, SetupNode and EnsureENI
// write forwarding, loose rp_filter and proxy ARP off where they belong.
func TestPrivilegedSysctls(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	node := datapathtest.NewNode(t)
	proc := t.TempDir()
	files := map[string]string{
		"sys/net/ipv4/ip_forward":          "1",
		"sys/net/ipv4/conf/eni0/rp_filter": "2",
		"sys/net/ipv4/conf/eni0/proxy_arp": "0",
		"sys/net/ipv4/conf/eni1/rp_filter": "2",
		"sys/net/ipv4/conf/eni1/proxy_arp": "0",
	}
	for f := range files {
		if err := os.MkdirAll(filepath.Join(proc, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, f), []byte("9"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dp := newDatapath(t, node, datapath.Options{ProcRoot: proc, SNAT: datapath.SNATOptions{External: true}})
	ctx := context.Background()
	if err := dp.SetupNode(ctx); err != nil {
		t.Fatalf("SetupNode: %v", err)
	}
	if err := dp.EnsureENI(ctx, datapath.ENI{MAC: node.Secondary.MAC, Table: node.Secondary.Table, Subnet: node.Secondary.Subnet}); err != nil {
		t.Fatalf("EnsureENI: %v", err)
	}
	for f, want := range files {
		got, err := os.ReadFile(filepath.Join(proc, f))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q (%v), want %q", f, got, err, want)
		}
	}
}

// TestPrivilegedSecondaryENI: a pod on a secondary ENI gets the ENI's table
// (subnet and default routes out of the ENI, found by MAC), a from-pod rule
// per VPC CIDR and a to-pod rule; its VPC traffic leaves through that ENI.
// DEL removes the pod's rules but keeps the shared table; CHECK notices a
// deleted rule.
func TestPrivilegedSecondaryENI(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	node := datapathtest.NewNode(t)
	dp := newDatapath(t, node, datapath.Options{})
	ctx := context.Background()
	if err := dp.SetupNode(ctx); err != nil {
		t.Fatalf("SetupNode: %v", err)
	}
	pod := node.NewPod(t)
	addr := node.SecondaryPodPrefix.Addr().Next()
	p := datapath.Pod{ContainerID: "sec-" + pod.Name, IfName: "eth0", Netns: pod.Path, Addr: addr,
		RouteTable: node.Secondary.Table, ENIMAC: node.Secondary.MAC, Subnet: node.Secondary.Subnet}
	for range 2 { // the second ADD replaces the first
		if _, err := dp.AddPod(ctx, p); err != nil {
			t.Fatalf("AddPod: %v", err)
		}
	}
	if err := dp.CheckPod(ctx, p); err != nil {
		t.Fatalf("CheckPod: %v", err)
	}
	nl := node.Netlink(t)
	eni1, err := nl.LinkByName(node.Secondary.Link)
	if err != nil {
		t.Fatal(err)
	}
	table, err := nl.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: node.Secondary.Table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var subnetRoute, defaultRoute bool
	for _, r := range table {
		if r.LinkIndex != eni1.Attrs().Index {
			continue
		}
		subnetRoute = subnetRoute || (r.Dst != nil && r.Dst.String() == node.Secondary.Subnet.String())
		defaultRoute = defaultRoute || (r.Gw.Equal(node.Secondary.Gateway.AsSlice()) && (r.Dst == nil || r.Dst.IP.IsUnspecified()))
	}
	if !subnetRoute || !defaultRoute {
		t.Errorf("table %d: %v, want the subnet route and a default via %s dev %s", node.Secondary.Table, table, node.Secondary.Gateway, node.Secondary.Link)
	}

	// VPC-bound traffic from the pod leaves through eni1.
	before := eni1.Attrs().Statistics.TxPackets
	srv := datapathtest.ServeEcho(t, node.VPC, node.Secondary.Gateway, 0)
	if got, err := datapathtest.SourceSeen(pod, "tcp4", srv); err != nil || got != addr {
		t.Fatalf("pod to %s: saw %s (%v), want %s", srv, got, err, addr)
	}
	eni1, _ = nl.LinkByName(node.Secondary.Link)
	if eni1.Attrs().Statistics.TxPackets == before {
		t.Errorf("no packets left through %s", node.Secondary.Link)
	}

	// Delete the from-pod rule: CHECK must say so.
	from := netlink.NewRule()
	from.Priority, from.Table = datapath.FromPodRulePriority, node.Secondary.Table
	from.Src = &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}
	from.Dst = &net.IPNet{IP: node.VPCCIDR.Addr().AsSlice(), Mask: net.CIDRMask(node.VPCCIDR.Bits(), 32)}
	if err := nl.RuleDel(from); err != nil {
		t.Fatalf("deleting the from-pod rule: %v", err)
	}
	if err := dp.CheckPod(ctx, p); err == nil || !strings.Contains(err.Error(), "rule") {
		t.Errorf("CheckPod after deleting a rule: %v, want an error naming it", err)
	}

	for range 2 { // DEL is idempotent
		if err := dp.DelPod(ctx, p); err != nil {
			t.Fatalf("DelPod: %v", err)
		}
	}
	if v, r, ru := node.Leftovers(t, node.SecondaryPodPrefix, datapath.ToPodRulePriority, datapath.FromPodRulePriority); v+r+ru != 0 {
		t.Errorf("after DelPod: %d veths, %d routes, %d rules", v, r, ru)
	}
	if table, _ := nl.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: node.Secondary.Table}, netlink.RT_FILTER_TABLE); len(table) < 2 {
		t.Errorf("DelPod removed the shared ENI table: %v", table)
	}
}

// TestPrivilegedAddPodErrors: a missing netns or ENI fails cleanly.
func TestPrivilegedAddPodErrors(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	node := datapathtest.NewNode(t)
	dp := newDatapath(t, node, datapath.Options{SNAT: datapath.SNATOptions{External: true}})
	pod := node.NewPod(t)
	addr := node.PodPrefix.Addr().Next()
	for _, tc := range []struct {
		name string
		pod  datapath.Pod
		want string
	}{
		{"missing netns", datapath.Pod{ContainerID: "c1", IfName: "eth0", Netns: "/run/netns/an-none-" + pod.Name, Addr: addr}, "netns"},
		{"unknown ENI MAC", datapath.Pod{ContainerID: "c2", IfName: "eth0", Netns: pod.Path, Addr: addr,
			RouteTable: 5, ENIMAC: "02:00:00:00:00:99", Subnet: node.Secondary.Subnet}, "02:00:00:00:00:99"},
		{"IPv6 address", datapath.Pod{ContainerID: "c3", IfName: "eth0", Netns: pod.Path, Addr: netip.MustParseAddr("2001:db8::1")}, "not IPv4"},
		{"long ifname", datapath.Pod{ContainerID: "c4", IfName: strings.Repeat("e", 16), Netns: pod.Path, Addr: addr}, "interface name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dp.AddPod(context.Background(), tc.pod)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AddPod: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	if v, r, ru := node.Leftovers(t, node.PodPrefix, datapath.ToPodRulePriority, datapath.FromPodRulePriority); v+r+ru != 0 {
		t.Errorf("failed AddPods left %d veths, %d routes, %d rules", v, r, ru)
	}
}

// TestPrivilegedSNATTable: applying twice converges to one table with the
// expected rules; external SNAT and RemoveSNAT delete only our table.
func TestPrivilegedSNATTable(t *testing.T) {
	privileged.Require(t, privileged.NetAdmin)
	node := datapathtest.NewNode(t)
	excluded := []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("192.0.2.0/24")}
	dp := newDatapath(t, node, datapath.Options{SNAT: datapath.SNATOptions{ExcludedCIDRs: excluded}})
	ctx := context.Background()
	conn, err := nftables.New(nftables.WithNetNSFd(int(node.Handle)))
	if err != nil {
		t.Fatal(err)
	}
	other := conn.AddTable(&nftables.Table{Name: "someone-else", Family: nftables.TableFamilyIPv4})
	if err := conn.Flush(); err != nil {
		t.Fatalf("creating another table: %v", err)
	}
	for range 3 {
		if err := dp.ApplySNAT(ctx); err != nil {
			t.Fatalf("ApplySNAT: %v", err)
		}
	}
	tables := func() map[string]bool {
		ts, err := conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, t := range ts {
			m[t.Name] = true
		}
		return m
	}
	if ts := tables(); !ts[datapath.SNATTable] || !ts[other.Name] {
		t.Fatalf("tables %v: want %s and %s", ts, datapath.SNATTable, other.Name)
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chains {
		if ch.Table.Name != datapath.SNATTable {
			continue
		}
		rules, err := conn.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		if want := 1 + len(excluded) + 1; len(rules) != want { // VPC CIDR, excluded, SNAT
			t.Errorf("chain %s has %d rules after 3 applies, want %d", ch.Name, len(rules), want)
		}
	}
	if err := dp.RemoveSNAT(ctx); err != nil {
		t.Fatalf("RemoveSNAT: %v", err)
	}
	if err := dp.RemoveSNAT(ctx); err != nil {
		t.Fatalf("second RemoveSNAT: %v", err)
	}
	if ts := tables(); ts[datapath.SNATTable] || !ts[other.Name] {
		t.Fatalf("tables after RemoveSNAT %v: want only %s", ts, other.Name)
	}
}
