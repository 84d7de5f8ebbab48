package cni_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/autonode/autonode/agent/network/cni"
	"github.com/autonode/autonode/agent/network/datapath"
)

// recordingPolicy records Attach and Detach; failAttach makes Attach fail.
type recordingPolicy struct {
	mu         sync.Mutex
	attached   []cni.PodInfo
	detached   []string
	failAttach error
	// linkUp reports whether the host veth existed when Attach ran.
	linkUp  func(name string) bool
	sawLink []bool
}

func (p *recordingPolicy) Attach(_ context.Context, pod cni.PodInfo) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.attached = append(p.attached, pod)
	p.sawLink = append(p.sawLink, p.linkUp(pod.HostIf))
	return p.failAttach
}

func (p *recordingPolicy) Detach(_ context.Context, hostIf string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.detached = append(p.detached, hostIf)
	return nil
}

// TestPrivilegedPolicyHook checks that ADD attaches the pod's policy with its CNI_ARGS identity, its host veth
// already in place, that DEL detaches it, and that a failed attach fails ADD and leaves no veth or address.
func TestPrivilegedPolicyHook(t *testing.T) {
	pol := &recordingPolicy{}
	e := newEnv(t, envOptions{policy: pol})
	nl := e.node.Netlink(t)
	pol.linkUp = func(name string) bool { _, err := nl.LinkByName(name); return err == nil }
	list := e.confList(t, "1.0.0", nil, nil, nil)
	pod := e.node.NewPod(t)
	rt := runtimeConf(pod, "ctr-pol-"+pod.Name)
	rt.Args = append(rt.Args, [2]string{"K8S_POD_UID", "uid-1"})
	res, err := e.add(t, list, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	hostIf := datapath.HostVethName(rt.ContainerID, "eth0")
	want := cni.PodInfo{HostIf: hostIf, Namespace: "default", Name: "pod-" + rt.ContainerID, UID: "uid-1", IP: podAddr(t, res)}
	if len(pol.attached) != 1 || pol.attached[0] != want || !pol.sawLink[0] {
		t.Errorf("Attach calls %+v (link present %v), want one with %+v after the veth exists", pol.attached, pol.sawLink, want)
	}
	if err := e.del(t, list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if !slices.Equal(pol.detached, []string{hostIf}) {
		t.Errorf("Detach calls %v, want [%s]", pol.detached, hostIf)
	}

	pol.failAttach = errors.New("no datapath")
	pod2 := e.node.NewPod(t)
	rt2 := runtimeConf(pod2, "ctr-pol2-"+pod2.Name)
	if _, err := e.add(t, list, rt2); err == nil {
		t.Fatal("ADD succeeded although the policy could not be attached")
	}
	if _, err := nl.LinkByName(datapath.HostVethName(rt2.ContainerID, "eth0")); !errors.As(err, new(netlink.LinkNotFoundError)) {
		t.Errorf("host veth left after a failed attach: %v", err)
	}
	if n := len(e.alloc.List()); n != 0 {
		t.Errorf("%d addresses still allocated after a failed attach", n)
	}
}
