package sandboxes

import (
	"encoding/base64"
	"errors"
	"maps"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autonode/autonode/sandbox/testenv"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/typeurl/v2"

	"github.com/autonode/autonode/agent/network/ipam"
)

// metadataTypeURL is the type URL the CRI plugin registers its sandbox
// metadata under; Addresses does not depend on it.
const metadataTypeURL = "github.com/containerd/cri/pkg/store/sandbox/Metadata"

// rawAny is an extension as the CRI plugin stores it: JSON under a type URL.
type rawAny struct {
	url   string
	value []byte
}

func (a rawAny) GetTypeUrl() string { return a.url }
func (a rawAny) GetValue() []byte   { return a.value }

// Metadata as containerd's CRI plugin writes it. v1 (containerd 1.x, 2.0-2.x)
// stores Config as JSON; v2 as a JSON string of protobuf bytes. A CNI result
// has the default interface (possibly with no netns), the pod's interfaces
// with their netns, host-side interfaces with none, and lo.
var (
	// Pod network through a chained plugin that names its interfaces; the
	// host side has an address the pod does not own.
	metaV1 = `{"Version":"v1","Metadata":{"ID":"sb-a","Name":"web_default_uid-a_0",
		"Config":{"metadata":{"name":"web","uid":"uid-a","namespace":"default"},"log_directory":"/var/log/pods/x"},
		"NetNSPath":"/var/run/netns/cni-a","IP":"10.1.0.5","AdditionalIPs":null,"RuntimeHandler":"",
		"CNIResult":{"Interfaces":{
			"eth0":{"IPConfigs":[{"IP":"10.1.0.5","Gateway":"169.254.1.1"}],"Mac":"0a:58:0a:01:00:05","Sandbox":"/var/run/netns/cni-a"},
			"eni1a2b3c":{"IPConfigs":[{"IP":"169.254.1.1","Gateway":null}],"Mac":"aa:bb:cc:dd:ee:ff","Sandbox":""},
			"lo":{"IPConfigs":[{"IP":"127.0.0.1","Gateway":null},{"IP":"::1","Gateway":null}],"Mac":"00:00:00:00:00:00","Sandbox":"/var/run/netns/cni-a"}},
		"DNS":[{},{}],"Routes":[{"dst":"0.0.0.0/0"}]},"ProcessLabel":""}}`
	// A v2 record without a CNI result: the pod IP alone, dual-stack with
	// IPv6 first.
	metaV2 = `{"Version":"v2","Metadata":{"ID":"sb-b","Name":"db_default_uid-b_0","Config":"` +
		base64.StdEncoding.EncodeToString([]byte{0x0a, 0x02, 0x08, 0x01}) + `",
		"NetNSPath":"/var/run/netns/cni-b","IP":"fd00::6","AdditionalIPs":["10.1.0.6"],"RuntimeHandler":"runc",
		"CNIResult":null,"ProcessLabel":""}}`
	// Addresses filed under the default interface with no netns: the
	// plugin returned IPs that name no interface.
	metaNoIfaces = `{"Version":"v1","Metadata":{"ID":"sb-c","IP":"10.1.0.7",
		"CNIResult":{"Interfaces":{"eth0":{"IPConfigs":[{"IP":"10.1.0.7","Gateway":"10.1.0.1"}],"Mac":"","Sandbox":""}}}}}`
	// hostNetwork: no netns, no IP, no CNI result.
	metaHost = `{"Version":"v1","Metadata":{"ID":"sb-h","Name":"kube-proxy_kube-system_uid-h_0","Config":{},
		"NetNSPath":"","IP":"","AdditionalIPs":null,"RuntimeHandler":"","CNIResult":null,"ProcessLabel":""}}`
)

func record(id, meta string) containers.Container {
	r := containers.Container{ID: id}
	if meta != "" {
		r.Extensions = map[string]typeurl.Any{MetadataExtension: rawAny{metadataTypeURL, []byte(meta)}}
	}
	return r
}

func TestSandboxAddresses(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name, meta string
		want       map[string]netip.Addr
		err        string
	}{
		{"v1 with CNI result", metaV1, map[string]netip.Addr{"eth0": a("10.1.0.5")}, ""},
		{"v2 pod IP, IPv4 preferred", metaV2, map[string]netip.Addr{"eth0": a("10.1.0.6")}, ""},
		{"IPs under the default interface", metaNoIfaces, map[string]netip.Addr{"eth0": a("10.1.0.7")}, ""},
		{"host network", metaHost, map[string]netip.Addr{}, ""},
		{"no extension", "", nil, "no io.cri-containerd.sandbox.metadata extension"},
		{"unknown version", `{"Version":"v9","Metadata":{"IP":"10.1.0.8"}}`, nil, `version "v9"`},
		{"not JSON", `{"Version":`, nil, "decoding"},
		{"bad address", `{"Version":"v1","Metadata":{"IP":"10.1.0"}}`, nil, "sandbox address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sandboxAddresses(record("x", tt.meta))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, %v; want an error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	c := New(Options{})
	defer c.Close()
	if c.opts.Address != DefaultAddress || c.opts.Namespace != DefaultNamespace || c.opts.Timeout != DefaultTimeout {
		t.Errorf("defaults: %+v", c.opts)
	}
	if c.client != nil {
		t.Error("New connected; it should wait for the first call")
	}
}

// TestUnreachable: no containerd is an error naming the socket, never an
// empty set of sandboxes, and it stays so on the next call.
func TestUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "absent.sock")
	c := New(Options{Address: sock, Timeout: 2 * time.Second})
	defer c.Close()
	for i := range 2 {
		live, err := c.Live(t.Context())
		if err == nil || live != nil || !strings.Contains(err.Error(), sock) {
			t.Fatalf("call %d: Live = %v, %v; want an error naming %s", i, live, err, sock)
		}
		addrs, err := c.Addresses(t.Context())
		if err == nil || addrs != nil || !strings.Contains(err.Error(), sock) {
			t.Fatalf("call %d: Addresses = %v, %v; want an error naming %s", i, addrs, err, sock)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Live(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

func TestPrivilegedContainerd(t *testing.T) {
	ctd := testenv.StartContainerd(t)
	admin, err := client.New(ctd.Address, client.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	create := func(ns, id string, labels map[string]string, meta string) {
		t.Helper()
		opts := []client.NewContainerOpts{client.WithSpec(&oci.Spec{}), client.WithContainerLabels(labels)}
		if meta != "" {
			opts = append(opts, client.WithContainerExtension(MetadataExtension, rawAny{metadataTypeURL, []byte(meta)}))
		}
		if _, err := admin.NewContainer(namespaces.WithNamespace(t.Context(), ns), id, opts...); err != nil {
			t.Fatalf("creating %s/%s: %v", ns, id, err)
		}
	}
	sandbox := map[string]string{KindLabel: KindSandbox, "io.kubernetes.pod.name": "web"}
	create(DefaultNamespace, "sb-a", sandbox, metaV1)
	create(DefaultNamespace, "sb-b", sandbox, metaV2)
	create(DefaultNamespace, "ctr-a", map[string]string{KindLabel: "container"}, "")
	create(DefaultNamespace, "plain", nil, "")
	create("default", "sb-elsewhere", sandbox, metaV1) // another namespace

	c := New(Options{Address: ctd.Address, Timeout: 5 * time.Second})
	defer c.Close()
	wantLive := func(step string, ids ...string) {
		t.Helper()
		live, err := c.Live(t.Context())
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		want := map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
		if !maps.Equal(live, want) {
			t.Errorf("%s: Live = %v, want %v", step, live, want)
		}
	}
	wantLive("two sandboxes", "sb-a", "sb-b")
	addrs, err := c.Addresses(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantAddrs := map[ipam.Key]netip.Addr{
		{ContainerID: "sb-a", IfName: "eth0"}: netip.MustParseAddr("10.1.0.5"),
		{ContainerID: "sb-b", IfName: "eth0"}: netip.MustParseAddr("10.1.0.6"),
	}
	if !maps.Equal(addrs, wantAddrs) {
		t.Errorf("Addresses = %v, want %v", addrs, wantAddrs)
	}

	ctx := namespaces.WithNamespace(t.Context(), DefaultNamespace)
	if err := admin.ContainerService().Delete(ctx, "sb-b"); err != nil {
		t.Fatal(err)
	}
	wantLive("one deleted", "sb-a")

	// A sandbox whose metadata cannot be read: listed, but no addresses at
	// all rather than a partial answer.
	create(DefaultNamespace, "sb-bare", sandbox, "")
	wantLive("one without metadata", "sb-a", "sb-bare")
	if addrs, err := c.Addresses(t.Context()); err != nil || addrs != nil {
		t.Errorf("Addresses with unreadable metadata = %v, %v; want nil, nil", addrs, err)
	}

	ctd.Stop()
	for i := range 2 {
		live, err := c.Live(t.Context())
		if err == nil || live != nil || !strings.Contains(err.Error(), ctd.Address) {
			t.Fatalf("stopped, call %d: Live = %v, %v; want an error naming %s", i, live, err, ctd.Address)
		}
		if addrs, err := c.Addresses(t.Context()); err == nil || addrs != nil {
			t.Fatalf("stopped, call %d: Addresses = %v, %v; want an error", i, addrs, err)
		}
	}
	ctd.Start()
	wantLive("restarted (reconnects)", "sb-a", "sb-bare")

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Live(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}
