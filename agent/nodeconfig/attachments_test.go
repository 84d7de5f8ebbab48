package nodeconfig

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	ec2emu "github.com/autonode/autonode/sandbox/ec2"
	"github.com/autonode/autonode/sandbox/vpc"
)

func TestAttachmentLimit(t *testing.T) {
	shared := func(n int32) *types.EbsInfo {
		return &types.EbsInfo{MaximumEbsAttachments: aws.Int32(n), AttachmentLimitType: types.AttachmentLimitTypeShared}
	}
	nitro := types.InstanceTypeHypervisorNitro
	tests := []struct {
		name string
		info types.InstanceTypeInfo
		in   AttachmentInputs
		want int
		bad  bool
	}{
		{"shared: root, ENIs and disks take slots", types.InstanceTypeInfo{Hypervisor: nitro, EbsInfo: shared(28)}, AttachmentInputs{ENIs: 3, InstanceStoreDisks: 1}, 23, false},
		{"dedicated: only the root volume", types.InstanceTypeInfo{Hypervisor: nitro, EbsInfo: &types.EbsInfo{MaximumEbsAttachments: aws.Int32(32), AttachmentLimitType: types.AttachmentLimitTypeDedicated}}, AttachmentInputs{ENIs: 3}, 31, false},
		{"nitro without EbsInfo: shared 28", types.InstanceTypeInfo{Hypervisor: nitro}, AttachmentInputs{ENIs: 4}, 23, false},
		{"xen without EbsInfo: 39 EBS volumes", types.InstanceTypeInfo{Hypervisor: types.InstanceTypeHypervisorXen}, AttachmentInputs{ENIs: 4}, 38, false},
		{"no limit type given: shared", types.InstanceTypeInfo{Hypervisor: nitro, EbsInfo: &types.EbsInfo{MaximumEbsAttachments: aws.Int32(28)}}, AttachmentInputs{ENIs: 2}, 25, false},
		{"no room", types.InstanceTypeInfo{Hypervisor: nitro, EbsInfo: shared(28)}, AttachmentInputs{ENIs: 15, InstanceStoreDisks: 13}, 0, true},
		{"negative ENIs", types.InstanceTypeInfo{Hypervisor: nitro}, AttachmentInputs{ENIs: -1}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AttachmentLimit(tt.info, tt.in)
			if (err != nil) != tt.bad || got != tt.want {
				t.Errorf("AttachmentLimit() = %d, %v; want %d (error %v)", got, err, tt.want, tt.bad)
			}
		})
	}
}

// TestAttachmentLimitFromEmulator reads EbsInfo for a handful of types
// through the real SDK, as the CSI node service does at start.
func TestAttachmentLimitFromEmulator(t *testing.T) {
	model, err := vpc.New(vpc.Config{})
	if err != nil {
		t.Fatal(err)
	}
	emulator, err := ec2emu.New(ec2emu.Options{Model: model})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emulator)
	t.Cleanup(srv.Close)
	client := ec2.New(ec2.Options{Region: "us-west-2", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")})

	tests := []struct {
		name       string
		enis       int
		disks      int
		want       int
		limitType  types.AttachmentLimitType
		maxAttachs int32
	}{
		{"m5.large", 3, 0, 24, types.AttachmentLimitTypeShared, 28},
		{"m5d.large", 3, 1, 23, types.AttachmentLimitTypeShared, 28},
		{"m7i.large", 3, 0, 31, types.AttachmentLimitTypeDedicated, 32},
		{"m5.metal", 15, 0, 15, types.AttachmentLimitTypeShared, 31},
	}
	for _, tt := range tests {
		out, err := client.DescribeInstanceTypes(context.Background(), &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{types.InstanceType(tt.name)}})
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if len(out.InstanceTypes) != 1 {
			t.Fatalf("%s: %d types", tt.name, len(out.InstanceTypes))
		}
		info := out.InstanceTypes[0]
		if e := info.EbsInfo; e == nil || e.AttachmentLimitType != tt.limitType || aws.ToInt32(e.MaximumEbsAttachments) != tt.maxAttachs {
			t.Errorf("%s: EbsInfo %+v, want %s %d", tt.name, info.EbsInfo, tt.limitType, tt.maxAttachs)
		}
		got, err := AttachmentLimit(info, AttachmentInputs{ENIs: tt.enis, InstanceStoreDisks: tt.disks})
		if err != nil || got != tt.want {
			t.Errorf("%s: AttachmentLimit = %d, %v; want %d", tt.name, got, err, tt.want)
		}
	}
}
