package vpc

import (
	"fmt"
	"net/netip"
)

// subnetState is a subnet plus the addresses handed out from it.
type subnetState struct {
	Subnet
	used map[netip.Addr]bool
}

// reserved is how many addresses AWS keeps per subnet: the first four and the last.
const reserved = 5

func (s *subnetState) capacity() int { return 1<<(32-s.CIDR.Bits()) - reserved }

// usable reports whether a is one of the addresses AWS lets instances use.
func (s *subnetState) usable(a netip.Addr) bool {
	first := s.CIDR.Addr()
	for range 4 {
		if a == first {
			return false
		}
		first = first.Next()
	}
	return s.CIDR.Contains(a) && a != s.last()
}

func (s *subnetState) last() netip.Addr {
	a := s.CIDR.Addr().As4()
	host := uint32(1)<<(32-s.CIDR.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// allocIP hands out the lowest free usable address.
func (s *subnetState) allocIP() (netip.Addr, error) {
	for a := s.CIDR.Addr(); s.CIDR.Contains(a); a = a.Next() {
		if s.usable(a) && !s.used[a] {
			s.used[a] = true
			s.AvailableIPs--
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("subnet %s (%s): %w", s.ID, s.CIDR, ErrNoFreeAddresses)
}

// allocPrefix hands out the lowest /28 whose every address is usable and free.
func (s *subnetState) allocPrefix() (netip.Prefix, error) {
	const bits, size = 28, 16
	for base := s.CIDR.Addr(); s.CIDR.Contains(base); {
		free, next := true, base
		for range size {
			if !s.usable(next) || s.used[next] {
				free = false
			}
			next = next.Next()
		}
		if free {
			for a, i := base, 0; i < size; a, i = a.Next(), i+1 {
				s.used[a] = true
			}
			s.AvailableIPs -= size
			return netip.PrefixFrom(base, bits), nil
		}
		base = next
	}
	return netip.Prefix{}, fmt.Errorf("subnet %s (%s): no free /28: %w", s.ID, s.CIDR, ErrNoFreeAddresses)
}
