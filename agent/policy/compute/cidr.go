package compute

import (
	"net/netip"
	"slices"
)

// Subtract returns the minimal set of prefixes that covers exactly the addresses of cidr that lie in none of
// excepts, sorted by address. It is how an ipBlock's except list becomes allow entries: the datapath then needs no
// deny entries and no longest-prefix tie-breaking.
//
// Host bits are ignored (prefixes are masked first). An except of the other address family, or one that does not
// overlap cidr, removes nothing; an except that contains cidr removes all of it.
func Subtract(cidr netip.Prefix, excepts []netip.Prefix) []netip.Prefix {
	if !cidr.IsValid() {
		return nil
	}
	cidr = cidr.Masked()
	var relevant []netip.Prefix
	for _, e := range excepts {
		if !e.IsValid() || e.Addr().Is4() != cidr.Addr().Is4() {
			continue
		}
		e = e.Masked()
		if e.Overlaps(cidr) {
			relevant = append(relevant, e)
		}
	}
	var out []netip.Prefix
	subtract(cidr, relevant, &out)
	return out
}

// subtract appends to out the maximal aligned blocks of p outside excepts, in address order. Every except overlaps p.
// A block is split only while an except lies strictly inside it, so the blocks emitted are maximal, and the set of
// maximal aligned blocks is the smallest prefix cover of a set of addresses.
func subtract(p netip.Prefix, excepts []netip.Prefix, out *[]netip.Prefix) {
	if len(excepts) == 0 {
		*out = append(*out, p)
		return
	}
	for _, e := range excepts {
		if e.Bits() <= p.Bits() { // e overlaps p and is no longer: e contains p.
			return
		}
	}
	lo, hi := halves(p)
	subtract(lo, overlapping(lo, excepts), out)
	subtract(hi, overlapping(hi, excepts), out)
}

// halves splits p (not a single address) into its two children.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits)
	b := p.Addr().AsSlice()
	i := p.Bits() // index of the bit that tells the halves apart
	b[i/8] |= 0x80 >> (i % 8)
	hiAddr, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(hiAddr, bits)
}

func overlapping(p netip.Prefix, excepts []netip.Prefix) []netip.Prefix {
	return slices.DeleteFunc(slices.Clone(excepts), func(e netip.Prefix) bool { return !e.Overlaps(p) })
}
