package nodeconfig

import (
	"net/netip"
	"slices"
	"testing"
)

func TestKubeletEnablesNodeLogQuery(t *testing.T) {
	cfg, err := Kubelet(KubeletInputs{
		Limits:       InstanceLimits{Name: "m5.large", VCPUs: 2, ENIs: 3, IPv4PerENI: 10, Nitro: true},
		NodeLocalDNS: netip.MustParseAddr("169.254.20.10"),
		ClusterDNS:   []netip.Addr{netip.MustParseAddr("10.100.0.10")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.FeatureGates["NodeLogQuery"] || cfg.EnableSystemLogHandler == nil || !*cfg.EnableSystemLogHandler ||
		cfg.EnableSystemLogQuery == nil || !*cfg.EnableSystemLogQuery {
		t.Errorf("node log query not enabled: gates %v, handler %v, query %v", cfg.FeatureGates, cfg.EnableSystemLogHandler, cfg.EnableSystemLogQuery)
	}
	if cfg.MaxPods != 29 {
		t.Errorf("maxPods = %d, want 29", cfg.MaxPods)
	}
	if want := []string{"169.254.20.10", "10.100.0.10"}; !slices.Equal(cfg.ClusterDNS, want) {
		t.Errorf("clusterDNS = %v, want the node-local resolver first: %v", cfg.ClusterDNS, want)
	}
	if r := cfg.KubeReserved; r["cpu"] != "70m" || r["memory"] != "574Mi" || r["ephemeral-storage"] != "1Gi" {
		t.Errorf("kubeReserved = %v, want 70m, 574Mi, 1Gi", r)
	}
	if cfg.EvictionHard["memory.available"] != "100Mi" || len(cfg.EvictionHard) != 4 {
		t.Errorf("evictionHard = %v, want EKS's four thresholds", cfg.EvictionHard)
	}
	if cfg.Kind != "KubeletConfiguration" || cfg.APIVersion != "kubelet.config.k8s.io/v1beta1" {
		t.Errorf("type meta %s %s", cfg.APIVersion, cfg.Kind)
	}
	if _, err := Kubelet(KubeletInputs{Limits: InstanceLimits{Name: "x"}}); err == nil {
		t.Error("Kubelet with no ENI limits succeeded")
	}
}
