// Package cnitest provides an in-memory Allocator for tests of the CNI
// backend: it hands out addresses from one prefix, in order, with no ENIs or
// EC2 behind it. The real IPAM pool replaces it in the agent.
package cnitest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/autonode/autonode/agent/network/ipam"
)

// Allocator is an in-memory cni.Allocator. Allocations carry the fields of
// Template (ENI, MAC, RouteTable, SubnetCIDR), so tests choose whether pods
// live on the primary ENI or a secondary one.
type Allocator struct {
	prefix   netip.Prefix
	template ipam.Allocation

	mu       sync.Mutex
	byKey    map[ipam.Key]ipam.Allocation
	used     map[netip.Addr]bool
	next     netip.Addr
	blockErr error
}

// NewAllocator hands out the host addresses of prefix (the network address
// and, for IPv4, the broadcast address excluded), with template's ENI fields.
func NewAllocator(prefix netip.Prefix, template ipam.Allocation) *Allocator {
	prefix = prefix.Masked()
	return &Allocator{
		prefix: prefix, template: template,
		byKey: map[ipam.Key]ipam.Allocation{}, used: map[netip.Addr]bool{},
		next: prefix.Addr().Next(),
	}
}

// Block makes Allocate and CanAllocate fail with err; nil unblocks.
func (a *Allocator) Block(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.blockErr = err
}

// ErrExhausted is returned when every address is in use.
var ErrExhausted = errors.New("address pool exhausted")

// Allocate returns key's allocation, creating it when there is none.
func (a *Allocator) Allocate(ctx context.Context, key ipam.Key, pod ipam.PodMeta) (ipam.Allocation, error) {
	if err := ctx.Err(); err != nil {
		return ipam.Allocation{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.blockErr != nil {
		return ipam.Allocation{}, a.blockErr
	}
	if al, ok := a.byKey[key]; ok {
		return al, nil
	}
	// Round-robin from the last address given, so a released address is
	// reused as late as possible, as a real pool's cooldown would.
	for range 1 << min(a.prefix.Addr().BitLen()-a.prefix.Bits(), 20) {
		addr := a.next
		a.next = addr.Next()
		if !a.prefix.Contains(a.next) || isBroadcast(a.prefix, a.next) {
			a.next = a.prefix.Addr().Next()
		}
		if !a.prefix.Contains(addr) || isBroadcast(a.prefix, addr) || a.used[addr] {
			continue
		}
		al := a.template
		al.Key, al.Pod, al.Addr = key, pod, addr
		a.byKey[key] = al
		a.used[addr] = true
		return al, nil
	}
	return ipam.Allocation{}, fmt.Errorf("allocating in %s: %w", a.prefix, ErrExhausted)
}

func isBroadcast(p netip.Prefix, addr netip.Addr) bool {
	if !addr.Is4() || p.Bits() >= 31 {
		return false
	}
	return !p.Contains(addr.Next()) || addr.Next() == (netip.Addr{})
}

// Release frees key's address; an unknown key is not an error.
func (a *Allocator) Release(_ context.Context, key ipam.Key) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if al, ok := a.byKey[key]; ok {
		delete(a.used, al.Addr)
		delete(a.byKey, key)
	}
	return nil
}

// Get returns key's allocation.
func (a *Allocator) Get(key ipam.Key) (ipam.Allocation, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	al, ok := a.byKey[key]
	return al, ok
}

// List returns every allocation, ordered by address.
func (a *Allocator) List() []ipam.Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]ipam.Allocation, 0, len(a.byKey))
	for _, al := range a.byKey {
		out = append(out, al)
	}
	slices.SortFunc(out, func(x, y ipam.Allocation) int { return x.Addr.Compare(y.Addr) })
	return out
}

// CanAllocate is nil unless blocked or exhausted.
func (a *Allocator) CanAllocate() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.blockErr != nil {
		return a.blockErr
	}
	size := 1 << (a.prefix.Addr().BitLen() - a.prefix.Bits())
	if a.prefix.Addr().Is4() && a.prefix.Bits() < 31 {
		size -= 2
	}
	if len(a.used) >= size {
		return fmt.Errorf("allocating in %s: %w", a.prefix, ErrExhausted)
	}
	return nil
}
