package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/autonode/autonode/agent/config"
	"github.com/autonode/autonode/agent/network/cni"
	netdatapath "github.com/autonode/autonode/agent/network/datapath"
	"github.com/autonode/autonode/agent/network/ipam"
	"github.com/autonode/autonode/agent/policy"
	"github.com/autonode/autonode/agent/policy/datapath"
	"github.com/autonode/autonode/agent/subsystem"
	"github.com/autonode/autonode/health"
)

// allocations lists the pods the CNI has attached; the IPAM pool implements it.
type allocations interface {
	List() []ipam.Allocation
}

// newPolicy builds NetworkPolicy enforcement: it opens the BPF datapath, adopting what a previous run pinned (so
// enforcement never stops), and the engine that the CNI backend calls on ADD and DEL. close releases the
// datapath's descriptors (nothing is unpinned) and stops the event broadcaster.
func newPolicy(ctx context.Context, cfg config.Config, client kubernetes.Interface, pods allocations, logger *slog.Logger,
	reg prometheus.Registerer) (engine *policy.Engine, spec subsystem.Spec, close func(), err error) {
	pc := cfg.Policy
	if err := ensureBPFFS(pc.PinRoot); err != nil {
		return nil, subsystem.Spec{}, nil, err
	}
	dp, err := datapath.Open(ctx, datapath.Config{
		PinRoot: pc.PinRoot, ConntrackSize: pc.ConntrackSize, EmitAllows: pc.EmitAllows,
		EventsPerSecond: pc.EventsPerSecond, Logger: logger,
	})
	if err != nil {
		return nil, subsystem.Spec{}, nil, err
	}
	for _, c := range dp.Collectors() {
		if err := reg.Register(c); err != nil {
			dp.Close()
			return nil, subsystem.Spec{}, nil, fmt.Errorf("registering policy datapath metrics: %w", err)
		}
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "autonode-agent"})
	engine, err = policy.New(policy.Options{
		Logger: logger, Client: client, Datapath: dp, Recorder: recorder, Registerer: reg,
		Strict:            pc.Strict,
		NodeLocalDNS:      netip.MustParseAddr(cfg.Network.DNS.Address), // validated by config
		DNSService:        pc.DNSService,
		NodeAddresses:     policy.HostAddresses(nil),
		Attachments:       func() []policy.Pod { return attachedPods(pods.List()) },
		ReconcileInterval: pc.ReconcileInterval.Duration,
		FlowLogsPerSecond: float64(pc.FlowLogsPerSecond),
	})
	if err != nil {
		broadcaster.Shutdown()
		dp.Close()
		return nil, subsystem.Spec{}, nil, fmt.Errorf("policy engine: %w", err)
	}
	return engine, subsystem.Spec{Subsystem: engine, Condition: health.NetworkingReady},
		func() { broadcaster.Shutdown(); dp.Close() }, nil
}

// bpffsRoot is where Linux distributions mount the BPF filesystem.
const bpffsRoot = "/sys/fs/bpf"

// ensureBPFFS mounts a BPF filesystem at /sys/fs/bpf when the pin root lies below it and none is mounted there,
// as on hosts whose init does not mount one, or inside `ip netns exec` (the sandbox), which remounts /sys.
func ensureBPFFS(pinRoot string) error {
	if !strings.HasPrefix(filepath.Clean(pinRoot)+"/", bpffsRoot+"/") {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(bpffsRoot, &st); err == nil && uint32(st.Type) == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(bpffsRoot, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", bpffsRoot, err)
	}
	if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mounting a BPF filesystem at %s: %w", bpffsRoot, err)
	}
	return nil
}

func attachedPods(allocs []ipam.Allocation) []policy.Pod {
	out := make([]policy.Pod, 0, len(allocs))
	for _, a := range allocs {
		out = append(out, policy.Pod{
			HostIf:    netdatapath.HostVethName(a.Key.ContainerID, a.Key.IfName),
			Namespace: a.Pod.Namespace, Name: a.Pod.Name, UID: a.Pod.UID, IP: a.Addr,
		})
	}
	return out
}

// cniPolicy lets the CNI backend call the engine.
type cniPolicy struct{ e *policy.Engine }

func (c cniPolicy) Attach(ctx context.Context, p cni.PodInfo) error {
	return c.e.Attach(ctx, policy.Pod{HostIf: p.HostIf, Namespace: p.Namespace, Name: p.Name, UID: p.UID, IP: p.IP})
}

func (c cniPolicy) Detach(ctx context.Context, hostIf string) error { return c.e.Detach(ctx, hostIf) }
