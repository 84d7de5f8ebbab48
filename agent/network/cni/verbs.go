package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"

	"github.com/autonode/autonode/agent/network/cni/cniwire"
	"github.com/autonode/autonode/agent/network/datapath"
	"github.com/autonode/autonode/agent/network/ipam"
)

// Spec error codes we return (CNI spec 1.1, "Error").
const (
	codeUnknownContainer = types.ErrUnknownContainer            // 3
	codeInvalidEnv       = types.ErrInvalidEnvironmentVariables // 4
	codeDecoding         = types.ErrDecodingFailure             // 6
	codeInvalidConfig    = types.ErrInvalidNetworkConfig        // 7
	codeTryAgain         = types.ErrTryAgainLater               // 11
	codeNotAvailable     = types.ErrPluginNotAvailable          // 50
	codeInternal         = types.ErrInternal                    // 999
)

// NetConf is the autonode-cni network configuration.
type NetConf struct {
	types.NetConf
	cniwire.ClientConf
	// MTU of the pod's veth pair; 0 takes the datapath's (9001 by default).
	MTU int `json:"mtu,omitempty"`
}

func cniErr(code uint, msg string, err error) *types.Error {
	e := &types.Error{Code: code, Msg: msg}
	if err != nil {
		e.Details = err.Error()
	}
	return e
}

func asTypesError(err error) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return cniErr(codeInternal, err.Error(), nil)
}

// parseConf decodes and validates a netconf, prevResult included.
func parseConf(raw []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, cniErr(codeDecoding, "decoding network configuration", err)
	}
	if c.CNIVersion == "" {
		return nil, cniErr(codeInvalidConfig, "network configuration has no cniVersion", nil)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return nil, cniErr(codeInvalidConfig, fmt.Sprintf("mtu %d is outside 68..65535", c.MTU), nil)
	}
	if err := version.ParsePrevResult(&c.NetConf); err != nil {
		return nil, cniErr(codeDecoding, "decoding prevResult", err)
	}
	return &c, nil
}

func attachmentKey(req cniwire.Request) (ipam.Key, error) {
	if req.ContainerID == "" {
		return ipam.Key{}, cniErr(codeInvalidEnv, "CNI_CONTAINERID is empty", nil)
	}
	if req.IfName == "" || len(req.IfName) > unix.IFNAMSIZ-1 {
		return ipam.Key{}, cniErr(codeInvalidEnv, fmt.Sprintf("CNI_IFNAME %q is not a valid interface name", req.IfName), nil)
	}
	return ipam.Key{ContainerID: req.ContainerID, IfName: req.IfName}, nil
}

func (s *Server) add(ctx context.Context, req cniwire.Request) (json.RawMessage, error) {
	conf, err := parseConf(req.Config)
	if err != nil {
		return nil, err
	}
	key, err := attachmentKey(req)
	if err != nil {
		return nil, err
	}
	// Checked before allocating, so a vanished sandbox leaks no address.
	podNS, err := datapath.OpenNetns(req.Netns)
	if err != nil {
		return nil, cniErr(codeInvalidEnv, fmt.Sprintf("container %s: CNI_NETNS %q is not a network namespace", req.ContainerID, req.Netns), err)
	}
	podNS.Close()

	alloc, err := s.opts.Allocator.Allocate(ctx, key, podMeta(req.Args, req.Netns))
	if err != nil {
		// Pool exhaustion and EC2 trouble pass: let the runtime retry.
		return nil, cniErr(codeTryAgain, fmt.Sprintf("container %s: no address available", req.ContainerID), err)
	}
	links, err := s.opts.Datapath.AddPod(ctx, podFromAlloc(alloc, req.Netns, conf.MTU))
	if err != nil {
		if rerr := s.opts.Allocator.Release(ctx, key); rerr != nil {
			s.log.Error("releasing address after failed ADD", "container", key.ContainerID, "addr", alloc.Addr, "err", rerr)
		}
		return nil, cniErr(codeInternal, fmt.Sprintf("container %s: wiring pod", req.ContainerID), err)
	}
	if s.opts.Policy != nil {
		meta := podMeta(req.Args, req.Netns)
		pod := PodInfo{HostIf: links.HostVeth, Namespace: meta.Namespace, Name: meta.Name, UID: meta.UID, IP: alloc.Addr}
		if err := s.opts.Policy.Attach(ctx, pod); err != nil {
			// No pod starts without its policy: undo the wiring.
			s.undoAdd(ctx, key, alloc, req.Netns)
			return nil, cniErr(codeInternal, fmt.Sprintf("container %s: attaching network policy", req.ContainerID), err)
		}
	}
	out, err := buildResult(conf, req, alloc, links)
	if err != nil {
		return nil, err
	}
	s.log.Info("pod attached", "container", key.ContainerID, "ifname", key.IfName, "pod", alloc.Pod.Namespace+"/"+alloc.Pod.Name,
		"addr", alloc.Addr, "eni", alloc.ENI, "link", links.HostVeth)
	return out, nil
}

// undoAdd unwires and releases an attachment whose policy could not be
// attached.
func (s *Server) undoAdd(ctx context.Context, key ipam.Key, alloc ipam.Allocation, netns string) {
	hostIf := datapath.HostVethName(key.ContainerID, key.IfName)
	if err := s.opts.Datapath.DelPod(ctx, podFromAlloc(alloc, netns, 0)); err != nil {
		s.log.Error("unwiring pod after failed policy attach", "container", key.ContainerID, "err", err)
	}
	if err := s.opts.Policy.Detach(ctx, hostIf); err != nil {
		s.log.Error("removing policy after failed attach", "container", key.ContainerID, "link", hostIf, "err", err)
	}
	if err := s.opts.Allocator.Release(ctx, key); err != nil {
		s.log.Error("releasing address after failed policy attach", "container", key.ContainerID, "addr", alloc.Addr, "err", err)
	}
}

// buildResult appends our interfaces, address and route to prevResult (if
// any), then converts to the netconf's version.
func buildResult(conf *NetConf, req cniwire.Request, alloc ipam.Allocation, links datapath.PodLinks) (json.RawMessage, error) {
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if conf.PrevResult != nil {
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return nil, cniErr(codeDecoding, "converting prevResult", err)
		}
		r = prev
	}
	gw := net.IP(datapath.Gateway().AsSlice())
	r.Interfaces = append(r.Interfaces,
		&current.Interface{Name: links.HostVeth, Mac: links.HostMAC.String()},
		&current.Interface{Name: req.IfName, Mac: links.PodMAC.String(), Sandbox: req.Netns},
	)
	r.IPs = append(r.IPs, &current.IPConfig{
		Interface: current.Int(len(r.Interfaces) - 1),
		Address:   net.IPNet{IP: alloc.Addr.AsSlice(), Mask: net.CIDRMask(32, 32)},
		Gateway:   gw,
	})
	r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw})
	if len(conf.DNS.Nameservers) > 0 || conf.DNS.Domain != "" || len(conf.DNS.Search) > 0 || len(conf.DNS.Options) > 0 {
		r.DNS = conf.DNS
	}
	versioned, err := r.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return nil, cniErr(types.ErrIncompatibleCNIVersion, fmt.Sprintf("result as cniVersion %s", conf.CNIVersion), err)
	}
	out, err := json.Marshal(versioned)
	if err != nil {
		return nil, cniErr(codeInternal, "encoding result", err)
	}
	return out, nil
}

// prevAddr is the pod's address in a prevResult: the IPv4 address of the
// sandbox interface named ifName, for DEL of an attachment the allocator
// forgot (its rules still carry the address).
func prevAddr(prev types.Result, ifName string) (ipam.Allocation, bool) {
	if prev == nil {
		return ipam.Allocation{}, false
	}
	r, err := current.NewResultFromResult(prev)
	if err != nil {
		return ipam.Allocation{}, false
	}
	for _, ip := range r.IPs {
		if ip.Interface == nil || *ip.Interface < 0 || *ip.Interface >= len(r.Interfaces) {
			continue
		}
		intf := r.Interfaces[*ip.Interface]
		if intf.Name != ifName || intf.Sandbox == "" || ip.Address.IP.To4() == nil {
			continue
		}
		var a ipam.Allocation
		if addr, ok := netipAddr(ip.Address.IP); ok {
			a.Addr = addr
			return a, true
		}
	}
	return ipam.Allocation{}, false
}

func (s *Server) del(ctx context.Context, req cniwire.Request) error {
	conf, err := parseConf(req.Config)
	if err != nil {
		return err
	}
	key, err := attachmentKey(req)
	if err != nil {
		return err
	}
	alloc, known := s.opts.Allocator.Get(key)
	if !known {
		alloc, _ = prevAddr(conf.PrevResult, req.IfName)
	}
	alloc.Key = key
	if err := s.opts.Datapath.DelPod(ctx, podFromAlloc(alloc, req.Netns, 0)); err != nil {
		return cniErr(codeInternal, fmt.Sprintf("container %s: unwiring pod", req.ContainerID), err)
	}
	// After the veth is gone, so no packet passes between the two steps.
	if s.opts.Policy != nil {
		if err := s.opts.Policy.Detach(ctx, datapath.HostVethName(key.ContainerID, key.IfName)); err != nil {
			return cniErr(codeInternal, fmt.Sprintf("container %s: removing network policy", req.ContainerID), err)
		}
	}
	if !known {
		return nil // DEL of an unknown container succeeds
	}
	if err := s.opts.Allocator.Release(ctx, key); err != nil {
		return cniErr(codeTryAgain, fmt.Sprintf("container %s: releasing %s", req.ContainerID, alloc.Addr), err)
	}
	s.log.Info("pod detached", "container", key.ContainerID, "ifname", key.IfName, "addr", alloc.Addr)
	return nil
}

func (s *Server) check(ctx context.Context, req cniwire.Request) error {
	conf, err := parseConf(req.Config)
	if err != nil {
		return err
	}
	key, err := attachmentKey(req)
	if err != nil {
		return err
	}
	alloc, ok := s.opts.Allocator.Get(key)
	if !ok {
		return cniErr(codeUnknownContainer, fmt.Sprintf("container %s interface %s has no address", key.ContainerID, key.IfName), nil)
	}
	if conf.PrevResult != nil {
		if prev, ok := prevAddr(conf.PrevResult, req.IfName); !ok || prev.Addr != alloc.Addr {
			return cniErr(codeInvalidConfig, fmt.Sprintf("container %s: prevResult does not hold its address %s on %s", key.ContainerID, alloc.Addr, key.IfName), nil)
		}
	}
	if err := s.opts.Datapath.CheckPod(ctx, podFromAlloc(alloc, req.Netns, conf.MTU)); err != nil {
		return cniErr(codeInternal, err.Error(), nil)
	}
	return nil
}

func (s *Server) status(req cniwire.Request) error {
	if _, err := parseConf(req.Config); err != nil {
		return err
	}
	if err := s.opts.Allocator.CanAllocate(); err != nil {
		return cniErr(codeNotAvailable, "cannot hand out pod addresses", err)
	}
	return nil
}

func (s *Server) gc(ctx context.Context, req cniwire.Request) error {
	conf, err := parseConf(req.Config)
	if err != nil {
		return err
	}
	valid := make(map[ipam.Key]bool, len(conf.ValidAttachments))
	for _, a := range conf.ValidAttachments {
		valid[ipam.Key{ContainerID: a.ContainerID, IfName: a.IfName}] = true
	}
	var errs []error
	for _, a := range s.opts.Allocator.List() {
		if valid[a.Key] {
			continue
		}
		s.log.Info("releasing stale attachment", "container", a.Key.ContainerID, "ifname", a.Key.IfName, "addr", a.Addr)
		if err := s.opts.Datapath.DelPod(ctx, podFromAlloc(a, a.Pod.Netns, 0)); err != nil {
			errs = append(errs, err)
			continue
		}
		if s.opts.Policy != nil {
			if err := s.opts.Policy.Detach(ctx, datapath.HostVethName(a.Key.ContainerID, a.Key.IfName)); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := s.opts.Allocator.Release(ctx, a.Key); err != nil {
			errs = append(errs, fmt.Errorf("container %s: releasing %s: %w", a.Key.ContainerID, a.Addr, err))
		}
	}
	remaining := s.opts.Allocator.List()
	veths := make(map[string]bool, len(remaining))
	for _, a := range remaining {
		veths[datapath.HostVethName(a.Key.ContainerID, a.Key.IfName)] = true
	}
	addrs := addrSet(remaining)
	if err := s.opts.Datapath.GC(ctx, func(n string) bool { return veths[n] }, func(a netip.Addr) bool { return addrs[a] }); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return cniErr(codeInternal, "garbage-collecting attachments", err)
	}
	return nil
}
