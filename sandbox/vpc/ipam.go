package vpc

import (
	"fmt"
	"math/bits"
	"net/netip"
)

// subnetState is a subnet plus its free-address bitmap.
//
// Bit i of used stands for the address base+i. A set bit is an address that
// nobody may be handed: one of the five AWS reserves, one a test reserved with
// Reserve or Fragment, or one assigned to an ENI (as an address or inside a
// delegated /28). Bits past the end of a subnet smaller than 64 addresses are
// set too, so a scan never has to check bounds inside a word.
type subnetState struct {
	Subnet
	base uint32 // the subnet's first address
	size int    // addresses in the CIDR, reserved ones included
	used []uint64
}

// reserved is how many addresses AWS keeps per subnet: the first four and the last.
const reserved = 5

// prefixBits and prefixSize describe the /28 prefixes EC2 delegates to ENIs.
const (
	prefixBits = 28
	prefixSize = 1 << (32 - prefixBits)
)

func newSubnetState(sn Subnet) *subnetState {
	size := 1 << (32 - sn.CIDR.Bits())
	s := &subnetState{Subnet: sn, base: u32(sn.CIDR.Addr()), size: size, used: make([]uint64, (size+63)/64)}
	for i := size; i < len(s.used)*64; i++ {
		s.set(i)
	}
	for _, i := range []int{0, 1, 2, 3, size - 1} {
		s.set(i)
	}
	s.AvailableIPs = size - reserved
	return s
}

func (s *subnetState) set(i int)        { s.used[i/64] |= 1 << (i % 64) }
func (s *subnetState) clear(i int)      { s.used[i/64] &^= 1 << (i % 64) }
func (s *subnetState) isSet(i int) bool { return s.used[i/64]&(1<<(i%64)) != 0 }

// offset returns a's index in the subnet; ok is false when a lies outside it.
func (s *subnetState) offset(a netip.Addr) (int, bool) {
	if !a.Is4() || !s.CIDR.Contains(a) {
		return 0, false
	}
	return int(u32(a) - s.base), true
}

func (s *subnetState) addr(i int) netip.Addr { return addrOf(s.base + uint32(i)) }

// awsReserved reports whether index i is one of the five addresses AWS keeps.
func (s *subnetState) awsReserved(i int) bool { return i < 4 || i == s.size-1 }

// allocIP hands out the lowest free usable address.
func (s *subnetState) allocIP() (netip.Addr, error) {
	for w, word := range s.used {
		if free := ^word; free != 0 {
			i := w*64 + bits.TrailingZeros64(free)
			s.set(i)
			s.AvailableIPs--
			return s.addr(i), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("subnet %s (%s): %w", s.ID, s.CIDR, ErrNoFreeAddresses)
}

// takeIP assigns one particular address.
func (s *subnetState) takeIP(a netip.Addr) error {
	i, ok := s.offset(a)
	switch {
	case !ok:
		return fmt.Errorf("address %s: outside subnet %s (%s): %w", a, s.ID, s.CIDR, ErrInvalid)
	case s.awsReserved(i):
		return fmt.Errorf("address %s: reserved by AWS in subnet %s: %w", a, s.ID, ErrInvalid)
	case s.isSet(i):
		return fmt.Errorf("address %s in subnet %s: %w", a, s.ID, ErrAddressInUse)
	}
	s.set(i)
	s.AvailableIPs--
	return nil
}

// releaseIP returns an address to the free map.
func (s *subnetState) releaseIP(a netip.Addr) {
	if i, ok := s.offset(a); ok && !s.awsReserved(i) && s.isSet(i) {
		s.clear(i)
		s.AvailableIPs++
	}
}

// blockFree reports whether the aligned /28 starting at index i is wholly free.
// Blocks are 16-aligned inside a 64-bit word, so this is one mask test.
func (s *subnetState) blockFree(i int) bool {
	return (s.used[i/64]>>(i%64))&(1<<prefixSize-1) == 0
}

func (s *subnetState) setBlock(i int, on bool) {
	mask := uint64(1<<prefixSize-1) << (i % 64)
	if on {
		s.used[i/64] |= mask
		s.AvailableIPs -= prefixSize
	} else {
		s.used[i/64] &^= mask
		s.AvailableIPs += prefixSize
	}
}

// allocPrefix hands out the lowest /28 that is aligned and wholly free. A
// subnet with free single addresses but no such block fails with
// ErrNoFreePrefix, as EC2 answers InsufficientCidrBlocks.
func (s *subnetState) allocPrefix() (netip.Prefix, error) {
	for i := 0; i < s.size; i += prefixSize {
		if s.blockFree(i) {
			s.setBlock(i, true)
			return netip.PrefixFrom(s.addr(i), prefixBits), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("subnet %s (%s): %w", s.ID, s.CIDR, ErrNoFreePrefix)
}

// takePrefix assigns one particular /28.
func (s *subnetState) takePrefix(p netip.Prefix) error {
	i, ok := s.offset(p.Addr())
	switch {
	case p.Bits() != prefixBits || p.Masked() != p:
		return fmt.Errorf("prefix %s: not an aligned /%d: %w", p, prefixBits, ErrInvalid)
	case !ok:
		return fmt.Errorf("prefix %s: outside subnet %s (%s): %w", p, s.ID, s.CIDR, ErrInvalid)
	case !s.blockFree(i):
		return fmt.Errorf("prefix %s in subnet %s: %w", p, s.ID, ErrAddressInUse)
	}
	s.setBlock(i, true)
	return nil
}

// releasePrefix returns a delegated /28 to the free map.
func (s *subnetState) releasePrefix(p netip.Prefix) {
	if i, ok := s.offset(p.Addr()); ok && p.Bits() == prefixBits && i%prefixSize == 0 {
		s.setBlock(i, false)
	}
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addrOf(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
