package policy

import (
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/autonode/autonode/agent/policy/compute"
)

// stripObject is the informers' transform: it keeps only what the engine reads, so that caching every pod of a
// large cluster stays cheap. Pods keep their identity, labels, node, host-network flag, named container ports,
// phase and IP; the other kinds lose their managed fields and annotations.
func stripObject(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		out := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, UID: o.UID, ResourceVersion: o.ResourceVersion, Labels: o.Labels},
			Spec:       corev1.PodSpec{NodeName: o.Spec.NodeName, HostNetwork: o.Spec.HostNetwork},
			Status:     corev1.PodStatus{Phase: o.Status.Phase, PodIP: o.Status.PodIP, PodIPs: o.Status.PodIPs},
		}
		// Sidecars (restartable init containers) may serve named ports too.
		for _, cs := range [][]corev1.Container{o.Spec.InitContainers, o.Spec.Containers} {
			for _, c := range cs {
				var named []corev1.ContainerPort
				for _, p := range c.Ports {
					if p.Name != "" {
						named = append(named, corev1.ContainerPort{Name: p.Name, ContainerPort: p.ContainerPort, Protocol: p.Protocol})
					}
				}
				if len(named) > 0 {
					out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, Ports: named})
				}
			}
		}
		return out, nil
	case *corev1.Namespace:
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion, Labels: o.Labels}}, nil
	case *networkingv1.NetworkPolicy:
		o.ManagedFields, o.Annotations = nil, nil
		return o, nil
	case *corev1.Service:
		o.ManagedFields, o.Annotations = nil, nil
		return o, nil
	case *discoveryv1.EndpointSlice:
		o.ManagedFields, o.Annotations = nil, nil
		return o, nil
	}
	return obj, nil // tombstones and anything else pass unchanged
}

// podInfoFrom converts a (stripped) pod.
func podInfoFrom(p *corev1.Pod) *podInfo {
	pi := &podInfo{
		Namespace: p.Namespace, Name: p.Name, UID: p.UID, Labels: p.Labels, NodeName: p.Spec.NodeName,
		Peerless: p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed,
	}
	// The first address is the primary; the datapath is IPv4, so prefer an IPv4 one when dual-stack.
	ips := []string{p.Status.PodIP}
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil && (!pi.IP.IsValid() || (a.Is4() && !pi.IP.Is4())) {
			pi.IP = a
		}
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			proto, err := compute.ParseProtocol(string(cp.Protocol))
			if err != nil || cp.Name == "" || cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
				continue
			}
			pi.Ports = append(pi.Ports, compute.ContainerPort{Name: cp.Name, Protocol: proto, Port: uint16(cp.ContainerPort)})
		}
	}
	return pi
}

// untomb returns the object inside a deletion tombstone.
func untomb(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

func labelSet(m map[string]string) labels.Set { return labels.Set(m) }

// cutKey splits "namespace/name".
func cutKey(s string) (ns, name string, ok bool) {
	ns, name, ok = strings.Cut(s, "/")
	return ns, name, ok && ns != "" && name != "" && !strings.Contains(name, "/")
}
