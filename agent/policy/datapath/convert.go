package datapath

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/autonode/autonode/agent/policy/compute"
)

// The rules of one pod direction are two kinds of entry in the rules trie (see struct rule_key in bpf/policy.c),
// under the key head that names pod, direction and version:
//
//   - address entries map a peer prefix to a rule set, the ports allowed to addresses whose longest programmed
//     prefix it is, or flag it as allowing everything;
//   - port entries hold, per rule set, the protocols and aligned port blocks it allows.
//
// compute keeps nested prefixes apart (a /32 with its own ports inside a /24), but an LPM lookup returns only the
// longest match, so each prefix's rule set is the union of its own entries and those of every prefix enclosing it.
const (
	kindAddr = 1
	kindPort = 2

	ruleAll = 1 // rule_val.flags: every protocol and port

	addrPrefixBase = 16 // kind and family bytes
	portPrefixBase = 40 // kind and rule set
)

// localKey is a rules trie key without its head: bits counts from the kind byte.
type localKey struct {
	bits int
	data [18]byte
}

// keyHeadBits is the length of the head of a rules trie key: ifindex, then direction and version.
const keyHeadBits = 40

// place puts k under the head of one pod direction version.
func (k localKey) place(ifindex uint32, dir Direction, ver uint8) policyRuleKey {
	out := policyRuleKey{Prefixlen: uint32(keyHeadBits + k.bits)}
	binary.BigEndian.PutUint32(out.Data[0:], ifindex)
	out.Data[4] = byte(dir)<<7 | ver&maxVersion
	copy(out.Data[5:], k.data[:])
	return out
}

// unplace splits a rules trie key into its head and local part.
func unplace(k policyRuleKey) (ifindex uint32, dir Direction, ver uint8, lk localKey) {
	ifindex = binary.BigEndian.Uint32(k.Data[0:])
	dir, ver = Direction(k.Data[4]>>7), k.Data[4]&maxVersion
	lk.bits = int(k.Prefixlen) - keyHeadBits
	copy(lk.data[:], k.Data[5:])
	return ifindex, dir, ver, lk
}

// trieEntry is one key and value of a pod direction's rules.
type trieEntry struct {
	key localKey
	val policyRuleVal
}

// portRange is an inclusive range of destination ports of one protocol; 0-65535 is every port.
type portRange struct {
	proto    compute.Protocol
	lo, hi   uint16
	anyProto bool // every protocol and port: the rest is ignored
}

// ruleSet is a canonical set of port ranges: either anyProto alone, or ranges sorted by protocol and start,
// merged where they overlap or touch.
type ruleSet []portRange

func (s ruleSet) all() bool { return len(s) == 1 && s[0].anyProto }

func (s ruleSet) String() string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, "%v:%d-%d,%v;", r.proto, r.lo, r.hi, r.anyProto)
	}
	return b.String()
}

// canonical sorts and merges ranges; any any-protocol range absorbs the rest.
func canonical(rs []portRange) ruleSet {
	if slices.ContainsFunc(rs, func(r portRange) bool { return r.anyProto }) {
		return ruleSet{{anyProto: true}}
	}
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b portRange) int {
		return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.lo, b.lo), cmp.Compare(a.hi, b.hi))
	})
	var out ruleSet
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1].proto == r.proto && int(r.lo) <= int(out[n-1].hi)+1 {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// entryRange validates one compute entry and returns its port range. Anything the programs cannot match exactly is
// an ErrUnsupported error.
func entryRange(e compute.Entry) (portRange, error) {
	if !e.CIDR.IsValid() {
		return portRange{}, fmt.Errorf("entry %v: invalid prefix: %w", e, ErrUnsupported)
	}
	if e.CIDR.Addr().Is4In6() {
		return portRange{}, fmt.Errorf("entry %v: IPv4-mapped IPv6 prefix: %w", e, ErrUnsupported)
	}
	switch {
	case e.Protocol == compute.ProtocolAny && e.AllPorts():
		return portRange{anyProto: true}, nil
	case e.Protocol == compute.ProtocolAny:
		return portRange{}, fmt.Errorf("entry %v: ports without a protocol: %w", e, ErrUnsupported)
	case e.AllPorts():
		return portRange{proto: e.Protocol, lo: 0, hi: 0xffff}, nil
	case e.Protocol != compute.ProtocolTCP && e.Protocol != compute.ProtocolUDP && e.Protocol != compute.ProtocolSCTP:
		return portRange{}, fmt.Errorf("entry %v: ports of a protocol without ports: %w", e, ErrUnsupported)
	case e.PortStart == 0 || e.PortStart > e.PortEnd:
		return portRange{}, fmt.Errorf("entry %v: port range: %w", e, ErrUnsupported)
	}
	return portRange{proto: e.Protocol, lo: e.PortStart, hi: e.PortEnd}, nil
}

// prefixRules is one distinct peer prefix and the effective rule set of addresses whose longest prefix it is.
type prefixRules struct {
	prefix netip.Prefix
	rules  ruleSet
}

// effective groups d's entries by prefix and pushes the ranges of each prefix down into every prefix it encloses.
// An unisolated direction is one prefix per family that allows everything.
func effective(d compute.Direction) ([]prefixRules, error) {
	entries := d.Entries
	if !d.Isolated {
		entries = []compute.Entry{{CIDR: netip.MustParsePrefix("0.0.0.0/0")}, {CIDR: netip.MustParsePrefix("::/0")}}
	}
	own := map[netip.Prefix][]portRange{}
	for _, e := range entries {
		r, err := entryRange(e)
		if err != nil {
			return nil, err
		}
		p := e.CIDR.Masked()
		own[p] = append(own[p], r)
	}
	prefixes := make([]netip.Prefix, 0, len(own))
	for p := range own {
		prefixes = append(prefixes, p)
	}
	// Address order with shorter prefixes first puts every prefix right after the ones enclosing it, so a stack of
	// open ancestors walks the nesting in one pass.
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	out := make([]prefixRules, 0, len(prefixes))
	var stack []prefixRules
	for _, p := range prefixes {
		for len(stack) > 0 {
			top := stack[len(stack)-1].prefix
			if top.Addr().Is4() == p.Addr().Is4() && top.Bits() <= p.Bits() && top.Contains(p.Addr()) {
				break
			}
			stack = stack[:len(stack)-1]
		}
		rs := own[p]
		if len(stack) > 0 {
			rs = append(slices.Clone(stack[len(stack)-1].rules), rs...)
		}
		pr := prefixRules{prefix: p, rules: canonical(rs)}
		out = append(out, pr)
		stack = append(stack, pr)
	}
	return out, nil
}

// buildTrie converts a direction into the entries of its trie. Equal rule sets share one id.
func buildTrie(d compute.Direction) ([]trieEntry, error) {
	prs, err := effective(d)
	if err != nil {
		return nil, err
	}
	ids := map[string]uint32{}
	var out []trieEntry
	for _, pr := range prs {
		e := trieEntry{key: addrKey(pr.prefix)}
		if pr.rules.all() {
			e.val.Flags = ruleAll
			out = append(out, e)
			continue
		}
		sig := pr.rules.String()
		id, ok := ids[sig]
		if !ok {
			id = uint32(len(ids) + 1)
			ids[sig] = id
			for _, r := range pr.rules {
				for _, b := range portBlocks(r.lo, r.hi) {
					out = append(out, trieEntry{key: portKey(id, r.proto, b.start, b.bits)})
				}
			}
		}
		e.val.Ruleset = id
		out = append(out, e)
	}
	if len(out) > MaxPrefixes {
		return nil, fmt.Errorf("%d trie entries, more than %d: %w", len(out), MaxPrefixes, ErrUnsupported)
	}
	return out, nil
}

func addrKey(p netip.Prefix) localKey {
	k := localKey{bits: addrPrefixBase + p.Bits()}
	k.data[0] = kindAddr
	if p.Addr().Is4() {
		k.data[1] = 4
		a := p.Addr().As4()
		copy(k.data[2:], a[:])
	} else {
		k.data[1] = 6
		a := p.Addr().As16()
		copy(k.data[2:], a[:])
	}
	return k
}

// portKey is the port entry of rule set id for the block of 2^(16-bits) ports starting at start.
func portKey(id uint32, proto compute.Protocol, start uint16, bits int) localKey {
	k := localKey{bits: portPrefixBase + 8 + bits}
	k.data[0] = kindPort
	binary.BigEndian.PutUint32(k.data[1:], id)
	k.data[5] = byte(proto)
	binary.BigEndian.PutUint16(k.data[6:], start)
	return k
}

// portBlock is an aligned block of ports: the bits leading bits of start are fixed.
type portBlock struct {
	start uint16
	bits  int
}

// portBlocks splits lo..hi into the fewest aligned blocks (at most 30).
func portBlocks(lo, hi uint16) []portBlock {
	var out []portBlock
	for cur := uint32(lo); cur <= uint32(hi); {
		size := 0 // log2 of the block size
		for size < 16 && cur&(1<<(size+1)-1) == 0 && cur+(1<<(size+1))-1 <= uint32(hi) {
			size++
		}
		out = append(out, portBlock{start: uint16(cur), bits: 16 - size})
		cur += 1 << size
	}
	return out
}

// keyMatches reports whether the full-length lookup key q falls in the prefix of k: what an LPM trie checks.
func keyMatches(k, q localKey) bool {
	n := k.bits
	for i := 0; i < n/8; i++ {
		if k.data[i] != q.data[i] {
			return false
		}
	}
	if r := n % 8; r != 0 {
		mask := byte(0xff << (8 - r))
		if k.data[n/8]&mask != q.data[n/8]&mask {
			return false
		}
	}
	return true
}

// decodeTrie turns a trie back into compute entries: one entry per prefix and range of its effective rule set, in
// compute's order. It is the inverse of buildTrie up to the push-down: a prefix shows what it allows, including
// what it inherits from enclosing prefixes.
func decodeTrie(entries []trieEntry) ([]compute.Entry, error) {
	sets := map[uint32][]portRange{}
	var addrs []trieEntry
	for _, e := range entries {
		switch e.key.data[0] {
		case kindAddr:
			addrs = append(addrs, e)
		case kindPort:
			bits := e.key.bits - portPrefixBase - 8
			if bits < 0 || bits > 16 {
				return nil, fmt.Errorf("port entry with prefix length %d", e.key.bits)
			}
			id := binary.BigEndian.Uint32(e.key.data[1:])
			start := binary.BigEndian.Uint16(e.key.data[6:])
			end := uint32(start) + 1<<(16-bits) - 1
			sets[id] = append(sets[id], portRange{proto: compute.Protocol(e.key.data[5]), lo: start, hi: uint16(end)})
		default:
			return nil, fmt.Errorf("trie entry of unknown kind %d", e.key.data[0])
		}
	}
	var out []compute.Entry
	for _, e := range addrs {
		p, err := keyPrefix(e.key)
		if err != nil {
			return nil, err
		}
		if e.val.Flags&ruleAll != 0 {
			out = append(out, compute.Entry{CIDR: p})
			continue
		}
		rs, ok := sets[e.val.Ruleset]
		if !ok {
			return nil, fmt.Errorf("prefix %s: rule set %d has no port entries", p, e.val.Ruleset)
		}
		for _, r := range canonical(rs) {
			en := compute.Entry{CIDR: p, Protocol: r.proto, PortStart: r.lo, PortEnd: r.hi}
			if r.lo == 0 && r.hi == 0xffff {
				en.PortStart, en.PortEnd = 0, 0
			}
			out = append(out, en)
		}
	}
	slices.SortFunc(out, func(a, b compute.Entry) int {
		return cmp.Or(a.CIDR.Addr().Compare(b.CIDR.Addr()), cmp.Compare(a.CIDR.Bits(), b.CIDR.Bits()),
			cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.PortStart, b.PortStart))
	})
	return out, nil
}

func keyPrefix(k localKey) (netip.Prefix, error) {
	bits := k.bits - addrPrefixBase
	switch k.data[1] {
	case 4:
		if bits < 0 || bits > 32 {
			break
		}
		return netip.PrefixFrom(netip.AddrFrom4([4]byte(k.data[2:6])), bits), nil
	case 6:
		if bits < 0 || bits > 128 {
			break
		}
		return netip.PrefixFrom(netip.AddrFrom16([16]byte(k.data[2:18])), bits), nil
	}
	return netip.Prefix{}, fmt.Errorf("address entry with family %d and prefix length %d", k.data[1], k.bits)
}
