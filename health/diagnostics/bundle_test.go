package diagnostics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/autonode/autonode/health/diagnostics/v1alpha1"
	"github.com/autonode/autonode/sandbox/netnspod"
	"github.com/autonode/autonode/sandbox/privileged"
)

// podNetlink makes a netns pod with a route in table 100 and a rule that
// points at it, and returns a netlink handle on the pod.
func podNetlink(t *testing.T) *netlink.Handle {
	t.Helper()
	privileged.Require(t, privileged.NetAdmin)
	pod := netnspod.New(t, netnspod.Options{Prefix: "pods"})
	h, err := netlink.NewHandleAt(pod.NS)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", pod.Name, err)
	}
	t.Cleanup(h.Close)
	eth0, err := h.LinkByName(pod.PodVeth)
	if err != nil {
		t.Fatal(err)
	}
	_, dst, _ := net.ParseCIDR("10.77.12.0/24")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: dst, Table: 100, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatalf("adding route in %s: %v", pod.Name, err)
	}
	rule := netlink.NewRule()
	rule.Priority, rule.Table = 1234, 100
	_, rule.Src, _ = net.ParseCIDR("10.77.0.0/16")
	if err := h.RuleAdd(rule); err != nil {
		t.Fatalf("adding rule in %s: %v", pod.Name, err)
	}
	return h
}

func TestPrivilegedBundleContents(t *testing.T) {
	h := podNetlink(t)
	journal := writeJournal(t, []journalEntry{
		{"kubelet.service", "kubelet", "kubelet fixture line"},
		{"containerd.service", "containerd", "containerd fixture line"},
		{"autonode-agent.service", "autonode-agent", "agent fixture line"},
		{"other.service", "other", "not selected"},
	})
	kmsg := writeKmsgFixture(t)
	opts := CollectorOptions{
		JournalDir: journal,
		KmsgPath:   kmsg,
		Netlink:    h,
		State: map[string]StateFunc{
			"ipam.json": func(context.Context) ([]byte, error) { return []byte(`{"enis":1}`), nil },
			"policy":    func(context.Context) ([]byte, error) { return nil, errors.New("policy map unreadable") },
			"../escape": func(context.Context) ([]byte, error) { return []byte("kept inside"), nil },
		},
		Containerd: func(context.Context) ([]byte, error) { return []byte("containerd v2 fixture"), nil },
	}
	tests := []struct {
		name       string
		categories []v1alpha1.Category
		opts       func(*CollectorOptions)
		want       map[string]string // file -> substring
		absent     []string
	}{
		{
			name: "all",
			want: map[string]string{
				"journal/kubelet.log":        "testnode kubelet[100]: kubelet fixture line",
				"journal/containerd.log":     "containerd fixture line",
				"journal/autonode-agent.log": "agent fixture line",
				"kernel/kmsg.log":            "err: nvme nvme0: I/O 12 QID 3 timeout",
				"network/netlink.json":       `"dst": "10.77.12.0/24"`,
				"network/routes.txt":         "10.77.12.0/24 dev eth0 table 100",
				"storage/mountinfo":          " / ",
				"runtime/containerd.txt":     "containerd v2 fixture",
				"state/ipam.json":            `{"enis":1}`,
				"state/policy.error":         "policy map unreadable",
				"state/.._escape":            "kept inside",
				"manifest.json":              `"state/policy": "policy map unreadable"`,
			},
			absent: []string{"state/policy"},
		},
		{
			name:       "networking only",
			categories: []v1alpha1.Category{v1alpha1.CategoryNetworking},
			want: map[string]string{
				"journal/autonode-agent.log": "agent fixture line",
				"network/netlink.json":       `"priority": 1234`,
				"state/ipam.json":            "enis",
			},
			absent: []string{"journal/kubelet.log", "kernel/kmsg.log", "runtime/containerd.txt", "storage/mountinfo"},
		},
		{
			name:       "journald absent",
			categories: []v1alpha1.Category{v1alpha1.CategorySystem},
			opts:       func(o *CollectorOptions) { o.JournalDir = t.TempDir() + "/none" },
			want: map[string]string{
				JournalAbsentFile: "journald was not available",
				"kernel/kmsg.log": "Linux version 6.18",
			},
			absent: []string{"journal/kubelet.log", "network/netlink.json"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := opts
			if tc.opts != nil {
				tc.opts(&o)
			}
			var buf bytes.Buffer
			m, err := NewCollector(o).Write(context.Background(), &buf, Request{Name: "b", Node: "n1", Generation: 3, Categories: tc.categories})
			if err != nil {
				t.Fatal(err)
			}
			files := readBundle(t, &buf)
			for name, sub := range tc.want {
				data, ok := files[name]
				if !ok {
					t.Errorf("bundle lacks %s; has %v", name, keys(files))
					continue
				}
				if !strings.Contains(data, sub) {
					t.Errorf("%s does not contain %q:\n%s", name, sub, data)
				}
			}
			for _, name := range tc.absent {
				if _, ok := files[name]; ok {
					t.Errorf("bundle has %s, which the categories do not select", name)
				}
			}
			if strings.Contains(files["journal/kubelet.log"], "not selected") {
				t.Error("the kubelet journal holds another unit's entry")
			}
			var got Manifest
			if err := json.Unmarshal([]byte(files["manifest.json"]), &got); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Files, m.Files) || len(got.Files) != len(files) || got.Node != "n1" || got.Generation != 3 {
				t.Errorf("manifest %+v does not match the bundle's %d files", got, len(files))
			}
		})
	}
}

func TestBundleHonoursCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := NewCollector(CollectorOptions{KmsgPath: writeKmsgFixture(t), JournalDir: t.TempDir() + "/none",
		State: map[string]StateFunc{"slow": func(ctx context.Context) ([]byte, error) { cancel(); return nil, ctx.Err() }},
		Now:   func() time.Time { return time.Unix(0, 0) }})
	if _, err := c.Write(ctx, &bytes.Buffer{}, Request{Name: "b", Categories: []v1alpha1.Category{v1alpha1.CategorySystem}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write after cancel: %v", err)
	}
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
