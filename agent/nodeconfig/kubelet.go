package nodeconfig

import (
	"fmt"
	"net/netip"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/utils/ptr"
)

// KubeletInputs are the node facts the kubelet settings follow from.
type KubeletInputs struct {
	Limits  InstanceLimits
	MaxPods MaxPodsOptions
	// NodeLocalDNS is the agent's caching resolver (169.254.20.10); ClusterDNS
	// the cluster DNS Service. Pods list the node-local one first, so they
	// fall back to the Service while the agent restarts.
	NodeLocalDNS netip.Addr
	ClusterDNS   []netip.Addr
}

// Kubelet returns the KubeletConfiguration fields that autonode owns (max
// pods, kube-reserved, evictionHard, clusterDNS, node log query); the
// variant's settings generator merges them into the kubelet's config file.
//
// It enables the kubelet's node log query (the NodeLogQuery feature gate,
// enableSystemLogHandler and enableSystemLogQuery), which serves every
// autonode unit's journal at /api/v1/nodes/<node>/proxy/logs/?query=<unit>.
func Kubelet(in KubeletInputs) (*kubeletv1beta1.KubeletConfiguration, error) {
	maxPods, err := MaxPods(in.Limits, in.MaxPods)
	if err != nil {
		return nil, err
	}
	reserved, err := KubeReserved(int(in.Limits.VCPUs), maxPods)
	if err != nil {
		return nil, fmt.Errorf("instance type %s: %w", in.Limits.Name, err)
	}
	cfg := &kubeletv1beta1.KubeletConfiguration{
		MaxPods:                int32(maxPods),
		KubeReserved:           reserved.Map(),
		EvictionHard:           EvictionHard(),
		FeatureGates:           map[string]bool{"NodeLogQuery": true},
		EnableSystemLogHandler: ptr.To(true),
		EnableSystemLogQuery:   ptr.To(true),
	}
	cfg.APIVersion = kubeletv1beta1.SchemeGroupVersion.String()
	cfg.Kind = "KubeletConfiguration"
	if in.NodeLocalDNS.IsValid() {
		cfg.ClusterDNS = append(cfg.ClusterDNS, in.NodeLocalDNS.String())
	}
	for _, a := range in.ClusterDNS {
		if !a.IsValid() {
			return nil, fmt.Errorf("cluster DNS address %v is not valid", a)
		}
		cfg.ClusterDNS = append(cfg.ClusterDNS, a.String())
	}
	return cfg, nil
}
