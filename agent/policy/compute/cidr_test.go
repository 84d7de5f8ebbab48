package compute

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestSubtract(t *testing.T) {
	tests := []struct {
		name    string
		cidr    string
		excepts []string
		want    []string
	}{
		{name: "no except", cidr: "10.0.0.0/24", want: []string{"10.0.0.0/24"}},
		{name: "host bits masked", cidr: "10.0.0.7/24", excepts: []string{"10.0.0.129/25"}, want: []string{"10.0.0.0/25"}},
		{name: "one address", cidr: "10.0.0.0/30", excepts: []string{"10.0.0.2/32"}, want: []string{"10.0.0.0/31", "10.0.0.3/32"}},
		{name: "two excepts", cidr: "10.0.0.0/24", excepts: []string{"10.0.0.0/26", "10.0.0.192/26"}, want: []string{"10.0.0.64/26", "10.0.0.128/26"}},
		{name: "nested excepts", cidr: "10.0.0.0/24", excepts: []string{"10.0.0.0/25", "10.0.0.0/26"}, want: []string{"10.0.0.128/25"}},
		{name: "except outside", cidr: "10.0.0.0/24", excepts: []string{"10.0.1.0/24"}, want: []string{"10.0.0.0/24"}},
		{name: "except contains cidr", cidr: "10.0.0.0/24", excepts: []string{"10.0.0.0/8"}, want: nil},
		{name: "except of the other family", cidr: "0.0.0.0/0", excepts: []string{"::/0"}, want: []string{"0.0.0.0/0"}},
		{name: "all but one v4 address", cidr: "0.0.0.0/0", excepts: []string{"255.255.255.255/32"}, want: []string{
			"0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "224.0.0.0/4", "240.0.0.0/5", "248.0.0.0/6", "252.0.0.0/7", "254.0.0.0/8",
			"255.0.0.0/9", "255.128.0.0/10", "255.192.0.0/11", "255.224.0.0/12", "255.240.0.0/13", "255.248.0.0/14", "255.252.0.0/15", "255.254.0.0/16",
			"255.255.0.0/17", "255.255.128.0/18", "255.255.192.0/19", "255.255.224.0/20", "255.255.240.0/21", "255.255.248.0/22", "255.255.252.0/23", "255.255.254.0/24",
			"255.255.255.0/25", "255.255.255.128/26", "255.255.255.192/27", "255.255.255.224/28", "255.255.255.240/29", "255.255.255.248/30", "255.255.255.252/31", "255.255.255.254/32"}},
		{name: "v6", cidr: "fd00::/126", excepts: []string{"fd00::1/128"}, want: []string{"fd00::/128", "fd00::2/127"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Subtract(netip.MustParsePrefix(tt.cidr), prefixes(tt.excepts...))
			if want := prefixes(tt.want...); !slices.Equal(got, want) {
				t.Errorf("Subtract = %v, want %v", got, want)
			}
		})
	}
}

// FuzzSubtract checks Subtract against the definition, address by address: a sampled address is covered by the
// output exactly when it is in cidr and in no except. It also checks the output is sorted, disjoint and minimal
// (no two sibling prefixes, which would merge into their parent).
//
// The input is bytes, not strings, so that the fuzzer spends its time on prefixes rather than on parse errors:
// byte 0 picks the family, then come the cidr's address and length, then up to 8 excepts the same way.
func FuzzSubtract(f *testing.F) {
	f.Add([]byte{0, 10, 0, 0, 0, 24, 10, 0, 0, 5, 32, 10, 0, 0, 128, 25}, uint64(1))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 32}, uint64(2))
	f.Add([]byte{0, 10, 0, 0, 0, 24, 192, 168, 0, 0, 16}, uint64(3))
	f.Add([]byte{1, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 128}, uint64(4))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		if len(data) < 1 {
			return
		}
		size := 4
		if data[0]&1 == 1 {
			size = 16
		}
		read := func() (netip.Prefix, bool) {
			if len(data) < size+1 {
				return netip.Prefix{}, false
			}
			a, _ := netip.AddrFromSlice(data[:size])
			bits := int(data[size]) % (size*8 + 1)
			data = data[size+1:]
			return netip.PrefixFrom(a, bits), true
		}
		data = data[1:]
		cidr, ok := read()
		if !ok {
			return
		}
		var excepts []netip.Prefix
		for len(excepts) < 8 {
			e, ok := read()
			if !ok {
				break
			}
			excepts = append(excepts, e)
		}
		got := Subtract(cidr, excepts)

		for i, p := range got {
			if p != p.Masked() || !cidr.Masked().Overlaps(p) || p.Bits() < cidr.Bits() {
				t.Fatalf("output %v is not a masked sub-prefix of %v", p, cidr)
			}
			if i > 0 && !lastAddr(got[i-1]).Less(p.Addr()) {
				t.Fatalf("outputs %v and %v overlap or are out of order", got[i-1], p)
			}
			if i > 0 && p.Bits() == got[i-1].Bits() && p.Bits() > 0 {
				if parent, _ := p.Addr().Prefix(p.Bits() - 1); parent.Contains(got[i-1].Addr()) {
					t.Fatalf("siblings %v and %v should be one prefix", got[i-1], p)
				}
			}
		}

		// Sample: the edges of every prefix involved and their neighbours, plus random addresses of cidr.
		r := rand.New(rand.NewPCG(seed, 0))
		var samples []netip.Addr
		for _, p := range append(append(slices.Clone(got), cidr), excepts...) {
			for _, a := range []netip.Addr{p.Masked().Addr(), lastAddr(p)} {
				samples = append(samples, a, a.Prev(), a.Next())
			}
			for range 4 {
				samples = append(samples, randomIn(r, p))
			}
		}
		for _, a := range samples {
			if !a.IsValid() {
				continue
			}
			want := cidr.Masked().Contains(a) && !slices.ContainsFunc(excepts, func(e netip.Prefix) bool { return e.Masked().Contains(a) })
			if have := slices.ContainsFunc(got, func(p netip.Prefix) bool { return p.Contains(a) }); have != want {
				t.Fatalf("Subtract(%v, %v) = %v: %v covered = %v, want %v", cidr, excepts, got, a, have, want)
			}
		}
	})
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// randomIn returns a random address of p. (policytest.RandomIn is the same, but this package's internal tests
// cannot import policytest, which imports compute.)
func randomIn(r *rand.Rand, p netip.Prefix) netip.Addr {
	p = p.Masked()
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		if r.IntN(2) == 1 {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
