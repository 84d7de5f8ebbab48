package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/autonode/autonode/agent/config"
	"github.com/autonode/autonode/agent/instance"
	"github.com/autonode/autonode/agent/nodeconfig"
	"github.com/autonode/autonode/agent/storage/csi"
	"github.com/autonode/autonode/agent/storage/ebs"
	"github.com/autonode/autonode/agent/subsystem"
	"github.com/autonode/autonode/health"
)

// newCSI builds the EBS CSI node service and the EBS locator it shares with
// the volume metrics. The service finds volumes through the locator (NVMe
// Identify and the serial check) and reports, as its volume limit, what the
// instance type's EbsInfo leaves beside the root volume, the ENIs and the
// instance-store disks. The locator also runs on its own, keeping the
// /dev/disk/autonode links current; it is optional, since a failed scan must
// not hold the node's readiness.
func newCSI(cfg config.Config, id instance.Identity, awsCfg aws.Config, version string, logger *slog.Logger, registry prometheus.Registerer) ([]subsystem.Spec, error) {
	c := cfg.Storage.CSI
	ec2Client := ec2.NewFromConfig(awsCfg, func(o *ec2.Options) {
		if cfg.Network.EC2Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Network.EC2Endpoint)
		}
	})
	locator := ebs.NewLocator(ebs.LocatorOptions{Logger: logger})
	if err := registry.Register(ebs.NewMetrics(ebs.MetricsOptions{Volumes: locator, Logger: logger})); err != nil {
		return nil, fmt.Errorf("registering EBS volume metrics: %w", err)
	}
	driver, err := csi.New(csi.Options{
		DriverName:      c.DriverName,
		Version:         version,
		NodeID:          id.InstanceID,
		Zone:            id.AvailabilityZone,
		Locator:         ebsVolumes{locator},
		VolumeLimit:     func(ctx context.Context) (int64, error) { return volumeLimit(ctx, ec2Client, id.InstanceType) },
		Endpoint:        c.Endpoint,
		RegistrationDir: c.RegistrationDir,
		Logger:          logger,
	})
	if err != nil {
		return nil, err
	}
	return []subsystem.Spec{
		{Subsystem: locator, Optional: true},
		{Subsystem: driver, Condition: health.StorageReady},
	}, nil
}

// volumeLimit asks EC2 for the instance type and computes the CSI
// max_volumes_per_node with nodeconfig.AttachmentLimit.
func volumeLimit(ctx context.Context, api nodeconfig.InstanceTypesAPI, instanceType string) (int64, error) {
	info, err := nodeconfig.DescribeInstanceType(ctx, api, instanceType)
	if err != nil {
		return 0, err
	}
	limits, err := nodeconfig.LimitsFromEC2(info)
	if err != nil {
		return 0, err
	}
	n, err := nodeconfig.AttachmentLimit(info, nodeconfig.AttachmentInputs{
		ENIs:               int(limits.ENIs),
		InstanceStoreDisks: nvmeInstanceStoreDisks(info),
	})
	return int64(n), err
}

// nvmeInstanceStoreDisks counts the instance-store disks that appear as NVMe
// devices, the ones that take attachment slots.
func nvmeInstanceStoreDisks(info types.InstanceTypeInfo) int {
	s := info.InstanceStorageInfo
	if s == nil || s.NvmeSupport == types.EphemeralNvmeSupportUnsupported {
		return 0
	}
	n := 0
	for _, d := range s.Disks {
		if d.Count != nil {
			n += int(*d.Count)
		}
	}
	return n
}

// ebsVolumes gives the EBS locator the CSI driver's contract: a volume that
// is not attached here, or an id that names no EBS volume, is
// fs.ErrNotExist (the CSI NOT_FOUND).
type ebsVolumes struct{ *ebs.Locator }

func (v ebsVolumes) Locate(ctx context.Context, volumeID string) (string, error) {
	if !ebs.ValidVolumeID(volumeID) {
		return "", fmt.Errorf("%q is not an EBS volume id: %w", volumeID, fs.ErrNotExist)
	}
	dev, err := v.Locator.Locate(ctx, volumeID)
	if errors.Is(err, ebs.ErrVolumeNotFound) {
		return "", fmt.Errorf("%w (%w)", err, fs.ErrNotExist)
	}
	return dev, err
}
