package ec2

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/autonode/autonode/sandbox/vpc"
)

// LaunchOptions configures the actions that launch and end instances:
// CreateFleet (instant fleets only), TerminateInstances, Create, Describe and
// DeleteLaunchTemplate(s), DescribeImages, DescribeSpotPriceHistory and
// DescribeSecurityGroups.
//
// Instances launched by CreateFleet start pending and turn running once
// PendingFor has passed; terminated ones go through shutting-down for
// ShuttingDownFor. States move when DescribeInstances looks, measured by Now
// against the model's own clock, so give both the same clock.
type LaunchOptions struct {
	// Now is the clock for state changes and timestamps. Default time.Now.
	Now func() time.Time
	// PendingFor is how long a new instance stays pending. Default 0: the
	// next DescribeInstances shows it running.
	PendingFor time.Duration
	// ShuttingDownFor is how long a terminating instance stays
	// shutting-down. Default 0.
	ShuttingDownFor time.Duration
	// Images are what DescribeImages serves and CreateFleet may boot.
	// Default is DefaultImages(account of the model).
	Images []Image
}

// Offering is one (instance type, zone, capacity type) pool of capacity.
type Offering struct {
	InstanceType string
	Zone         string // us-west-2a
	CapacityType string // on-demand or spot
}

// launchState is what the launch actions keep beside the VPC model.
type launchState struct {
	mu              sync.Mutex
	now             func() time.Time
	pendingFor      time.Duration
	shuttingDownFor time.Duration
	seq             uint64
	templates       []*LaunchTemplate // creation order
	images          []Image
	spotPrices      map[Offering]float64 // overrides of the derived price
	exhausted       map[Offering]bool
}

func newLaunchState(opts LaunchOptions, m *vpc.Model) *launchState {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Images == nil {
		opts.Images = DefaultImages(m.AccountID())
	}
	return &launchState{
		now: opts.Now, pendingFor: opts.PendingFor, shuttingDownFor: opts.ShuttingDownFor,
		images:     slices.Clone(opts.Images),
		spotPrices: map[Offering]float64{},
		exhausted:  map[Offering]bool{},
	}
}

func (s *Server) registerLaunchActions() {
	s.Handle("CreateFleet", s.createFleet)
	s.Handle("TerminateInstances", s.terminateInstances)
	s.Handle("CreateLaunchTemplate", s.createLaunchTemplate)
	s.Handle("DescribeLaunchTemplates", s.describeLaunchTemplates)
	s.Handle("DeleteLaunchTemplate", s.deleteLaunchTemplate)
	s.Handle("DescribeImages", s.describeImages)
	s.Handle("DescribeSpotPriceHistory", s.describeSpotPriceHistory)
	s.Handle("DescribeSecurityGroups", s.describeSecurityGroups)
}

// SetInsufficientCapacity makes an offering report InsufficientInstanceCapacity
// in CreateFleet's errorSet (on) or serve again (off). Zone "*" or capacity
// type "*" stand for every zone or both capacity types.
func (s *Server) SetInsufficientCapacity(o Offering, on bool) {
	s.launch.mu.Lock()
	defer s.launch.mu.Unlock()
	if on {
		s.launch.exhausted[o] = true
	} else {
		delete(s.launch.exhausted, o)
	}
}

// exhausted reports whether an offering has no capacity. Callers hold mu.
func (l *launchState) isExhausted(o Offering) bool {
	for _, k := range []Offering{
		o,
		{o.InstanceType, "*", o.CapacityType},
		{o.InstanceType, o.Zone, "*"},
		{o.InstanceType, "*", "*"},
	} {
		if l.exhausted[k] {
			return true
		}
	}
	return false
}

// nextID returns an id shaped like AWS's, with a 17-digit hex suffix.
func (l *launchState) nextID(prefix string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	return fmt.Sprintf("%s-0%016x", prefix, l.seq*0x9e3779b97f4a7c15>>4)
}

// advanceInstances moves instances whose pending or shutting-down time has
// passed to running or terminated.
func (s *Server) advanceInstances() error {
	now := s.launch.now()
	for _, inst := range s.model.Instances() {
		var to vpc.InstanceState
		switch {
		case inst.State == vpc.StatePending && now.Sub(inst.StateChanged) >= s.launch.pendingFor:
			to = vpc.StateRunning
		case inst.State == vpc.StateShuttingDown && now.Sub(inst.StateChanged) >= s.launch.shuttingDownFor:
			to = vpc.StateTerminated
		default:
			continue
		}
		if _, err := s.model.SetInstanceState(inst.ID, to); err != nil {
			return fmt.Errorf("instance %s: %w", inst.ID, err)
		}
	}
	return nil
}

// --- TerminateInstances ---

type xmlStateChange struct {
	InstanceID    string   `xml:"instanceId"`
	CurrentState  xmlState `xml:"currentState"`
	PreviousState xmlState `xml:"previousState"`
}

type terminateInstancesResponse struct {
	InstancesSet Items[xmlStateChange] `xml:"instancesSet"`
}

// terminateInstances starts shutting every named instance down; it is all
// or nothing on unknown ids, and terminating a terminated instance is a
// no-op that reports terminated twice, as EC2 does.
func (s *Server) terminateInstances(_ context.Context, r *Request) (any, error) {
	if err := s.advanceInstances(); err != nil {
		return nil, err
	}
	ids := r.List("InstanceId")
	if len(ids) == 0 {
		return nil, Errorf(CodeMissingParameter, "The request must contain the parameter InstanceId")
	}
	if len(ids) > 1000 {
		return nil, Errorf(CodeInvalidParameterValue, "Too many instance ids: %d, at most 1000", len(ids))
	}
	before := map[string]vpc.Instance{}
	for _, inst := range s.model.Instances() {
		before[inst.ID] = inst
	}
	if err := requireKnown(ids, func(id string) bool { _, ok := before[id]; return ok }, CodeInstanceNotFound, "instance ID"); err != nil {
		return nil, err
	}
	var out []xmlStateChange
	for _, id := range ids {
		prev := before[id].State
		cur := prev
		if prev == vpc.StatePending || prev == vpc.StateRunning || prev == vpc.StateStopped || prev == vpc.StateStopping {
			inst, err := s.model.SetInstanceState(id, vpc.StateShuttingDown)
			if err != nil {
				return nil, fmt.Errorf("terminating %s: %w", id, err)
			}
			cur = inst.State
		}
		out = append(out, xmlStateChange{
			InstanceID:    id,
			CurrentState:  xmlState{Code: cur.Code(), Name: string(cur)},
			PreviousState: xmlState{Code: prev.Code(), Name: string(prev)},
		})
	}
	return terminateInstancesResponse{InstancesSet: ItemsOf(out)}, nil
}

func lifecycle(spot bool) string {
	if spot {
		return "spot"
	}
	return "on-demand"
}
