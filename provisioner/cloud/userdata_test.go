package cloud

import (
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
	corev1 "k8s.io/api/core/v1"
)

func TestUserData(t *testing.T) {
	t.Parallel()
	c := Cluster{Name: "prod", Endpoint: "https://api.example", CA: []byte("pem")}
	out, err := UserData(c, map[string]string{
		"autonode.dev/nodepool":             "gp",
		"node.kubernetes.io/exclude-lb":     "true",
		"topology.kubernetes.io/zone":       "us-west-2a", // the kubelet may not set it: left to registration
		"kubernetes.io/hostname":            "x",
		"example.com/with \"quotes\" = and": "v",
	}, []corev1.Taint{
		{Key: "a", Value: "1", Effect: corev1.TaintEffectNoSchedule},
		{Key: "a", Value: "2", Effect: corev1.TaintEffectNoExecute},
	})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Settings struct {
			Kubernetes struct {
				ClusterName    string              `toml:"cluster-name"`
				HostnameSource string              `toml:"hostname-override-source"`
				DNS            *string             `toml:"cluster-dns-ip"`
				Labels         map[string]string   `toml:"node-labels"`
				Taints         map[string][]string `toml:"node-taints"`
			} `toml:"kubernetes"`
		} `toml:"settings"`
	}
	if err := toml.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	k := doc.Settings.Kubernetes
	if k.ClusterName != "prod" || k.HostnameSource != "instance-id" || k.DNS != nil {
		t.Errorf("settings %+v", k)
	}
	want := map[string]string{"autonode.dev/nodepool": "gp", "node.kubernetes.io/exclude-lb": "true", "example.com/with \"quotes\" = and": "v"}
	if len(k.Labels) != len(want) {
		t.Errorf("labels %v, want %v", k.Labels, want)
	}
	for key, v := range want {
		if k.Labels[key] != v {
			t.Errorf("label %q = %q, want %q", key, k.Labels[key], v)
		}
	}
	if strings.Join(k.Taints["a"], ",") != "1:NoSchedule,2:NoExecute" {
		t.Errorf("taints %v", k.Taints)
	}
	for _, bad := range []Cluster{{Endpoint: "e", CA: []byte("c")}, {Name: "n", CA: []byte("c")}, {Name: "n", Endpoint: "e"}} {
		if _, err := UserData(bad, nil, nil); err == nil {
			t.Errorf("UserData(%+v) accepted an incomplete cluster", bad)
		}
	}
}

func TestParseProviderID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, zone, id string
		ok           bool
	}{
		{"aws:///us-west-2a/i-0123456789abcdef0", "us-west-2a", "i-0123456789abcdef0", true},
		{"aws://us-west-2a/i-1", "", "", false},
		{"aws:///us-west-2a/", "", "", false},
		{"aws:////i-1", "", "", false},
		{"aws:///us-west-2a/i-1/x", "", "", false},
		{"gce:///z/i-1", "", "", false},
	}
	for _, tt := range tests {
		zone, id, err := ParseProviderID(tt.in)
		if (err == nil) != tt.ok || zone != tt.zone || id != tt.id {
			t.Errorf("ParseProviderID(%q) = %q, %q, %v", tt.in, zone, id, err)
		}
		if tt.ok && ProviderID(zone, id) != tt.in {
			t.Errorf("ProviderID round trip of %q", tt.in)
		}
	}
}

func FuzzParseProviderID(f *testing.F) {
	f.Add("aws:///us-west-2a/i-0123456789abcdef0")
	f.Add("aws:///a/b/c")
	f.Fuzz(func(t *testing.T, s string) {
		zone, id, err := ParseProviderID(s)
		if err == nil && ProviderID(zone, id) != s {
			t.Fatalf("%q parsed to %q %q, which formats differently", s, zone, id)
		}
	})
}
