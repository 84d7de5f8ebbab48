package cni_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/autonode/autonode/agent/network/cni/cniwire"
	"github.com/autonode/autonode/agent/network/datapath"
	"github.com/autonode/autonode/agent/network/ipam"
)

// execPlugin runs the binary as a runtime would and returns its CNI error.
func execPlugin(t *testing.T, command, containerID, netns string, stdin []byte) *types.Error {
	t.Helper()
	cmd := exec.Command(filepath.Join(pluginDir, "autonode-cni"))
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + containerID, "CNI_NETNS=" + netns,
		"CNI_IFNAME=eth0", "CNI_PATH=" + pluginDir}
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	err := cmd.Run()
	if err == nil {
		return nil
	}
	var te types.Error
	if jerr := json.Unmarshal(stdout.Bytes(), &te); jerr != nil {
		t.Fatalf("%s: %v with output %q, not a CNI error", command, err, stdout.String())
	}
	return &te
}

// TestPrivilegedErrors checks the spec error codes and that each carries a
// message.
func TestPrivilegedErrors(t *testing.T) {
	e := newEnv(t, envOptions{})
	pod := e.node.NewPod(t)
	conf := func(version string, extra map[string]any) []byte {
		m := map[string]any{"cniVersion": version, "name": "autonode", "type": "autonode-cni", "agentSocket": e.sock}
		for k, v := range extra {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return b
	}
	downSock := filepath.Join(filepath.Dir(e.sock), "down.sock")
	for _, tc := range []struct {
		name      string
		command   string
		netns     string
		stdin     []byte
		wantCode  uint
		wantInMsg string
	}{
		{"undecodable config", "ADD", pod.Path, []byte(`{"cniVersion": "1.0.0", "name":`), types.ErrDecodingFailure, ""},
		{"mtu out of range", "ADD", pod.Path, conf("1.0.0", map[string]any{"mtu": 10}), types.ErrInvalidNetworkConfig, "mtu"},
		{"mtu wrong type", "ADD", pod.Path, conf("1.0.0", map[string]any{"mtu": "big"}), types.ErrDecodingFailure, "decoding"},
		{"relative agentSocket", "ADD", pod.Path, conf("1.0.0", map[string]any{"agentSocket": "cni.sock"}), types.ErrInvalidNetworkConfig, "agentSocket"},
		{"bad agentTimeout", "ADD", pod.Path, conf("1.0.0", map[string]any{"agentTimeout": "soon"}), types.ErrInvalidNetworkConfig, "agentTimeout"},
		{"missing netns", "ADD", "/run/netns/an-missing-" + pod.Name, conf("1.0.0", nil), types.ErrInvalidEnvironmentVariables, "not a network namespace"},
		{"agent down: ADD", "ADD", pod.Path, conf("1.0.0", map[string]any{"agentSocket": downSock}), types.ErrTryAgainLater, "unreachable"},
		{"agent down: DEL", "DEL", pod.Path, conf("1.0.0", map[string]any{"agentSocket": downSock}), types.ErrTryAgainLater, "unreachable"},
		{"agent down: STATUS", "STATUS", "", conf("1.1.0", map[string]any{"agentSocket": downSock}), types.ErrPluginNotAvailable, "unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te := execPlugin(t, tc.command, "ctr-"+pod.Name, tc.netns, tc.stdin)
			if te == nil {
				t.Fatalf("%s succeeded, want error %d", tc.command, tc.wantCode)
			}
			if te.Code != tc.wantCode || te.Msg == "" || !strings.Contains(te.Msg+te.Details, tc.wantInMsg) {
				t.Errorf("%s: got code %d %q (%s), want code %d mentioning %q", tc.command, te.Code, te.Msg, te.Details, tc.wantCode, tc.wantInMsg)
			}
		})
	}
	if n := len(e.alloc.List()); n != 0 {
		t.Errorf("%d allocations leaked by failed ADDs", n)
	}
	if v, r, ru := e.node.Leftovers(t, e.pods, ourPriorities...); v+r+ru != 0 {
		t.Errorf("failed ADDs left %d veths, %d routes, %d rules", v, r, ru)
	}
}

// TestPrivilegedStatus: STATUS passes while the allocator can allocate and
// gives 50 when it cannot.
func TestPrivilegedStatus(t *testing.T) {
	e := newEnv(t, envOptions{})
	list := e.confList(t, "1.1.0", nil, nil, nil)
	status := func() error {
		return e.inNode(t, func() error { return e.cni.GetStatusNetworkList(context.Background(), list) })
	}
	if err := status(); err != nil {
		t.Fatalf("STATUS with a ready pool: %v", err)
	}
	e.alloc.Block(errors.New("no ENI attached yet"))
	err := status()
	if code, ok := cniCode(err); !ok || code != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "no ENI attached yet") {
		t.Fatalf("STATUS with a blocked pool: got %v, want error 50 with the reason", err)
	}
	// ADD fails with 11 meanwhile, so the runtime retries.
	_, err = e.add(t, e.confList(t, "1.0.0", nil, nil, nil), runtimeConf(e.node.NewPod(t), "blocked"))
	if code, ok := cniCode(err); !ok || code != types.ErrTryAgainLater {
		t.Fatalf("ADD with a blocked pool: got %v, want error 11", err)
	}
	e.alloc.Block(nil)
	if err := status(); err != nil {
		t.Fatalf("STATUS after unblocking: %v", err)
	}
}

// TestPrivilegedGC: GC keeps valid attachments and removes the others: an
// allocation libcni never cached and a veth that belongs to nobody.
func TestPrivilegedGC(t *testing.T) {
	e := newEnv(t, envOptions{secondary: true})
	list := e.confList(t, "1.1.0", nil, nil, nil)
	keep, stale := e.node.NewPod(t), e.node.NewPod(t)
	rtKeep := runtimeConf(keep, "keep-"+keep.Name)
	if _, err := e.add(t, list, rtKeep); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	// A stale attachment that only the agent knows about, added in-process.
	cfg, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "autonode", "type": "autonode-cni"})
	resp := e.srv.Handle(context.Background(), cniwire.Request{Command: "ADD", ContainerID: "stale-" + stale.Name,
		Netns: stale.Path, IfName: "eth0", Config: cfg})
	if resp.Error != nil {
		t.Fatalf("in-process ADD: %v", resp.Error)
	}
	// An orphan veth named like ours, left by a crash.
	orphan := datapath.HostVethName("orphan-"+stale.Name, "eth0")
	nl := e.node.Netlink(t)
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: orphan}, PeerName: "orphan-peer"}); err != nil {
		t.Fatalf("creating orphan veth: %v", err)
	}

	err := e.inNode(t, func() error {
		return e.cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{
			{ContainerID: rtKeep.ContainerID, IfName: "eth0"}}})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	allocs := e.alloc.List()
	if len(allocs) != 1 || allocs[0].Key != (ipam.Key{ContainerID: rtKeep.ContainerID, IfName: "eth0"}) {
		t.Fatalf("allocations after GC: %v, want only %s", allocs, rtKeep.ContainerID)
	}
	for _, gone := range []string{orphan, datapath.HostVethName("stale-"+stale.Name, "eth0")} {
		if _, err := nl.LinkByName(gone); err == nil {
			t.Errorf("veth %s survived GC", gone)
		}
	}
	if err := e.check(t, list, rtKeep); err != nil {
		t.Errorf("CHECK of the kept pod after GC: %v", err)
	}
	// Only the kept pod's rules remain: to-pod plus one from-pod per VPC CIDR.
	if _, _, rules := e.node.Leftovers(t, e.pods, ourPriorities...); rules != 2 {
		t.Errorf("%d pod rules after GC, want 2 (the kept pod's)", rules)
	}
	if err := e.del(t, list, rtKeep); err != nil {
		t.Fatalf("DEL: %v", err)
	}
}
