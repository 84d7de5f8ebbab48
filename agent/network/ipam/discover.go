package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/autonode/autonode/agent/nodeconfig"
)

// start learns the instance, its limits and ENIs, and loads the checkpoint.
// It may be called again after a failure.
func (p *Pool) start(ctx context.Context) error {
	p.recMu.Lock()
	defer p.recMu.Unlock()
	p.mu.Lock()
	started := p.started
	p.mu.Unlock()
	if started {
		return nil
	}
	p.instanceID = p.cfg.InstanceID
	if p.instanceID == "" {
		id, err := p.metadata(ctx, "instance-id")
		if err != nil {
			return err
		}
		p.instanceID = id
	}
	p.limits = p.cfg.Limits
	if p.limits.ENIs == 0 {
		typ := p.cfg.InstanceType
		if typ == "" {
			t, err := p.metadata(ctx, "instance-type")
			if err != nil {
				return err
			}
			typ = t
		}
		var err error
		if p.limits, err = nodeconfig.DescribeLimits(ctx, p.cfg.EC2, typ); err != nil {
			return err
		}
	}
	if p.cfg.PrefixDelegation && !p.limits.Nitro {
		return fmt.Errorf("instance type %s: %w", p.limits.Name, nodeconfig.ErrNoPrefixDelegation)
	}
	view, err := p.describeOwn(ctx)
	if err != nil {
		return err
	}
	c, corrupt, cerr := p.readCheckpoint()
	if cerr != nil && !corrupt {
		return cerr
	}
	if corrupt {
		p.report(ctx, "IPAMCheckpointCorrupt", cerr.Error()+"; kept aside, rebuilding from the runtime and EC2", false)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	p.applyViewLocked(view)
	for _, e := range p.enis {
		if e.primary {
			if len(p.subnets) == 0 {
				p.subnets = []string{e.subnetID}
			}
			if len(p.groups) == 0 {
				p.groups = view.groups
			}
		}
	}
	if len(p.cfg.Subnets) > 0 {
		p.subnets = p.cfg.Subnets
	}
	if len(p.cfg.SecurityGroups) > 0 {
		p.groups = p.cfg.SecurityGroups
	}
	p.restoreLocked(c)
	if corrupt {
		// Whoever holds these addresses is unknown until the runtime says.
		for _, s := range p.slots {
			s.held = true
		}
		p.holdPending = true
	}
	if err := p.saveLocked(); err != nil {
		return err
	}
	p.lastResync = p.cfg.Now()
	p.started, p.startErr = true, nil
	p.log.Info("ipam started", "instance", p.instanceID, "instanceType", p.limits.Name, "enis", len(p.enis),
		"addresses", len(p.slots), "allocations", len(p.byKey), "prefixDelegation", p.cfg.PrefixDelegation)
	return nil
}

// ownView is what EC2 and IMDS say about the instance's ENIs.
type ownView struct {
	enis   []ec2ENI
	cidrs  map[string]netip.Prefix // subnet -> block
	groups []string                // the primary ENI's security groups
}

// describeOwn reads the instance's ENIs from IMDS and cross-checks them with
// EC2 DescribeNetworkInterfaces. EC2 is authoritative for addresses (IMDS
// lags changes by seconds); a disagreement is logged.
func (p *Pool) describeOwn(ctx context.Context) (ownView, error) {
	fromIMDS, err := p.discoverIMDS(ctx)
	if err != nil {
		return ownView{}, err
	}
	enis, err := p.describeENIs(ctx, filter("attachment.instance-id", p.instanceID))
	if err != nil {
		return ownView{}, err
	}
	v := ownView{cidrs: map[string]netip.Prefix{}}
	byID := map[string]imdsENI{}
	for _, m := range fromIMDS {
		byID[m.id] = m
		v.cidrs[m.subnetID] = m.cidr
	}
	for _, e := range enis {
		if e.device == 0 && e.card == 0 {
			v.groups = e.groups
		}
		m, ok := byID[e.id]
		switch {
		case !ok:
			p.log.Info("ENI attached per EC2 but not yet in IMDS", "eni", e.id)
		case m.device != e.device || !sameAddrs(m.ips[min(1, len(m.ips)):], e.ips) || !samePrefixes(m.prefixes, e.prefixes):
			p.log.Info("IMDS and EC2 disagree about an ENI; using EC2", "eni", e.id)
		}
		if _, ok := v.cidrs[e.subnetID]; !ok {
			c, err := p.subnetCIDR(ctx, e.subnetID)
			if err != nil {
				return ownView{}, err
			}
			v.cidrs[e.subnetID] = c
		}
	}
	for _, m := range fromIMDS {
		if !slices.ContainsFunc(enis, func(e ec2ENI) bool { return e.id == m.id }) {
			p.log.Info("ENI in IMDS but not attached per EC2; ignoring it", "eni", m.id)
		}
	}
	v.enis = enis
	return v, nil
}

func sameAddrs(a, b []netip.Addr) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(x netip.Addr) bool { return !slices.Contains(b, x) })
}

func samePrefixes(a, b []netip.Prefix) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(x netip.Prefix) bool { return !slices.Contains(b, x) })
}

// applyViewLocked makes the pool match EC2: ENIs and addresses EC2 has and
// the pool lacks are adopted as free (a crash between assigning and
// recording leaves such); those the pool has and EC2 lacks are dropped.
func (p *Pool) applyViewLocked(v ownView) {
	p.otherDevs = p.otherDevs[:0]
	seen := map[string]bool{}
	for _, x := range v.enis {
		if x.card != 0 {
			continue // pods use the default network card only, as the limits count
		}
		primary := x.device == 0
		if !primary && x.tags[TagInstanceID] != p.instanceID {
			p.otherDevs = append(p.otherDevs, x.device)
			continue
		}
		seen[x.id] = true
		e := p.enis[x.id]
		if e == nil {
			e = &eniState{id: x.id, mac: x.mac, subnetID: x.subnetID, attachmentID: x.attachmentID, device: x.device,
				cidr: v.cidrs[x.subnetID], primaryIP: x.primary, primary: primary}
			p.enis[x.id] = e
			p.log.Info("ipam uses ENI", "eni", e.id, "device", e.device, "subnet", e.subnetID, "routeTable", e.routeTable())
		}
		var goneIPs []netip.Addr
		for _, a := range e.ips {
			if !slices.Contains(x.ips, a) {
				goneIPs = append(goneIPs, a)
			}
		}
		var gonePfx []netip.Prefix
		for _, q := range e.prefixes {
			if !slices.Contains(x.prefixes, q) {
				gonePfx = append(gonePfx, q)
			}
		}
		if len(goneIPs)+len(gonePfx) > 0 {
			p.log.Warn("EC2 no longer assigns addresses the pool had; dropping them", "eni", e.id, "addresses", goneIPs, "prefixes", gonePfx)
			p.dropSlotsLocked(e, goneIPs, gonePfx)
		}
		before := len(p.slots)
		p.addSlotsLocked(e, x.ips, x.prefixes)
		if n := len(p.slots) - before; n > 0 && p.started {
			p.log.Info("adopting addresses EC2 assigns but the pool did not know", "eni", e.id, "count", n)
		}
	}
	for id, e := range p.enis {
		if !seen[id] {
			p.log.Warn("ENI no longer attached; dropping its addresses", "eni", id)
			p.dropSlotsLocked(e, slices.Clone(e.ips), slices.Clone(e.prefixes))
			delete(p.enis, id)
		}
	}
	for id, c := range v.cidrs {
		p.cidrs[id] = c
	}
}

// resync re-reads EC2's view of the instance's ENIs and applies it.
func (p *Pool) resync(ctx context.Context) error {
	view, err := p.describeOwn(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	before := len(p.byKey)
	p.applyViewLocked(view)
	p.lastResync, p.needResync = p.cfg.Now(), false
	if len(p.byKey) != before {
		return p.saveLocked()
	}
	return nil
}
