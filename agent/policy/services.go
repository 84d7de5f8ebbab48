package policy

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/autonode/autonode/agent/policy/compute"
)

// serviceInfo is what the egress expansion needs of a Service: its cluster IPs and its ports by name.
type serviceInfo struct {
	ClusterIPs []netip.Addr
	Ports      map[string]servicePort
}

type servicePort struct {
	Protocol compute.Protocol
	Port     uint16
}

// sliceInfo is what the egress expansion needs of an EndpointSlice: its Service, endpoint addresses and
// ports. A slice's ports are the pods' (target) ports, named targetPorts already resolved per pod by the
// EndpointSlice controller; each is named after its Service port.
type sliceInfo struct {
	Service   podKey
	Addresses []netip.Addr
	Ports     []slicePort
}

type slicePort struct {
	Name     string
	Protocol compute.Protocol
	Port     uint16
}

func newServiceInfo(svc *corev1.Service) *serviceInfo {
	si := &serviceInfo{Ports: map[string]servicePort{}}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil { // "None" (headless) does not parse
			si.ClusterIPs = append(si.ClusterIPs, a)
		}
	}
	for _, p := range svc.Spec.Ports {
		proto, err := compute.ParseProtocol(string(p.Protocol))
		if err != nil || p.Port < 1 || p.Port > 65535 {
			continue
		}
		si.Ports[p.Name] = servicePort{Protocol: proto, Port: uint16(p.Port)}
	}
	return si
}

func newSliceInfo(es *discoveryv1.EndpointSlice) *sliceInfo {
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" || (es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6) {
		return nil
	}
	si := &sliceInfo{Service: podKey{es.Namespace, name}}
	for _, ep := range es.Endpoints {
		for _, s := range ep.Addresses {
			if a, err := netip.ParseAddr(s); err == nil {
				si.Addresses = append(si.Addresses, a)
			}
		}
	}
	for _, p := range es.Ports {
		if p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
			continue
		}
		proto := "TCP"
		if p.Protocol != nil {
			proto = string(*p.Protocol)
		}
		pr, err := compute.ParseProtocol(proto)
		if err != nil {
			continue
		}
		sp := slicePort{Protocol: pr, Port: uint16(*p.Port)}
		if p.Name != nil {
			sp.Name = *p.Name
		}
		si.Ports = append(si.Ports, sp)
	}
	return si
}

// setService stores (or, with svc nil, deletes) a Service and returns the local pods whose egress allows one
// of its endpoints.
func (v *view) setService(key podKey, svc *corev1.Service) set {
	if svc == nil {
		delete(v.services, key)
	} else {
		v.services[key] = newServiceInfo(svc)
	}
	var addrs []netip.Addr
	for _, sl := range v.slices {
		if sl.Service == key {
			addrs = append(addrs, sl.Addresses...)
		}
	}
	return v.allowingAny(addrs)
}

// setSlice stores (or, with es nil, deletes) an EndpointSlice and returns the local pods whose egress allows
// one of its old or new endpoints.
func (v *view) setSlice(key podKey, es *discoveryv1.EndpointSlice) set {
	var addrs []netip.Addr
	if old := v.slices[key]; old != nil {
		addrs = append(addrs, old.Addresses...)
		for _, a := range old.Addresses {
			delete(v.endpoints[a], key)
			if len(v.endpoints[a]) == 0 {
				delete(v.endpoints, a)
			}
		}
		delete(v.slices, key)
	}
	if es != nil {
		if si := newSliceInfo(es); si != nil {
			v.slices[key] = si
			addrs = append(addrs, si.Addresses...)
			for _, a := range si.Addresses {
				if v.endpoints[a] == nil {
					v.endpoints[a] = map[podKey]*sliceInfo{}
				}
				v.endpoints[a][key] = si
			}
		}
	}
	return v.allowingAny(addrs)
}

// allowingAny returns the local pods whose last egress allows some address in addrs, on any port.
func (v *view) allowingAny(addrs []netip.Addr) set {
	out := set{}
	if len(addrs) == 0 || !v.track {
		return out
	}
	for _, l := range v.locals {
		if !l.egress.Isolated {
			continue
		}
	next:
		for _, e := range l.egress.Entries {
			for _, a := range addrs {
				if e.CIDR.Contains(a) {
					out.add(l.HostIf)
					break next
				}
			}
		}
	}
	return out
}

// expansion configures expandEgress.
type expansion struct {
	// dnsAddr is the node-local DNS address; invalid turns that part off.
	dnsAddr netip.Addr
	// dnsService is the cluster DNS Service whose endpoints (and cluster IPs) stand for "the DNS pods".
	dnsService podKey
}

// expandEgress adds what the datapath needs because it sees egress before kube-proxy's DNAT:
//
//   - for every endpoint address and target port an entry allows, the cluster IPs and port of the Service that
//     the EndpointSlice belongs to (skipped where an entry already allows them);
//   - when DNS to the cluster DNS Service's endpoints or cluster IPs is allowed on port 53, the node-local DNS
//     address on port 53, for the same protocol.
//
// A direction that is not isolated allows everything and is returned unchanged.
func (v *view) expandEgress(dir compute.Direction, x expansion) compute.Direction {
	if !dir.Isolated {
		return dir
	}
	entries := dir.Entries
	var extra []compute.Entry
	add := func(addr netip.Addr, proto compute.Protocol, port uint16) {
		if allows(entries, addr, proto, port) || allows(extra, addr, proto, port) {
			return
		}
		extra = append(extra, compute.Entry{CIDR: netip.PrefixFrom(addr, addr.BitLen()), Protocol: proto, PortStart: port, PortEnd: port})
	}
	viaSlices := func(e compute.Entry, addr netip.Addr) {
		for _, sl := range v.endpoints[addr] {
			svc := v.services[sl.Service]
			if svc == nil || len(svc.ClusterIPs) == 0 {
				continue
			}
			for _, sp := range sl.Ports {
				if !entryAllows(e, addr, sp.Protocol, sp.Port) {
					continue
				}
				p, ok := svc.Ports[sp.Name]
				if !ok || p.Protocol != sp.Protocol {
					continue
				}
				for _, cip := range svc.ClusterIPs {
					add(cip, p.Protocol, p.Port)
				}
			}
		}
	}
	for _, e := range entries {
		if e.CIDR.IsSingleIP() {
			viaSlices(e, e.CIDR.Addr())
			continue
		}
		for addr := range v.endpoints {
			if e.CIDR.Contains(addr) {
				viaSlices(e, addr)
			}
		}
	}
	if x.dnsAddr.IsValid() {
		var targets []netip.Addr
		if svc := v.services[x.dnsService]; svc != nil {
			targets = append(targets, svc.ClusterIPs...)
		}
		for _, sl := range v.slices {
			if sl.Service == x.dnsService {
				targets = append(targets, sl.Addresses...)
			}
		}
		for _, proto := range []compute.Protocol{compute.ProtocolUDP, compute.ProtocolTCP} {
			for _, t := range targets {
				if allows(entries, t, proto, 53) || allows(extra, t, proto, 53) {
					add(x.dnsAddr, proto, 53)
					break
				}
			}
		}
	}
	if len(extra) == 0 {
		return dir
	}
	return compute.Direction{Isolated: true, Entries: compute.Normalize(append(append([]compute.Entry{}, entries...), extra...))}
}

func allows(entries []compute.Entry, addr netip.Addr, proto compute.Protocol, port uint16) bool {
	for _, e := range entries {
		if entryAllows(e, addr, proto, port) {
			return true
		}
	}
	return false
}

func entryAllows(e compute.Entry, addr netip.Addr, proto compute.Protocol, port uint16) bool {
	return e.CIDR.Contains(addr) && (e.Protocol == compute.ProtocolAny || e.Protocol == proto) &&
		(e.AllPorts() || (port >= e.PortStart && port <= e.PortEnd))
}
