package nodeconfig

import (
	"errors"
	"strconv"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func TestMaxPods(t *testing.T) {
	m5large := InstanceLimits{Name: "m5.large", VCPUs: 2, ENIs: 3, IPv4PerENI: 10, Nitro: true}
	m5_24xl := InstanceLimits{Name: "m5.24xlarge", VCPUs: 96, ENIs: 15, IPv4PerENI: 50, Nitro: true}
	c4large := InstanceLimits{Name: "c4.large", VCPUs: 2, ENIs: 3, IPv4PerENI: 10}
	tests := []struct {
		name   string
		limits InstanceLimits
		opts   MaxPodsOptions
		want   int
		err    error
	}{
		{"eni formula", m5large, MaxPodsOptions{}, 29, nil},
		{"prefix delegation capped at 110", m5large, MaxPodsOptions{PrefixDelegation: true}, 110, nil},
		{"prefix delegation uncapped", m5large, MaxPodsOptions{PrefixDelegation: true, Uncapped: true}, 3*9*16 + 2, nil},
		{"large node capped at 250", m5_24xl, MaxPodsOptions{}, 250, nil},
		{"large node uncapped", m5_24xl, MaxPodsOptions{Uncapped: true}, 737, nil},
		{"xen has no prefix delegation", c4large, MaxPodsOptions{PrefixDelegation: true}, 0, ErrNoPrefixDelegation},
		{"xen eni formula", c4large, MaxPodsOptions{}, 29, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MaxPods(tt.limits, tt.opts)
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Errorf("MaxPods() = %d, %v; want %d, %v", got, err, tt.want, tt.err)
			}
		})
	}
	if _, err := MaxPods(InstanceLimits{Name: "x", ENIs: 0, IPv4PerENI: 10}, MaxPodsOptions{}); err == nil {
		t.Error("MaxPods with no ENIs succeeded")
	}
}

// TestMaxPodsMatchesVPCCNIForEveryType checks the uncapped ENI formula
// against the max_pods_eni column of the shared instance table, which equals
// Karpenter's and the VPC CNI's figure for every type.
func TestMaxPodsMatchesVPCCNIForEveryType(t *testing.T) {
	atoi := func(row map[string]string, name string) (int, bool) {
		n, err := strconv.Atoi(row[name])
		return n, err == nil
	}
	checked := 0
	for _, row := range instanceTable(t) {
		enis, ok1 := atoi(row, "enis")
		ips, ok2 := atoi(row, "ipv4_per_eni")
		want, ok3 := atoi(row, "max_pods_eni")
		vcpus, _ := atoi(row, "vcpu")
		if !ok1 || !ok2 || !ok3 {
			continue // the table states no ENI limits for this type
		}
		l := InstanceLimits{Name: row["name"], VCPUs: int32(vcpus), ENIs: int32(enis), IPv4PerENI: int32(ips)}
		got, err := MaxPods(l, MaxPodsOptions{Uncapped: true})
		if err != nil || got != want {
			t.Errorf("%s: MaxPods = %d, %v; table says %d", l.Name, got, err, want)
		}
		checked++
	}
	if checked < 1300 {
		t.Errorf("checked %d types, want every row with ENI data (1300+)", checked)
	}
	t.Logf("uncapped ENI formula matches max_pods_eni for %d instance types", checked)
}

func TestLimitsFromEC2(t *testing.T) {
	p4d := types.InstanceTypeInfo{
		InstanceType: "p4d.24xlarge",
		VCpuInfo:     &types.VCpuInfo{DefaultVCpus: aws.Int32(96)},
		Hypervisor:   types.InstanceTypeHypervisorNitro,
		NetworkInfo: &types.NetworkInfo{
			MaximumNetworkInterfaces:  aws.Int32(60),
			Ipv4AddressesPerInterface: aws.Int32(50),
			DefaultNetworkCardIndex:   aws.Int32(0),
			NetworkCards: []types.NetworkCardInfo{
				{NetworkCardIndex: aws.Int32(0), MaximumNetworkInterfaces: aws.Int32(15)},
				{NetworkCardIndex: aws.Int32(1), MaximumNetworkInterfaces: aws.Int32(15)},
			},
		},
	}
	l, err := LimitsFromEC2(p4d)
	if err != nil {
		t.Fatal(err)
	}
	if l != (InstanceLimits{Name: "p4d.24xlarge", VCPUs: 96, ENIs: 15, IPv4PerENI: 50, Nitro: true}) {
		t.Errorf("LimitsFromEC2(p4d) = %+v, want the default card's 15 ENIs", l)
	}
	metal := types.InstanceTypeInfo{
		InstanceType: "m5.metal", BareMetal: aws.Bool(true),
		VCpuInfo:    &types.VCpuInfo{DefaultVCpus: aws.Int32(96)},
		NetworkInfo: &types.NetworkInfo{MaximumNetworkInterfaces: aws.Int32(15), Ipv4AddressesPerInterface: aws.Int32(50)},
	}
	if l, err := LimitsFromEC2(metal); err != nil || !l.Nitro || l.ENIs != 15 {
		t.Errorf("LimitsFromEC2(m5.metal) = %+v, %v; want Nitro with 15 ENIs", l, err)
	}
	if _, err := LimitsFromEC2(types.InstanceTypeInfo{InstanceType: "x"}); err == nil {
		t.Error("LimitsFromEC2 without vCPU or network info succeeded")
	}
}
