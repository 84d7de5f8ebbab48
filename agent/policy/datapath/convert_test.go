package datapath

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/autonode/autonode/agent/policy/compute"
	"github.com/autonode/autonode/agent/policy/internal/policytest"
)

// lookupAddrKey is the key the programs build for a peer address: a full-length prefix.
func lookupAddrKey(a netip.Addr) localKey {
	return addrKey(netip.PrefixFrom(a, a.BitLen()))
}

func lookupPortKey(id uint32, proto compute.Protocol, port uint16) localKey {
	return portKey(id, proto, port, 16)
}

// lpmAllows answers a flow from trie entries the way the programs do: the longest address prefix, then any port
// entry of its rule set.
func lpmAllows(entries []trieEntry, peer netip.Addr, proto compute.Protocol, port uint16) bool {
	q := lookupAddrKey(peer)
	best := -1
	for i, e := range entries {
		if e.key.data[0] == kindAddr && keyMatches(e.key, q) && (best < 0 || e.key.bits > entries[best].key.bits) {
			best = i
		}
	}
	if best < 0 {
		return false
	}
	v := entries[best].val
	if v.Flags&ruleAll != 0 {
		return true
	}
	if proto != compute.ProtocolTCP && proto != compute.ProtocolUDP && proto != compute.ProtocolSCTP {
		port = 0
	}
	pq := lookupPortKey(v.Ruleset, proto, port)
	for _, e := range entries {
		if e.key.data[0] == kindPort && keyMatches(e.key, pq) {
			return true
		}
	}
	return false
}

// randomDirection draws nested and overlapping prefixes of both families with random port rules.
func randomDirection(r *rand.Rand) compute.Direction {
	d := compute.Direction{Isolated: r.IntN(8) != 0}
	if !d.Isolated {
		return d
	}
	for range r.IntN(12) {
		var p netip.Prefix
		if r.IntN(5) == 0 {
			p = netip.PrefixFrom(netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(r.IntN(8))}), []int{0, 64, 120, 125, 128}[r.IntN(5)])
		} else {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(2)), byte(r.IntN(16))}), []int{0, 8, 16, 23, 24, 28, 30, 31, 32}[r.IntN(9)])
		}
		e := compute.Entry{CIDR: p.Masked()}
		switch r.IntN(6) {
		case 0: // any protocol
		case 1:
			e.Protocol = []compute.Protocol{compute.ProtocolTCP, compute.ProtocolUDP, compute.ProtocolSCTP}[r.IntN(3)]
		default:
			e.Protocol = []compute.Protocol{compute.ProtocolTCP, compute.ProtocolUDP, compute.ProtocolSCTP}[r.IntN(3)]
			e.PortStart = uint16(1 + r.IntN(100))
			e.PortEnd = e.PortStart + uint16(r.IntN(3)*r.IntN(40))
			if r.IntN(10) == 0 {
				e.PortStart, e.PortEnd = uint16(1+r.IntN(65535)), 65535
			}
		}
		d.Entries = append(d.Entries, e)
	}
	return d
}

func randomProbe(r *rand.Rand, d compute.Direction) (netip.Addr, compute.Protocol, uint16) {
	var a netip.Addr
	if len(d.Entries) > 0 && r.IntN(2) == 0 {
		a = policytest.RandomIn(r, d.Entries[r.IntN(len(d.Entries))].CIDR)
	} else if r.IntN(4) == 0 {
		a = netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(r.IntN(8))})
	} else {
		a = netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(2)), byte(r.IntN(16))})
	}
	proto := []compute.Protocol{compute.ProtocolTCP, compute.ProtocolUDP, compute.ProtocolSCTP, 1, 47}[r.IntN(5)]
	port := uint16(r.IntN(130))
	if r.IntN(8) == 0 {
		port = uint16(r.IntN(65536))
	}
	return a, proto, port
}

// checkConversion compares the LPM lookup of d's trie with a linear match of its entries, and the decoded trie
// with d, on n probes.
func checkConversion(t *testing.T, r *rand.Rand, d compute.Direction, n int) {
	t.Helper()
	trie, err := buildTrie(d)
	if err != nil {
		t.Fatalf("buildTrie(%+v): %v", d, err)
	}
	decoded, err := decodeTrie(trie)
	if err != nil {
		t.Fatalf("decodeTrie: %v", err)
	}
	back := compute.Direction{Isolated: true, Entries: decoded}
	for range n {
		a, proto, port := randomProbe(r, d)
		f := policytest.Flow{Peer: a, Proto: proto, Port: port}
		if proto != compute.ProtocolTCP && proto != compute.ProtocolUDP && proto != compute.ProtocolSCTP {
			f.Port = 0
		}
		want := policytest.Lookup(compute.Result{Ingress: d}, f)
		if got := lpmAllows(trie, a, proto, port); got != want {
			t.Fatalf("%+v: %v: trie says %v, entries say %v\ntrie: %+v", d, f, got, want, trie)
		}
		if got := policytest.Lookup(compute.Result{Ingress: back}, f); got != want {
			t.Fatalf("%+v: %v: decoded entries %v say %v, entries say %v", d, f, decoded, got, want)
		}
	}
}

// TestConversionProperty: for random directions, an LPM lookup of the converted trie equals a linear match of the
// entries, and decoding the trie gives entries that match the same flows.
func TestConversionProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		checkConversion(t, r, randomDirection(r), 200)
	}
}

func TestPortBlocks(t *testing.T) {
	for _, c := range []struct {
		lo, hi uint16
		n      int
	}{{80, 80, 1}, {0, 65535, 1}, {1, 65535, 16}, {8080, 8090, 3}, {1, 2, 2}, {65535, 65535, 1}, {1, 65534, 30}} {
		blocks := portBlocks(c.lo, c.hi)
		if len(blocks) != c.n {
			t.Errorf("portBlocks(%d, %d) = %d blocks, want %d: %v", c.lo, c.hi, len(blocks), c.n, blocks)
		}
		next := uint32(c.lo)
		for _, b := range blocks {
			size := uint32(1) << (16 - b.bits)
			if uint32(b.start) != next || uint32(b.start)%size != 0 {
				t.Errorf("portBlocks(%d, %d): block %v not aligned or not contiguous", c.lo, c.hi, b)
			}
			next += size
		}
		if next != uint32(c.hi)+1 {
			t.Errorf("portBlocks(%d, %d) ends at %d", c.lo, c.hi, next-1)
		}
	}
}

func TestConversionUnsupported(t *testing.T) {
	for _, e := range []compute.Entry{
		{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Protocol: compute.ProtocolAny, PortStart: 80, PortEnd: 80},
		{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Protocol: 1, PortStart: 80, PortEnd: 80},
		{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Protocol: compute.ProtocolTCP, PortStart: 90, PortEnd: 80},
		{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Protocol: compute.ProtocolTCP, PortStart: 0, PortEnd: 80},
		{CIDR: netip.MustParsePrefix("::ffff:10.0.0.0/104"), Protocol: compute.ProtocolTCP},
		{},
	} {
		if _, err := buildTrie(compute.Direction{Isolated: true, Entries: []compute.Entry{e}}); !errors.Is(err, ErrUnsupported) {
			t.Errorf("buildTrie(%v) = %v, want ErrUnsupported", e, err)
		}
	}
	// More entries than a direction may hold.
	var many []compute.Entry
	for i := range MaxPrefixes + 1 {
		many = append(many, compute.Entry{CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)})
	}
	if _, err := buildTrie(compute.Direction{Isolated: true, Entries: many}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("buildTrie(%d entries) = %v, want ErrUnsupported", len(many), err)
	}
}

// FuzzConversion builds a direction from arbitrary bytes (six per entry: address byte, prefix length, protocol,
// port, span) and checks the trie against linear matching. Bad entries must fail with ErrUnsupported, never panic.
func FuzzConversion(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0}, uint64(1))
	f.Add([]byte{1, 24, 6, 80, 0, 0, 1, 32, 6, 90, 10, 0}, uint64(2))
	f.Add([]byte{3, 0, 17, 0, 0, 0, 3, 28, 132, 53, 1, 0, 200, 8, 1, 0, 0, 0}, uint64(3))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		d := compute.Direction{Isolated: true}
		for i := 0; i+6 <= len(data) && len(d.Entries) < 64; i += 6 {
			b := data[i : i+6]
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, b[0] >> 4, b[0] << 4}), int(b[1]%33)).Masked()
			e := compute.Entry{CIDR: p, Protocol: compute.Protocol(b[2])}
			if b[3] != 0 {
				e.PortStart = uint16(b[3])
				e.PortEnd = e.PortStart + uint16(b[4])
				if b[5]&1 == 1 {
					e.PortEnd = e.PortStart - uint16(b[4]) // may be backwards: must be refused
				}
			}
			d.Entries = append(d.Entries, e)
		}
		if _, err := buildTrie(d); err != nil {
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("buildTrie: %v, not ErrUnsupported", err)
			}
			return
		}
		checkConversion(t, rand.New(rand.NewPCG(seed, 0)), d, 100)
	})
}
