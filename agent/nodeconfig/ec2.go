package nodeconfig

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// InstanceTypesAPI is the EC2 call DescribeLimits makes.
type InstanceTypesAPI interface {
	DescribeInstanceTypes(ctx context.Context, in *ec2.DescribeInstanceTypesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstanceTypesOutput, error)
}

// DescribeLimits asks EC2 for the limits of one instance type.
func DescribeLimits(ctx context.Context, api InstanceTypesAPI, instanceType string) (InstanceLimits, error) {
	info, err := DescribeInstanceType(ctx, api, instanceType)
	if err != nil {
		return InstanceLimits{Name: instanceType}, err
	}
	return LimitsFromEC2(info)
}

// DescribeInstanceType asks EC2 for everything it knows of one instance type.
func DescribeInstanceType(ctx context.Context, api InstanceTypesAPI, instanceType string) (types.InstanceTypeInfo, error) {
	out, err := api.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{
		InstanceTypes: []types.InstanceType{types.InstanceType(instanceType)},
	})
	if err != nil {
		return types.InstanceTypeInfo{}, fmt.Errorf("describing instance type %s: %w", instanceType, err)
	}
	if len(out.InstanceTypes) != 1 {
		return types.InstanceTypeInfo{}, fmt.Errorf("describing instance type %s: %d answers, want 1", instanceType, len(out.InstanceTypes))
	}
	return out.InstanceTypes[0], nil
}
