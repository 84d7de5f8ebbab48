package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/autonode/autonode/agent/nodeconfig"
)

// nodeconfigKeys are the values `autonode-agent nodeconfig KEY` prints, each
// as the JSON a Bottlerocket settings generator returns.
func nodeconfigKeys() []string {
	return []string{"max-pods", "kube-reserved", "eviction-hard", "cluster-dns-ip", "kubelet-config", "containerd-config", "base-runtime-spec"}
}

// skipSetting is the exit status with which a Bottlerocket settings
// generator declines: sundog leaves the setting unset (pluto or a default
// may fill it) rather than failing the boot, as it does on exit 1.
const skipSetting = 2

// nodeconfigCmd is `autonode-agent nodeconfig KEY`: one per-node setting,
// computed by agent/nodeconfig from the instance type, for the variant's
// settings generators and templates. A value that cannot be computed (EC2
// out of reach, no cluster DNS given) exits with skipSetting; only a
// malformed command line exits 1.
func nodeconfigCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := nodeconfigValue(ctx, args, stdout, stderr)
	var usage usageError
	if err == nil || errors.As(err, &usage) || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return exitCodeError{code: skipSetting, err: err}
}

// usageError is a malformed nodeconfig command line (or --help).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func nodeconfigValue(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("autonode-agent nodeconfig", flag.ContinueOnError)
	fs.SetOutput(stderr)
	instanceType := fs.String("instance-type", "", "Instance `type`; empty asks the instance metadata service.")
	prefixDelegation := fs.Bool("prefix-delegation", false, "Count /28 prefixes per ENI slot for max-pods (Nitro types only).")
	region := fs.String("region", "", "AWS `region` of the EC2 API; empty uses the SDK's chain (AWS_REGION, then IMDS).")
	endpoint := fs.String("ec2-endpoint", "", "EC2 API `URL`; empty uses the region's.")
	nodeLocalDNS := fs.String("node-local-dns", "169.254.20.10", "The agent's node-local DNS `address`, listed first in cluster-dns-ip.")
	clusterDNS := fs.String("cluster-dns", "", "Comma-separated cluster DNS Service `addresses` (the kube-dns ClusterIP).")
	sandboxImage := fs.String("sandbox-image", "", "The pause `image` containerd pins (containerd-config).")
	cniBinDir := fs.String("cni-bin-dir", "/opt/cni/bin", "`Folder` holding autonode-cni (containerd-config).")
	cniConfDir := fs.String("cni-conf-dir", "/etc/cni/net.d", "`Folder` holding autonode's CNI conflist (containerd-config).")
	baseSpec := fs.String("base-runtime-spec", "/etc/containerd/autonode-base-spec.json", "`Path` of base-runtime-spec's output (containerd-config).")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: autonode-agent nodeconfig KEY [flags]\n\n")
		fmt.Fprintf(stderr, "Prints one per-node setting as JSON (containerd-config as TOML), for settings generators.\n")
		fmt.Fprintf(stderr, "KEY is one of: %s.\n\nFlags:\n", strings.Join(nodeconfigKeys(), ", "))
		fs.PrintDefaults()
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if err := fs.Parse(args); err != nil {
			return usageError{err}
		}
		fs.Usage()
		return usageError{errors.New("nodeconfig: a KEY is required")}
	}
	key := args[0]
	if !slices.Contains(nodeconfigKeys(), key) {
		fs.Usage()
		return usageError{fmt.Errorf("nodeconfig: unknown key %q", key)}
	}
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	dns, err := dnsAddresses(*nodeLocalDNS, *clusterDNS)
	if err != nil {
		return fmt.Errorf("nodeconfig: %w", err)
	}

	var value any
	switch key {
	case "eviction-hard":
		value = nodeconfig.EvictionHard()
	case "cluster-dns-ip":
		if len(dns) < 2 {
			// The cache needs an upstream: without one, leave the setting to
			// pluto, which lists the cluster DNS Service alone.
			return errors.New("nodeconfig cluster-dns-ip: no --cluster-dns upstream given")
		}
		value = dns
	case "containerd-config":
		out, err := nodeconfig.Containerd(nodeconfig.ContainerdInputs{SandboxImage: *sandboxImage, CNIBinDir: *cniBinDir, CNIConfDir: *cniConfDir, BaseRuntimeSpec: *baseSpec})
		if err != nil {
			return fmt.Errorf("nodeconfig: %w", err)
		}
		_, err = stdout.Write(out)
		return err
	case "base-runtime-spec":
		out, err := nodeconfig.BaseRuntimeSpec(ctx)
		if err != nil {
			return fmt.Errorf("nodeconfig: %w", err)
		}
		_, err = fmt.Fprintf(stdout, "%s\n", out)
		return err
	default: // the keys that depend on the instance type
		client, err := newEC2Client(ctx, *region, *endpoint)
		if err != nil {
			return fmt.Errorf("nodeconfig: %w", err)
		}
		if *instanceType == "" {
			if *instanceType, err = imdsInstanceType(ctx); err != nil {
				return fmt.Errorf("nodeconfig: %w (or pass --instance-type)", err)
			}
		}
		limits, err := nodeconfig.DescribeLimits(ctx, client, *instanceType)
		if err != nil {
			return fmt.Errorf("nodeconfig: %w", err)
		}
		kubelet, err := nodeconfig.Kubelet(nodeconfig.KubeletInputs{Limits: limits, MaxPods: nodeconfig.MaxPodsOptions{PrefixDelegation: *prefixDelegation}})
		if err != nil {
			return fmt.Errorf("nodeconfig: %w", err)
		}
		kubelet.ClusterDNS = dns
		switch key {
		case "max-pods":
			value = kubelet.MaxPods
		case "kube-reserved":
			value = kubelet.KubeReserved
		case "kubelet-config":
			value = kubelet
		}
	}
	out, err := json.Marshal(value)
	if err != nil {
		return fmt.Errorf("nodeconfig %s: %w", key, err)
	}
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

// dnsAddresses lists the node-local resolver first, then the cluster DNS
// Services, so pods fall back to the Service while the agent restarts.
func dnsAddresses(nodeLocal, cluster string) ([]string, error) {
	var out []string
	for _, s := range append([]string{nodeLocal}, strings.Split(cluster, ",")...) {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("DNS address %q: %w", s, err)
		}
		out = append(out, a.String())
	}
	return out, nil
}

// newEC2Client builds an EC2 client from the SDK's default chain.
func newEC2Client(ctx context.Context, region, endpoint string) (*ec2.Client, error) {
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region), awsconfig.WithEC2IMDSRegion())
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	return ec2.NewFromConfig(awsCfg, func(o *ec2.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	}), nil
}

// imdsInstanceType asks the instance metadata service (IMDSv2) for this
// instance's type.
func imdsInstanceType(ctx context.Context) (string, error) {
	out, err := imds.New(imds.Options{EnableFallback: aws.FalseTernary}).GetMetadata(ctx, &imds.GetMetadataInput{Path: "instance-type"})
	if err != nil {
		return "", fmt.Errorf("instance type from IMDS: %w", err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(io.LimitReader(out.Content, 256))
	if err != nil {
		return "", fmt.Errorf("instance type from IMDS: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
