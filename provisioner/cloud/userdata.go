package cloud

import (
	"encoding/base64"
	"fmt"
	"maps"
	"strings"

	"github.com/pelletier/go-toml/v2"
	corev1 "k8s.io/api/core/v1"
)

// Cluster is what a node needs to join: Bottlerocket's required
// settings.kubernetes values.
type Cluster struct {
	Name string
	// Endpoint is the API server URL (https://…).
	Endpoint string
	// CA is the cluster's PEM certificate authority bundle.
	CA []byte
	// DNSIP is the cluster DNS service address; Bottlerocket derives one
	// from the service CIDR when empty.
	DNSIP string
}

// bottlerocketUserData is the TOML document of Bottlerocket's user data.
type bottlerocketUserData struct {
	Settings struct {
		Kubernetes kubernetesSettings `toml:"kubernetes"`
	} `toml:"settings"`
}

type kubernetesSettings struct {
	ClusterName        string `toml:"cluster-name"`
	APIServer          string `toml:"api-server"`
	ClusterCertificate string `toml:"cluster-certificate"`
	ClusterDNSIP       string `toml:"cluster-dns-ip,omitempty"`
	// HostnameOverrideSource names nodes after their instance id, as Auto
	// Mode does; the agent finds its Node by providerID either way.
	HostnameOverrideSource string              `toml:"hostname-override-source"`
	NodeLabels             map[string]string   `toml:"node-labels,omitempty"`
	NodeTaints             map[string][]string `toml:"node-taints,omitempty"`
}

// UserData renders Bottlerocket user data: [settings.kubernetes] with the
// cluster's name, endpoint, CA and DNS address, the labels the kubelet may
// set on its own Node, and the taints (startup taints included) it
// registers with, as node-taints' key = ["value:Effect", …].
func UserData(c Cluster, labels map[string]string, taints []corev1.Taint) (string, error) {
	if c.Name == "" || c.Endpoint == "" || len(c.CA) == 0 {
		return "", fmt.Errorf("user data: cluster name, endpoint and CA are required")
	}
	var doc bottlerocketUserData
	k := &doc.Settings.Kubernetes
	k.ClusterName, k.APIServer, k.ClusterDNSIP = c.Name, c.Endpoint, c.DNSIP
	k.ClusterCertificate = base64.StdEncoding.EncodeToString(c.CA)
	k.HostnameOverrideSource = "instance-id"
	k.NodeLabels = map[string]string{}
	for key, v := range labels {
		if kubeletMaySet(key) {
			k.NodeLabels[key] = v
		}
	}
	k.NodeTaints = map[string][]string{}
	for _, t := range taints {
		k.NodeTaints[t.Key] = append(k.NodeTaints[t.Key], t.Value+":"+string(t.Effect))
	}
	out, err := toml.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("user data: %w", err)
	}
	return string(out), nil
}

// kubeletMaySet reports whether the NodeRestriction admission plugin lets a
// kubelet set a label on its own Node: anything outside the kubernetes.io
// and k8s.io domains, plus their kubelet.* and node.* subdomains. The
// provisioner copies the rest onto the Node after it registers.
func kubeletMaySet(key string) bool {
	domain, _, ok := strings.Cut(key, "/")
	if !ok {
		return true
	}
	for _, d := range []string{"kubernetes.io", "k8s.io"} {
		if domain == d || strings.HasSuffix(domain, "."+d) {
			return strings.HasPrefix(domain, "kubelet.") || strings.HasPrefix(domain, "node.")
		}
	}
	return true
}

// userDataLabels are the claim labels that go into user data: the claim's
// own name changes for every node, so it stays out to let launch templates
// be shared; registration sets it.
func userDataLabels(labels map[string]string, skip ...string) map[string]string {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	for _, k := range skip {
		delete(out, k)
	}
	return out
}
