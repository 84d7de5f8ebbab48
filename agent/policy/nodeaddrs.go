package policy

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// HostAddresses returns an Options.NodeAddresses that lists the addresses of every interface in the netns of h
// (the calling thread's when h is nil): the node's ENI addresses and any other address the node holds, loopback
// left out since pods never reach it. Kubelet probes come from one of them.
func HostAddresses(h *netlink.Handle) func(ctx context.Context) ([]netip.Addr, error) {
	return func(ctx context.Context) ([]netip.Addr, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		list := netlink.AddrList
		if h != nil {
			list = h.AddrList
		}
		addrs, err := list(nil, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing interface addresses: %w", err)
		}
		var out []netip.Addr
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || ip.Unmap().IsLoopback() {
				continue
			}
			out = append(out, ip.Unmap())
		}
		return out, nil
	}
}
