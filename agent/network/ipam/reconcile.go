package ipam

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// reconcile is one pass: release the addresses of gone sandboxes, re-read
// EC2 and sweep leaked ENIs when due, then grow or shrink toward the targets.
func (p *Pool) reconcile(ctx context.Context) error {
	p.recMu.Lock()
	defer p.recMu.Unlock()
	var errs []error
	if err := p.reconcileSandboxes(ctx); err != nil {
		errs = append(errs, err)
	}
	p.mu.Lock()
	due := p.needResync || p.cfg.Now().Sub(p.lastResync) >= p.cfg.ResyncInterval
	p.mu.Unlock()
	if due {
		if err := p.resync(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := p.sweepLeaked(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := p.repairDeleteOnTermination(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := p.balance(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// reconcileSandboxes releases the addresses of sandboxes the runtime no
// longer runs and resolves holds left by a lost checkpoint.
func (p *Pool) reconcileSandboxes(ctx context.Context) error {
	if p.cfg.Sandboxes == nil {
		p.mu.Lock()
		if p.holdPending { // nobody to ask: nothing can be known to be live
			p.unholdLocked()
		}
		p.mu.Unlock()
		return nil
	}
	asked := p.cfg.Now()
	live, err := p.cfg.Sandboxes.Live(ctx)
	if err != nil {
		return fmt.Errorf("listing live sandboxes: %w", err)
	}
	var known map[Key]netip.Addr
	p.mu.Lock()
	pending := p.holdPending
	p.mu.Unlock()
	if sa, ok := p.cfg.Sandboxes.(SandboxAddresses); ok && pending {
		if known, err = sa.Addresses(ctx); err != nil {
			return fmt.Errorf("listing sandbox addresses: %w", err)
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	changed := false
	if p.holdPending {
		p.holdPending = false
		if known != nil {
			for k, a := range known {
				s := p.slots[a]
				if s == nil || !live[k.ContainerID] || s.alloc != nil || p.byKey[k] != nil {
					continue
				}
				e := s.eni
				s.alloc = &Allocation{Key: k, Addr: a, ENI: e.id, DeviceIndex: e.device, MAC: e.mac, RouteTable: e.routeTable(), SubnetCIDR: e.cidr}
				s.created, s.held = asked, false
				p.byKey[k] = s
				changed = true
				p.log.Info("restored allocation from the runtime", "container", k.ContainerID, "ifName", k.IfName, "addr", a)
			}
			p.unholdLocked()
		} else {
			p.holdFor = map[string]bool{}
			for id := range live {
				p.holdFor[id] = true
			}
			p.log.Warn("checkpoint lost: withholding every address until the sandboxes live now are gone", "sandboxes", len(live))
		}
	}
	if p.holdFor != nil && !slices.ContainsFunc(mapsKeys(p.holdFor), func(id string) bool { return live[id] }) {
		p.unholdLocked()
	}
	for key, s := range p.byKey {
		// An allocation made after the runtime was asked may be a sandbox
		// it did not list yet.
		if live[key.ContainerID] || s.created.After(asked) {
			continue
		}
		p.log.Info("releasing the address of a gone sandbox", "container", key.ContainerID, "ifName", key.IfName, "addr", s.addr)
		p.freeLocked(s)
		changed = true
	}
	if changed {
		return p.saveLocked()
	}
	return nil
}

func (p *Pool) unholdLocked() {
	for _, s := range p.slots {
		s.held = false
	}
	p.holdFor, p.holdPending = nil, false
}

func mapsKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func (p *Pool) repairDeleteOnTermination(ctx context.Context) error {
	p.mu.Lock()
	var todo []*eniState
	for _, e := range p.enis {
		if e.dotPending {
			todo = append(todo, e)
		}
	}
	p.mu.Unlock()
	var errs []error
	for _, e := range todo {
		if err := p.setDeleteOnTermination(ctx, e.id, e.attachmentID); err != nil {
			errs = append(errs, err)
			continue
		}
		p.mu.Lock()
		e.dotPending = false
		p.mu.Unlock()
	}
	return errors.Join(errs...)
}

// stats counts the pool's addresses for the targets.
type stats struct {
	total, assigned, cooling, held int
	avail                          int // free, not cooling, not held
	wholeFreePrefixes              int // prefixes with every address available
	availSecondary                 int // available addresses not from a prefix
}

func (p *Pool) statsLocked(now time.Time) stats {
	var st stats
	busyPrefix := map[netip.Prefix]bool{}
	prefixes := map[netip.Prefix]bool{}
	for _, s := range p.slots {
		st.total++
		switch {
		case s.alloc != nil:
			st.assigned++
		case s.held:
			st.held++
		case now.Before(s.coolUntil):
			st.cooling++
		default:
			st.avail++
			if !s.prefix.IsValid() {
				st.availSecondary++
			}
		}
		if s.prefix.IsValid() {
			prefixes[s.prefix] = true
			if !s.available(now) {
				busyPrefix[s.prefix] = true
			}
		}
	}
	st.wholeFreePrefixes = len(prefixes) - len(busyPrefix)
	return st
}

// need returns how many addresses the pool lacks and how many it could give
// back under the targets, and whether growth and release go by whole ENIs
// (WARM_ENI_TARGET). See docs/ipam.md for the semantics.
func (p *Pool) need(st stats) (short, excess int, wholeENIs bool) {
	t := p.targets
	switch {
	case t.WarmIP > 0 || t.MinimumIP > 0:
		short = max(t.WarmIP-st.avail, t.MinimumIP-st.total, 0)
		excess = max(min(st.avail-t.WarmIP, st.total-t.MinimumIP), 0)
		return short, excess, false
	case p.cfg.PrefixDelegation:
		have, want := st.wholeFreePrefixes*prefixSize+st.availSecondary, t.WarmPrefix*prefixSize
		if want == 0 && st.avail == 0 {
			want = 1
		}
		return max(want-have, 0), max(have-want, 0), false
	default:
		want := t.WarmENI * p.perENI()
		if want == 0 && st.avail == 0 {
			want = 1 // with no warm target, still obtain one address per waiting pod
		}
		return max(want-st.avail, 0), max(st.avail-want, 0), true
	}
}

// perENI is how many pod addresses one ENI holds in secondary-IP mode.
func (p *Pool) perENI() int { return int(p.limits.IPv4PerENI) - 1 }

func (p *Pool) room(e *eniState) int {
	return int(p.limits.IPv4PerENI) - 1 - len(e.ips) - len(e.prefixes)
}

// balance grows the pool to its targets or, when the excess has lasted
// ShrinkDelay, gives one batch back.
func (p *Pool) balance(ctx context.Context) error {
	p.mu.Lock()
	now := p.cfg.Now()
	short, excess, whole := p.need(p.statsLocked(now))
	if excess == 0 {
		p.excessSince = time.Time{}
	} else if p.excessSince.IsZero() {
		p.excessSince = now
	}
	shrinkDue := excess > 0 && now.Sub(p.excessSince) >= p.cfg.ShrinkDelay
	p.mu.Unlock()
	if short > 0 {
		return p.grow(ctx, short, whole)
	}
	p.clearExhausted(ctx)
	if shrinkDue {
		return p.shrink(ctx, excess, whole)
	}
	return p.deleteEmptyENI(ctx)
}

// grow obtains at least short addresses: more on ENIs with room, lowest
// device first, then on new ENIs while the instance allows more.
func (p *Pool) grow(ctx context.Context, short int, wholeENIs bool) error {
	full := map[string]bool{} // ENIs EC2 refused more on during this pass
	for short > 0 {
		p.mu.Lock()
		var e *eniState
		used := slices.Clone(p.otherDevs)
		for _, c := range p.enis {
			used = append(used, c.device)
			if !full[c.id] && p.room(c) > 0 && (e == nil || c.device < e.device) {
				e = c
			}
		}
		usePrefix := e != nil && p.cfg.PrefixDelegation && !p.inFallbackLocked(e.subnetID)
		room := 0
		if e != nil {
			room = p.room(e)
		}
		p.mu.Unlock()

		if e == nil {
			if len(used) >= int(p.limits.ENIs) {
				p.setExhausted(ctx, fmt.Sprintf("instance type %s allows %d ENIs and %d addresses each; all are in use",
					p.limits.Name, p.limits.ENIs, p.limits.IPv4PerENI))
				return nil
			}
			x, err := p.createInSubnets(ctx, nextDevice(used))
			if err != nil {
				return err
			}
			p.mu.Lock()
			ne := &eniState{id: x.id, mac: x.mac, subnetID: x.subnetID, attachmentID: x.attachmentID, device: x.device,
				cidr: p.cidrs[x.subnetID], primaryIP: x.primary, dotPending: x.dotPending}
			p.enis[ne.id] = ne
			p.mu.Unlock()
			p.log.Info("attached a new ENI", "eni", ne.id, "device", ne.device, "subnet", ne.subnetID, "routeTable", ne.routeTable())
			continue
		}

		n := min(room, short)
		switch {
		case usePrefix:
			n = min(room, (short+prefixSize-1)/prefixSize)
		case wholeENIs:
			n = room
		}
		addrs, pfxs, err := p.assign(ctx, e.id, n, usePrefix)
		switch code := errorCode(err); {
		case err == nil:
		case usePrefix && code == codeInsufficientCidrBlocks:
			p.enterFallback(ctx, e.subnetID, err)
			continue
		case code == codeInsufficientAddresses || code == codeAddressLimit:
			p.log.Warn("EC2 refused more addresses on an ENI", "eni", e.id, "err", err)
			full[e.id] = true
			if code == codeInsufficientAddresses && p.allFull(full) {
				p.setExhausted(ctx, fmt.Sprintf("subnet %s has no free addresses: %v", e.subnetID, err))
				return nil
			}
			continue
		default:
			return err
		}
		p.mu.Lock()
		before := len(p.slots)
		p.addSlotsLocked(e, addrs, pfxs)
		got := len(p.slots) - before
		p.mu.Unlock()
		short -= got
		if got == 0 {
			return fmt.Errorf("eni %s: EC2 assigned nothing", e.id)
		}
	}
	p.clearExhausted(ctx)
	return nil
}

// allFull reports whether every ENI is out of room or refused.
func (p *Pool) allFull(refused map[string]bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.enis {
		if !refused[e.id] && p.room(e) > 0 {
			return false
		}
	}
	return len(p.enis)+len(p.otherDevs) >= int(p.limits.ENIs)
}

// createInSubnets creates and attaches an ENI in the first subnet that has
// room for it.
func (p *Pool) createInSubnets(ctx context.Context, device int) (ec2ENI, error) {
	var errs []error
	for _, sn := range p.subnets {
		if _, err := p.subnetCIDR(ctx, sn); err != nil {
			errs = append(errs, err)
			continue
		}
		x, err := p.createENI(ctx, sn, device)
		if err == nil {
			return x, nil
		}
		errs = append(errs, err)
		if code := errorCode(err); code != codeInsufficientAddresses {
			break
		}
	}
	err := errors.Join(errs...)
	if errorCode(err) == codeInsufficientAddresses || errorCode(err) == codeAttachmentLimit {
		p.setExhausted(ctx, fmt.Sprintf("no new ENI can be had: %v", err))
	}
	return ec2ENI{}, err
}

func (p *Pool) inFallbackLocked(subnet string) bool {
	t, ok := p.fallback[subnet]
	return ok && p.cfg.Now().Sub(t) < p.cfg.PrefixRetry
}

// enterFallback switches a subnet whose free space is too fragmented for a
// /28 to secondary addresses until PrefixRetry passes.
func (p *Pool) enterFallback(ctx context.Context, subnet string, cause error) {
	p.mu.Lock()
	p.fallback[subnet] = p.cfg.Now()
	p.mu.Unlock()
	p.metrics.fallbacks.Inc()
	p.log.Warn("no /28 prefix free in subnet; using secondary addresses there for now", "subnet", subnet,
		"retryIn", p.cfg.PrefixRetry, "err", cause)
	p.report(ctx, "IPAMPrefixFallback", fmt.Sprintf("subnet %s has no free /28 for prefix delegation; using secondary IPs (prefixes retried in %s)",
		subnet, p.cfg.PrefixRetry), false)
}

func (p *Pool) setExhausted(ctx context.Context, msg string) {
	p.mu.Lock()
	was := p.exhausted
	p.exhausted = true
	p.mu.Unlock()
	if !was {
		p.log.Warn("pod addresses exhausted", "reason", msg)
		p.report(ctx, "IPAMExhausted", msg, false)
	}
}

func (p *Pool) clearExhausted(ctx context.Context) {
	p.mu.Lock()
	was := p.exhausted
	p.exhausted = false
	p.mu.Unlock()
	if was {
		p.log.Info("pod addresses available again")
		p.report(ctx, "IPAMExhausted", "pod addresses available again", true)
	}
}

// shrink gives back one batch within excess, from the highest device down:
// a whole ENI of ours whose addresses are all available, or (outside
// WARM_ENI_TARGET mode) the available addresses and wholly free prefixes of
// one ENI. Addresses leave the pool before EC2 is asked, so Allocate cannot
// hand them out meanwhile; a failure makes the next pass re-read EC2.
func (p *Pool) shrink(ctx context.Context, excess int, wholeENIs bool) error {
	p.mu.Lock()
	now := p.cfg.Now()
	enis := make([]*eniState, 0, len(p.enis))
	for _, e := range p.enis {
		enis = append(enis, e)
	}
	slices.SortFunc(enis, func(a, b *eniState) int { return cmp.Compare(b.device, a.device) })
	for _, e := range enis {
		var slots []*slot
		allAvail := true
		for _, s := range p.slots {
			if s.eni == e {
				slots = append(slots, s)
				allAvail = allAvail && s.available(now)
			}
		}
		if !e.primary && allAvail && len(slots) <= excess {
			ips, pfxs := p.removeENILocked(e)
			p.mu.Unlock()
			p.log.Info("releasing an ENI beyond the warm targets", "eni", e.id, "addresses", len(slots))
			return p.finishRelease(p.releaseENI(ctx, e.id, e.attachmentID, ips, pfxs))
		}
		if wholeENIs {
			continue
		}
		var addrs []netip.Addr
		var pfxs []netip.Prefix
		budget := excess
		for _, q := range e.prefixes {
			if budget >= prefixSize && p.prefixAvailLocked(q, now) {
				pfxs = append(pfxs, q)
				budget -= prefixSize
			}
		}
		for _, a := range e.ips {
			if budget > 0 && p.slots[a] != nil && p.slots[a].available(now) {
				addrs = append(addrs, a)
				budget--
			}
		}
		if len(addrs)+len(pfxs) == 0 {
			continue
		}
		p.dropSlotsLocked(e, addrs, pfxs)
		p.mu.Unlock()
		p.log.Info("releasing addresses beyond the warm targets", "eni", e.id, "addresses", addrs, "prefixes", pfxs)
		return p.finishRelease(p.unassign(ctx, e.id, addrs, pfxs))
	}
	p.mu.Unlock()
	return nil
}

func (p *Pool) prefixAvailLocked(q netip.Prefix, now time.Time) bool {
	for a := q.Masked().Addr(); q.Contains(a); a = a.Next() {
		if s := p.slots[a]; s == nil || !s.available(now) {
			return false
		}
	}
	return true
}

// removeENILocked takes an ENI and its addresses out of the pool and returns
// the addresses and prefixes it held.
func (p *Pool) removeENILocked(e *eniState) ([]netip.Addr, []netip.Prefix) {
	ips, pfxs := slices.Clone(e.ips), slices.Clone(e.prefixes)
	p.dropSlotsLocked(e, ips, pfxs)
	delete(p.enis, e.id)
	return ips, pfxs
}

func (p *Pool) finishRelease(err error) error {
	p.mu.Lock()
	p.excessSince = time.Time{} // release slowly: wait out ShrinkDelay again
	if err != nil {
		p.needResync = true
	}
	p.mu.Unlock()
	return err
}

// deleteEmptyENI releases one ENI of ours that holds no addresses at all
// (releasing its addresses one by one left it empty).
func (p *Pool) deleteEmptyENI(ctx context.Context) error {
	p.mu.Lock()
	var e *eniState
	for _, c := range p.enis {
		if !c.primary && len(c.ips)+len(c.prefixes) == 0 && (e == nil || c.device > e.device) {
			e = c
		}
	}
	if e == nil || p.cfg.Now().Sub(p.excessSince) < p.cfg.ShrinkDelay && !p.excessSince.IsZero() {
		p.mu.Unlock()
		return nil
	}
	ips, pfxs := p.removeENILocked(e)
	p.mu.Unlock()
	p.log.Info("releasing an empty ENI", "eni", e.id)
	return p.finishRelease(p.releaseENI(ctx, e.id, e.attachmentID, ips, pfxs))
}
