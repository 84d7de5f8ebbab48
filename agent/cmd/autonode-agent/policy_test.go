package main

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/autonode/autonode/agent/config"
	netdatapath "github.com/autonode/autonode/agent/network/datapath"
	"github.com/autonode/autonode/agent/network/ipam"
	"github.com/autonode/autonode/sandbox/bpffs"
	"github.com/autonode/autonode/sandbox/privileged"
)

type fixedAllocations []ipam.Allocation

func (f fixedAllocations) List() []ipam.Allocation { return f }

func TestAttachedPods(t *testing.T) {
	a := ipam.Allocation{Key: ipam.Key{ContainerID: "c1", IfName: "eth0"}, Addr: netip.MustParseAddr("10.0.0.9"),
		Pod: ipam.PodMeta{Namespace: "ns", Name: "web", UID: "u1"}}
	got := attachedPods([]ipam.Allocation{a})
	if len(got) != 1 || got[0].HostIf != netdatapath.HostVethName("c1", "eth0") || got[0].Namespace != "ns" ||
		got[0].Name != "web" || got[0].UID != "u1" || got[0].IP != a.Addr {
		t.Errorf("attachedPods = %+v", got)
	}
}

// TestPrivilegedNewPolicy builds the policy subsystem as the agent does, on a pin root of its own: the datapath
// opens, its metrics and the engine's register side by side, and closing releases it.
func TestPrivilegedNewPolicy(t *testing.T) {
	privileged.Require(t, privileged.BPF)
	cfg := config.Default()
	cfg.Policy.PinRoot = bpffs.PinRoot(t)
	cfg.Policy.ConntrackSize = 4096
	reg := prometheus.NewRegistry()
	engine, spec, closeFn, err := newPolicy(context.Background(), cfg, fake.NewClientset(), fixedAllocations{}, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	if engine == nil || spec.Name() != "policy" {
		t.Fatalf("engine %v, spec %q", engine, spec.Name())
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"autonode_policy_conntrack_capacity", "autonode_policy_local_pods"} {
		if !names[want] {
			t.Errorf("metric %s not registered (have %v)", want, names)
		}
	}
}
