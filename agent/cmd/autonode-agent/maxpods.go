package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/autonode/autonode/agent/nodeconfig"
)

// maxPods is `autonode-agent max-pods`: it prints the kubelet max-pods for an
// instance type, for the settings generators of the Bottlerocket variant.
func maxPods(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("autonode-agent max-pods", flag.ContinueOnError)
	fs.SetOutput(stderr)
	instanceType := fs.String("instance-type", "", "Instance `type` to compute max-pods for (required).")
	prefixDelegation := fs.Bool("prefix-delegation", false, "Count /28 prefixes per ENI slot (Nitro types only).")
	uncapped := fs.Bool("uncapped", false, "Print the raw formula, without EKS's cap of 110 (30 vCPUs or fewer) or 250.")
	region := fs.String("region", "", "AWS `region` of the EC2 API; empty uses the SDK's chain (AWS_REGION, then IMDS).")
	endpoint := fs.String("ec2-endpoint", "", "EC2 API `URL`; empty uses the region's.")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: autonode-agent max-pods --instance-type TYPE [flags]\n\n")
		fmt.Fprintf(stderr, "Prints the kubelet max-pods: ENIs x (IPv4 per ENI - 1) + 2, or with prefix delegation\n")
		fmt.Fprintf(stderr, "ENIs x (IPv4 per ENI - 1) x 16 + 2, from EC2 DescribeInstanceTypes.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *instanceType == "" {
		fs.Usage()
		return errors.New("max-pods: --instance-type is required")
	}
	client, err := newEC2Client(ctx, *region, *endpoint)
	if err != nil {
		return fmt.Errorf("max-pods: %w", err)
	}
	limits, err := nodeconfig.DescribeLimits(ctx, client, *instanceType)
	if err != nil {
		return fmt.Errorf("max-pods: %w", err)
	}
	n, err := nodeconfig.MaxPods(limits, nodeconfig.MaxPodsOptions{PrefixDelegation: *prefixDelegation, Uncapped: *uncapped})
	if err != nil {
		return fmt.Errorf("max-pods: %w", err)
	}
	_, err = fmt.Fprintln(stdout, n)
	return err
}
