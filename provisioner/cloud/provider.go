package cloud

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	corev1 "k8s.io/api/core/v1"
)

// EC2API is the part of the EC2 client the provider calls; *ec2.Client
// satisfies it.
type EC2API interface {
	ec2.DescribeInstanceTypesAPIClient
	ec2.DescribeSpotPriceHistoryAPIClient
	ec2.DescribeSubnetsAPIClient
	ec2.DescribeSecurityGroupsAPIClient
	ec2.DescribeImagesAPIClient
	ec2.DescribeInstancesAPIClient
	CreateLaunchTemplate(ctx context.Context, in *ec2.CreateLaunchTemplateInput, optFns ...func(*ec2.Options)) (*ec2.CreateLaunchTemplateOutput, error)
	CreateFleet(ctx context.Context, in *ec2.CreateFleetInput, optFns ...func(*ec2.Options)) (*ec2.CreateFleetOutput, error)
	TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, optFns ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
}

// Options configures a Provider.
type Options struct {
	// EC2 is the EC2 client. Required.
	EC2 EC2API
	// Prices gives on-demand prices. Required: StaticPrices in the sandbox,
	// PricingAPI or LoadPriceFile on AWS.
	Prices PriceSource
	// Cluster is what nodes join. Required for Launch.
	Cluster Cluster
	// AMIOwner owns the autonode variant AMIs that aliases resolve to.
	// Default "self".
	AMIOwner string
	// VMMemoryOverheadPercent of nominal memory the guest does not see.
	// Default is agent/nodeconfig's (7.5).
	VMMemoryOverheadPercent float64
	// SystemReserved is held on every node for the OS. Default none.
	SystemReserved corev1.ResourceList
	// PrefixDelegation counts max-pods as the agent does with /28 prefixes.
	PrefixDelegation bool
	// MaxFleetTypes is how many of the cheapest types one CreateFleet
	// offers EC2. Default 60.
	MaxFleetTypes int
	// UnavailableTTL is how long an offering that reported no capacity is
	// left out. Default 3m.
	UnavailableTTL time.Duration
	// RefreshInterval is how often Run reloads types and prices. Default 5m.
	RefreshInterval time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger. Default discards.
	Logger *slog.Logger
}

// Provider lists, launches and terminates instances for one cluster. It is
// safe for concurrent use.
type Provider struct {
	opts Options

	mu          sync.Mutex
	types       []typeInfo
	onDemand    map[string]float64
	spot        map[string]map[string]float64 // type -> zone -> price
	refreshed   bool
	unavailable map[offeringKey]time.Time // until when
	templates   map[string]bool           // launch template names known to exist
}

type offeringKey struct{ instanceType, zone, capacityType string }

// New checks opts and fills in defaults.
func New(opts Options) (*Provider, error) {
	if opts.EC2 == nil || opts.Prices == nil {
		return nil, errors.New("cloud provider: EC2 client and price source are required")
	}
	opts.AMIOwner = cmp.Or(opts.AMIOwner, "self")
	opts.MaxFleetTypes = cmp.Or(opts.MaxFleetTypes, 60)
	opts.UnavailableTTL = cmp.Or(opts.UnavailableTTL, 3*time.Minute)
	opts.RefreshInterval = cmp.Or(opts.RefreshInterval, 5*time.Minute)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Provider{opts: opts, unavailable: map[offeringKey]time.Time{}, templates: map[string]bool{}}, nil
}

// Run refreshes types and prices at once and then every RefreshInterval,
// until ctx ends. A failed refresh is logged and keeps the last good data.
func (p *Provider) Run(ctx context.Context) error {
	t := time.NewTicker(p.opts.RefreshInterval)
	defer t.Stop()
	for {
		if err := p.Refresh(ctx); err != nil && ctx.Err() == nil {
			p.opts.Logger.ErrorContext(ctx, "refreshing instance types and prices", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Refresh reloads instance types, on-demand prices and spot prices.
func (p *Provider) Refresh(ctx context.Context) error {
	types, err := describeInstanceTypes(ctx, p.opts.EC2)
	if err != nil {
		return err
	}
	onDemand, err := p.opts.Prices.OnDemandPrices(ctx)
	if err != nil {
		return fmt.Errorf("on-demand prices: %w", err)
	}
	spot, err := p.spotPrices(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.types, p.onDemand, p.spot, p.refreshed = types, onDemand, spot, true
	return nil
}

// spotPrices reads the current spot price of every type in every zone: the
// newest entry of DescribeSpotPriceHistory from now on.
func (p *Provider) spotPrices(ctx context.Context) (map[string]map[string]float64, error) {
	type stamped struct {
		price float64
		at    time.Time
	}
	latest := map[offeringKey]stamped{}
	pages := ec2.NewDescribeSpotPriceHistoryPaginator(p.opts.EC2, &ec2.DescribeSpotPriceHistoryInput{
		ProductDescriptions: []string{"Linux/UNIX"},
		StartTime:           aws.Time(p.opts.Now()),
	})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describing spot prices: %w", err)
		}
		for _, sp := range page.SpotPriceHistory {
			var price float64
			if _, err := fmt.Sscan(aws.ToString(sp.SpotPrice), &price); err != nil || price <= 0 {
				continue
			}
			k := offeringKey{string(sp.InstanceType), aws.ToString(sp.AvailabilityZone), "spot"}
			at := aws.ToTime(sp.Timestamp)
			if cur, ok := latest[k]; !ok || at.After(cur.at) {
				latest[k] = stamped{price, at}
			}
		}
	}
	out := map[string]map[string]float64{}
	for k, v := range latest {
		if out[k.instanceType] == nil {
			out[k.instanceType] = map[string]float64{}
		}
		out[k.instanceType][k.zone] = v.price
	}
	return out, nil
}

// ensureRefreshed loads types and prices on first use.
func (p *Provider) ensureRefreshed(ctx context.Context) error {
	p.mu.Lock()
	done := p.refreshed
	p.mu.Unlock()
	if done {
		return nil
	}
	return p.Refresh(ctx)
}

// InstanceTypes lists what a NodeClass can launch, sorted by name: every
// type with an AMI for its architecture and a computable allocatable, with
// an offering per zone of the class's subnets and capacity type the type
// supports and has a price for. Offerings left out after a capacity error
// are listed with Available false.
func (p *Provider) InstanceTypes(ctx context.Context, class *ResolvedNodeClass) ([]*InstanceType, error) {
	if err := p.ensureRefreshed(ctx); err != nil {
		return nil, err
	}
	zones := class.Zones()
	now := p.opts.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*InstanceType
	for _, ti := range p.types {
		if ti.unsupported != "" {
			continue
		}
		if _, ok := class.AMIs[ti.arch]; !ok {
			continue
		}
		capacity, allocatable, err := p.resources(ti, class)
		if err != nil {
			p.opts.Logger.Debug("instance type left out", "instance_type", ti.name, "err", err)
			continue
		}
		it := &InstanceType{Name: ti.name, Arch: ti.arch, Labels: ti.labels, Capacity: capacity, Allocatable: allocatable}
		for _, zone := range zones {
			for _, ct := range ti.usage {
				var price float64
				switch ct {
				case "on-demand":
					price = p.onDemand[ti.name]
				case "spot":
					price = p.spot[ti.name][zone]
				}
				if price <= 0 {
					continue
				}
				until, marked := p.unavailable[offeringKey{ti.name, zone, ct}]
				it.Offerings = append(it.Offerings, Offering{Zone: zone, CapacityType: ct, Price: price, Available: !marked || !now.Before(until)})
			}
		}
		if len(it.Offerings) > 0 {
			out = append(out, it)
		}
	}
	slices.SortFunc(out, func(a, b *InstanceType) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// markUnavailable leaves an offering out for UnavailableTTL.
func (p *Provider) markUnavailable(k offeringKey) {
	now := p.opts.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, until := range p.unavailable {
		if !now.Before(until) {
			delete(p.unavailable, key)
		}
	}
	p.unavailable[k] = now.Add(p.opts.UnavailableTTL)
}
