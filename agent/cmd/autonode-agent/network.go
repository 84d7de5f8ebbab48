package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/autonode/autonode/agent/config"
	"github.com/autonode/autonode/agent/instance"
	"github.com/autonode/autonode/agent/network/cni"
	"github.com/autonode/autonode/agent/network/datapath"
	"github.com/autonode/autonode/agent/network/dns"
	"github.com/autonode/autonode/agent/network/ipam"
	"github.com/autonode/autonode/agent/network/sandboxes"
	"github.com/autonode/autonode/agent/subsystem"
	"github.com/autonode/autonode/health"
)

// newNetwork builds pod networking: the IPAM pool on the node's ENIs, the
// datapath, the CNI backend that autonode-cni talks to, and, when a cluster
// DNS Service is configured, the node-local DNS cache. close releases the
// datapath's netlink and nftables handles.
func newNetwork(ctx context.Context, cfg config.Config, id instance.Identity, awsCfg aws.Config, client kubernetes.Interface, logger *slog.Logger,
	reporter health.Reporter, reg prometheus.Registerer) (specs []subsystem.Spec, close func(), err error) {
	nw := cfg.Network
	ec2Client := ec2.NewFromConfig(awsCfg, func(o *ec2.Options) {
		if nw.EC2Endpoint != "" {
			o.BaseEndpoint = aws.String(nw.EC2Endpoint)
		}
	})
	var targets *ipam.Targets
	if nw.WarmENITarget+nw.WarmIPTarget+nw.MinimumIPTarget+nw.WarmPrefixTarget > 0 {
		targets = &ipam.Targets{WarmENI: nw.WarmENITarget, WarmIP: nw.WarmIPTarget, MinimumIP: nw.MinimumIPTarget, WarmPrefix: nw.WarmPrefixTarget}
	}
	// The runtime's live sandboxes, so that addresses of pods that are gone
	// go back to the pool; the same containerd the runtime monitor probes.
	runtime := sandboxes.New(sandboxes.Options{Address: cfg.Health.ContainerdAddress, Logger: logger})
	pool, err := ipam.New(ipam.Config{
		EC2:              ec2Client,
		IMDS:             instance.NewClient(cfg.IMDS.Endpoint),
		Sandboxes:        runtime,
		InstanceID:       id.InstanceID,
		InstanceType:     id.InstanceType,
		Cluster:          cfg.PodIdentity.ClusterName,
		PrefixDelegation: nw.PrefixDelegation,
		Targets:          targets,
		CheckpointPath:   filepath.Join(cfg.StateDir, "ipam-checkpoint.json"),
		Logger:           logger,
		Registerer:       reg,
		Health:           reporter,
	})
	if err != nil {
		runtime.Close()
		return nil, nil, fmt.Errorf("ipam: %w", err)
	}
	var excluded []netip.Prefix
	for _, c := range nw.SNATExcludedCIDRs {
		excluded = append(excluded, netip.MustParsePrefix(c)) // validated by config
	}
	dp, err := datapath.New(datapath.Options{
		Logger:     logger,
		MTU:        nw.MTU,
		PrimaryMAC: id.MAC,
		PrimaryIP:  id.PrivateIPv4,
		VPCCIDRs:   id.VPCCIDRs,
		SNAT:       datapath.SNATOptions{External: nw.ExternalSNAT, ExcludedCIDRs: excluded},
	})
	if err != nil {
		runtime.Close()
		return nil, nil, fmt.Errorf("datapath: %w", err)
	}
	// NetworkPolicy: CNI ADD attaches each pod's rules before it returns.
	var podPolicy cni.PodPolicy
	var policySpecs []subsystem.Spec
	closePolicy := func() {}
	if cfg.Policy.Enabled {
		engine, spec, closeFn, err := newPolicy(ctx, cfg, client, pool, logger, reg)
		if err != nil {
			dp.Close()
			runtime.Close()
			return nil, nil, fmt.Errorf("network policy: %w", err)
		}
		// The engine reconciles its pins with the pool's allocations when it starts: before the pool has read its
		// checkpoint the list is empty, and every pinned pod would be unprogrammed (left unchecked) at a restart.
		spec.Requires = []string{pool.Name()}
		podPolicy, policySpecs, closePolicy = cniPolicy{engine}, []subsystem.Spec{spec}, closeFn
	}
	backend, err := cni.New(cni.Options{Logger: logger, SocketPath: nw.CNISocket, Allocator: pool, Datapath: dp, Health: reporter, Policy: podPolicy})
	if err != nil {
		closePolicy()
		dp.Close()
		runtime.Close()
		return nil, nil, fmt.Errorf("cni: %w", err)
	}
	specs = []subsystem.Spec{
		{Subsystem: pool, Condition: health.NetworkingReady},
		{Subsystem: backend, Requires: []string{pool.Name()}, Condition: health.NetworkingReady},
	}
	specs = append(specs, policySpecs...)
	if len(nw.DNS.ClusterDNS) > 0 {
		var clusterDNS []netip.AddrPort
		for _, a := range nw.DNS.ClusterDNS {
			clusterDNS = append(clusterDNS, netip.AddrPortFrom(netip.MustParseAddr(a), 53))
		}
		resolver, err := dns.New(dns.Options{
			Logger: logger, Registerer: reg, CreateLink: true,
			Address:       netip.MustParseAddr(nw.DNS.Address),
			ClusterDomain: nw.DNS.ClusterDomain,
			ClusterDNS:    clusterDNS,
			VPCDNS:        []netip.AddrPort{netip.AddrPortFrom(dns.VPCResolver(id.VPCCIDRs[0]), 53)},
		})
		if err != nil {
			closePolicy()
			dp.Close()
			runtime.Close()
			return nil, nil, fmt.Errorf("node-local dns: %w", err)
		}
		specs = append(specs, subsystem.Spec{Subsystem: resolver, Condition: health.NetworkingReady})
	}
	return specs, func() { closePolicy(); dp.Close(); runtime.Close() }, nil
}
