package cni_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/autonode/autonode/health"
	"github.com/autonode/autonode/health/healthtest"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/autonode/autonode/agent/network/cni"
	"github.com/autonode/autonode/agent/network/cni/cnitest"
	"github.com/autonode/autonode/agent/network/datapath"
	"github.com/autonode/autonode/agent/network/datapath/datapathtest"
	"github.com/autonode/autonode/agent/network/ipam"
	"github.com/autonode/autonode/sandbox/privileged"
)

// pluginDir holds the autonode-cni binary built once by TestMain; it is set
// before any test runs and never changes.
var pluginDir string

// debianPlugins is where Debian's containernetworking-plugins live.
const debianPlugins = "/usr/lib/cni"

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if !testing.Short() {
		dir, err := os.MkdirTemp("", "autonode-cni-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "autonode-cni"), "github.com/autonode/autonode/agent/cmd/autonode-cni")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building autonode-cni:", err)
			return 1
		}
		pluginDir = dir
	}
	return m.Run()
}

type envOptions struct {
	// secondary puts pods on the secondary ENI (route table 2).
	secondary bool
	// externalSNAT turns our SNAT off.
	externalSNAT bool
	// policy is the NetworkPolicy hook; nil enforces none.
	policy cni.PodPolicy
}

// env is one node with a running CNI server and a libcni client.
type env struct {
	node  *datapathtest.Node
	dp    *datapath.Datapath
	alloc *cnitest.Allocator
	srv   *cni.Server
	sock  string
	cni   *libcni.CNIConfig
	pods  netip.Prefix
	// signals records what the periodic datapath check reports.
	signals *healthtest.Recorder
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	privileged.Require(t, privileged.NetAdmin)
	node := datapathtest.NewNode(t)
	dp, err := datapath.New(datapath.Options{
		NodeNetns: node.Path, PrimaryMAC: node.Primary.MAC, PrimaryIP: node.Primary.Addr,
		VPCCIDRs: []netip.Prefix{node.VPCCIDR}, SNAT: datapath.SNATOptions{External: o.externalSNAT},
	})
	if err != nil {
		t.Fatalf("datapath: %v", err)
	}
	t.Cleanup(func() { dp.Close() })
	tmpl := ipam.Allocation{ENI: "eni-primary", MAC: node.Primary.MAC, SubnetCIDR: node.Primary.Subnet}
	pods := node.PodPrefix
	if o.secondary {
		tmpl = ipam.Allocation{ENI: "eni-secondary", DeviceIndex: 1, MAC: node.Secondary.MAC,
			RouteTable: node.Secondary.Table, SubnetCIDR: node.Secondary.Subnet}
		pods = node.SecondaryPodPrefix
	}
	alloc := cnitest.NewAllocator(pods, tmpl)
	sockDir, err := os.MkdirTemp("", "an")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	e := &env{node: node, dp: dp, alloc: alloc, sock: filepath.Join(sockDir, "cni.sock"), pods: pods, signals: &healthtest.Recorder{}}
	e.srv, err = cni.New(cni.Options{SocketPath: e.sock, Allocator: alloc, Datapath: dp,
		Health: e.signals, CheckInterval: 20 * time.Millisecond, Policy: o.policy})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() { runErr = e.srv.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if err := runErr; err != nil {
			t.Errorf("server Run: %v", err)
		}
		if _, err := os.Stat(e.sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left behind: %v", e.sock, err)
		}
	})
	for e.srv.Ready() != nil {
		select {
		case <-done:
			t.Fatalf("server stopped: %v", runErr)
		case <-time.After(5 * time.Millisecond):
		}
	}
	e.cni = libcni.NewCNIConfigWithCacheDir([]string{pluginDir, debianPlugins}, t.TempDir(), nil)
	return e
}

// confList builds a conflist: autonode-cni, with extra plugins after it
// and before it (pre).
func (e *env) confList(t testing.TB, version string, pre, post []map[string]any, extra map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	ours := map[string]any{"type": "autonode-cni", "agentSocket": e.sock}
	for k, v := range extra {
		ours[k] = v
	}
	plugins := append(append(append([]map[string]any{}, pre...), ours), post...)
	raw, err := json.Marshal(map[string]any{"cniVersion": version, "name": "autonode", "plugins": plugins})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		t.Fatalf("parsing conflist: %v", err)
	}
	return list
}

// inNode runs fn in the node netns, where the runtime would run plugins.
func (e *env) inNode(t testing.TB, fn func() error) error {
	t.Helper()
	return e.node.Do(fn)
}

func (e *env) add(t testing.TB, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (*current.Result, error) {
	t.Helper()
	var res types.Result
	err := e.inNode(t, func() error {
		var err error
		res, err = e.cni.AddNetworkList(context.Background(), list, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatalf("converting result: %v", err)
	}
	return r, nil
}

func (e *env) del(t testing.TB, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	t.Helper()
	return e.inNode(t, func() error { return e.cni.DelNetworkList(context.Background(), list, rt) })
}

func (e *env) check(t testing.TB, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	t.Helper()
	return e.inNode(t, func() error { return e.cni.CheckNetworkList(context.Background(), list, rt) })
}

func runtimeConf(pod *datapathtest.NS, id string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "pod-" + id}}}
}

func podAddr(t testing.TB, r *current.Result) netip.Addr {
	t.Helper()
	for _, ip := range r.IPs {
		if ip.Interface != nil && r.Interfaces[*ip.Interface].Sandbox != "" && r.Interfaces[*ip.Interface].Name == "eth0" {
			a, _ := netip.AddrFromSlice(ip.Address.IP.To4())
			return a
		}
	}
	t.Fatalf("no eth0 address in result %s", r)
	return netip.Addr{}
}

func cniCode(err error) (uint, bool) {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code, true
	}
	return 0, false
}

func addRoute(t testing.TB, ns *datapathtest.NS, dst netip.Prefix, via netip.Addr) {
	t.Helper()
	nl := ns.Netlink(t)
	err := nl.RouteReplace(&netlink.Route{Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)}, Gw: via.AsSlice()})
	if err != nil {
		t.Fatalf("route %s via %s in %s: %v", dst, via, ns.Name, err)
	}
}

// anySignal accepts a list with at least one signal that ok accepts.
func anySignal(ok func(health.Signal) bool) func([]health.Signal) bool {
	return func(ss []health.Signal) bool { return slices.ContainsFunc(ss, ok) }
}
