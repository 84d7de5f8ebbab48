package cloud

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	v1 "github.com/autonode/autonode/provisioner/apis/v1"
)

// Instance is an EC2 instance the provider launched.
type Instance struct {
	ID           string
	Type         string
	Zone         string
	CapacityType string // on-demand or spot
	ImageID      string
	State        string // pending, running, shutting-down, ...
	LaunchTime   time.Time
	Tags         map[string]string
}

// ProviderID is the Node's spec.providerID for the instance.
func (i *Instance) ProviderID() string { return ProviderID(i.Zone, i.ID) }

// NodeClaim is the name of the NodeClaim the instance was launched for.
func (i *Instance) NodeClaim() string { return i.Tags[v1.TagNodeClaim] }

// ProviderID formats aws:///<zone>/<instance-id>.
func ProviderID(zone, id string) string { return "aws:///" + zone + "/" + id }

// ParseProviderID splits aws:///<zone>/<instance-id>.
func ParseProviderID(providerID string) (zone, id string, err error) {
	rest, ok := strings.CutPrefix(providerID, "aws:///")
	zone, id, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || zone == "" || !strings.HasPrefix(id, "i-") || strings.Contains(id, "/") {
		return "", "", fmt.Errorf("provider id %q: want aws:///<zone>/<instance-id>", providerID)
	}
	return zone, id, nil
}

func instanceFrom(i types.Instance) *Instance {
	out := &Instance{
		ID: aws.ToString(i.InstanceId), Type: string(i.InstanceType), ImageID: aws.ToString(i.ImageId),
		CapacityType: v1.CapacityTypeOnDemand, LaunchTime: aws.ToTime(i.LaunchTime), Tags: map[string]string{},
	}
	if i.Placement != nil {
		out.Zone = aws.ToString(i.Placement.AvailabilityZone)
	}
	if i.State != nil {
		out.State = string(i.State.Name)
	}
	if i.InstanceLifecycle == types.InstanceLifecycleTypeSpot {
		out.CapacityType = v1.CapacityTypeSpot
	}
	for _, t := range i.Tags {
		out.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return out
}

func isCode(err error, codes ...string) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	for _, c := range codes {
		if ae.ErrorCode() == c {
			return true
		}
	}
	return false
}

// Get returns an instance by id; ErrInstanceNotFound once it is terminated
// or unknown.
func (p *Provider) Get(ctx context.Context, id string) (*Instance, error) {
	out, err := p.opts.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if isCode(err, "InvalidInstanceID.NotFound") {
		return nil, fmt.Errorf("instance %s: %w", id, ErrInstanceNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("describing instance %s: %w", id, err)
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			if aws.ToString(i.InstanceId) == id && i.State != nil && i.State.Name != types.InstanceStateNameTerminated {
				return instanceFrom(i), nil
			}
		}
	}
	return nil, fmt.Errorf("instance %s: %w", id, ErrInstanceNotFound)
}

// List returns the cluster's instances that are not terminated: every
// instance tagged autonode.dev/cluster with the cluster's name, for garbage
// collection against NodeClaims.
func (p *Provider) List(ctx context.Context) ([]*Instance, error) {
	var out []*Instance
	pages := ec2.NewDescribeInstancesPaginator(p.opts.EC2, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{
			{Name: aws.String("tag:" + v1.TagCluster), Values: []string{p.opts.Cluster.Name}},
			{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped", "shutting-down"}},
		},
		MaxResults: aws.Int32(1000),
	})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing cluster %s instances: %w", p.opts.Cluster.Name, err)
		}
		for _, r := range page.Reservations {
			for _, i := range r.Instances {
				out = append(out, instanceFrom(i))
			}
		}
	}
	return out, nil
}

// Terminate asks EC2 to terminate an instance. It returns
// ErrInstanceNotFound when the instance is unknown or already terminated, so
// a finalizer can tell "gone" from "going".
func (p *Provider) Terminate(ctx context.Context, id string) error {
	out, err := p.opts.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	if isCode(err, "InvalidInstanceID.NotFound") {
		return fmt.Errorf("instance %s: %w", id, ErrInstanceNotFound)
	}
	if err != nil {
		return fmt.Errorf("terminating instance %s: %w", id, err)
	}
	for _, c := range out.TerminatingInstances {
		if aws.ToString(c.InstanceId) == id && c.PreviousState != nil && c.PreviousState.Name == types.InstanceStateNameTerminated {
			return fmt.Errorf("instance %s: %w", id, ErrInstanceNotFound)
		}
	}
	return nil
}
