// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0)
//
// NetworkPolicy enforcement on a pod's host-side veth. from_pod runs on the veth's ingress hook (the pod's egress),
// to_pod on its egress hook (the pod's ingress). The check_* twins run the same decision without side effects
// (no conntrack, fragment or event writes) and leave the reason in cb[0]; they are only ever run by
// BPF_PROG_TEST_RUN, for `policy check`.
//
// A packet is allowed, in this order, when it is not IP; when the peer is a node address; when it is IPv6 neighbor
// discovery; when it is a later fragment of a datagram whose first fragment was allowed; when it is an ICMP error
// about a tracked flow; when it is a forward packet of a flow the rules in force allowed; when it is a reply of a
// tracked flow; or when the pod's rules for the direction allow it. Everything else is dropped.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define DIR_INGRESS 0 // to the pod
#define DIR_EGRESS 1  // from the pod

#define KIND_ADDR 1
#define KIND_PORT 2

#define RULE_ALL 1 // the prefix allows every protocol and port: no port lookup

#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_FRAGMENT6 44
#define PROTO_ICMPV6 58
#define PROTO_SCTP 132

// Reasons. Below 16 allow, from 16 deny. Keep in step with reason.go.
enum reason {
	R_POLICY = 1,
	R_REPLY = 2,
	R_NODE = 3,
	R_ICMP_ERROR = 4,
	R_FRAGMENT = 5,
	R_NOT_IP = 6,
	R_ND = 7,
	R_NO_RULE = 16,
	R_NO_POD = 17,
	R_FRAG_UNKNOWN = 18,
	R_MALFORMED = 19,
};

// Counter indexes in ap_stats beyond the per-reason packet counts.
#define STAT_EV_SENT 24
#define STAT_EV_RATELIMITED 25
#define STAT_EV_RINGFULL 26
#define STAT_CT_NEW 27
#define STAT_MAX 32

// Conntrack TCP state bits.
#define CT_SEEN_REPLY 1
#define CT_FIN_FWD 2
#define CT_FIN_REP 4
#define CT_RST 8

#define NSEC 1000000000ULL
#define TO_TCP_SYN (60 * NSEC)
#define TO_TCP_EST (6 * 3600 * NSEC)
#define TO_TCP_CLOSE (10 * NSEC)
#define TO_UDP (60 * NSEC)
#define TO_ICMP (30 * NSEC)
#define TO_OTHER (60 * NSEC)
#define TO_FRAG (30 * NSEC)

// The rules of every pod live in one LPM trie. A key starts with 40 fixed bits: the pod's ifindex (big endian) and
// one byte holding the direction (bit 7) and a version (bits 0-6). Userspace writes a new version beside the one in
// force, then switches pod.ver with a single update of the pod record, so a packet sees either the old rules or the
// new ones; it deletes the old version after an RCU grace period. (Swapping inner maps of a map-of-maps would be
// atomic too, but every such update waits for a grace period, some 15 ms.) After the fixed part, two kinds of
// entry:
// KIND_ADDR: kind, family (4 or 6), address (16 bytes, IPv4 in the first 4); prefixlen = 40 + 16 + bits.
// KIND_PORT: kind, rule set (4 bytes, big endian), protocol, port (big endian); prefixlen = 40 + 40 for any
// protocol, 40 + 48 for every port of a protocol, 40 + 48 + k for a block of ports sharing their first k bits.
struct rule_key {
	__u32 prefixlen;
	__u8 data[24];
};

struct rule_val {
	__u32 ruleset;
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct rule_key);
	__type(value, struct rule_val);
	__uint(max_entries, 1 << 21);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ap_rules SEC(".maps");

#define POD_ISOLATED_INGRESS 1
#define POD_ISOLATED_EGRESS 2

struct pod {
	__u64 cookie; // changes with every pod on this ifindex, so a reused ifindex never inherits conntrack state
	__u32 flags;
	__u8 family;
	__u8 ver[2]; // the trie version of the rules in force, per direction (wraps at 128)
	__u8 pad;
	__u32 gen[2]; // counts rule changes per direction; never wraps in practice
	__u8 ip[16];
	char host_if[16];
	char ns[64];
	char name[256];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct pod);
	__uint(max_entries, 8192);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ap_pods SEC(".maps");

// The tuple as sent by the side that opened the flow; dir is the hook direction of that first packet.
struct ct_key {
	__u32 ifindex;
	__u8 dir;
	__u8 family;
	__u8 proto;
	__u8 pad;
	__be16 sport;
	__be16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct ct_val {
	__u64 cookie;
	__u64 last_ns;
	__u64 expires_ns;
	__u32 state;
	__u32 gen; // pod.gen of the rules that allowed the flow: while they are in force, forward packets skip them
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	__uint(max_entries, 524288); // replaced by Config.ConntrackSize at load
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ap_ct SEC(".maps");

struct frag_key {
	__u32 ifindex;
	__u8 dir;
	__u8 proto;
	__u8 family;
	__u8 pad;
	__be32 id; // IPv4: the 16-bit identification; IPv6: the fragment header's
	__u8 saddr[16];
	__u8 daddr[16];
};

struct frag_val {
	__u64 cookie;
	__u64 expires_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_val);
	__uint(max_entries, 16384);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ap_frags SEC(".maps");

struct node_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct node_key);
	__type(value, __u8);
	__uint(max_entries, 256);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ap_nodes SEC(".maps");

struct config {
	__u32 emit_allows;
	__u32 rate; // events per second per CPU
	__u32 burst;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ap_config SEC(".maps");

struct bucket {
	__u64 tokens; // in billionths of an event
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct bucket);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ap_ratelimit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, STAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ap_stats SEC(".maps");

struct event {
	__u64 ts_ns;
	__u32 ifindex;
	__u8 dir;
	__u8 reason;
	__u8 family;
	__u8 proto;
	__u16 sport; // host order
	__u16 dport;
	__u32 pad;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ap_events SEC(".maps");

// Keep the layouts that only userspace builds in the BTF, so that bpf2go generates their Go twins.
const struct event *unused_event __attribute__((unused));

struct pkt {
	__u8 family;
	__u8 proto;
	__u8 icmp_type;
	__u8 frag; // 0: whole datagram, 1: first fragment, 2: later fragment
	__be16 sport;
	__be16 dport;
	__be32 frag_id;
	__u8 has_ports; // the L4 header was read (ports or ICMP id)
	__u8 icmp_err;  // an ICMP error whose inner tuple is in inner
	__u32 l4off;
	__u8 saddr[16];
	__u8 daddr[16];
};

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&ap_stats, &idx);
	if (c)
		*c += 1;
}

static __always_inline int is_icmp_error(__u8 family, __u8 type)
{
	if (family == 4)
		return type == 3 || type == 11 || type == 12; // unreachable (incl. frag needed), time exceeded, param
	return type >= 1 && type <= 4;                      // ICMPv6: unreachable, too big, time exceeded, param
}

// read_l4 fills ports (or the ICMP type and echo id) from the L4 header at off.
static __always_inline void read_l4(struct __sk_buff *skb, struct pkt *p, __u32 off)
{
	p->l4off = off;
	if (p->proto == PROTO_TCP || p->proto == PROTO_UDP || p->proto == PROTO_SCTP) {
		__be16 ports[2];
		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) == 0) {
			p->sport = ports[0];
			p->dport = ports[1];
			p->has_ports = 1;
		}
	} else if (p->proto == PROTO_ICMP || p->proto == PROTO_ICMPV6) {
		__u8 h[8];
		if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) == 0) {
			p->icmp_type = h[0];
			p->has_ports = 1;
			int echo = p->family == 4 ? (h[0] == 8 || h[0] == 0) : (h[0] == 128 || h[0] == 129);
			if (echo) { // the echo id plays both ports, so request and reply tuples mirror each other
				p->sport = *(__be16 *)&h[4];
				p->dport = p->sport;
			}
			p->icmp_err = is_icmp_error(p->family, h[0]);
		}
	}
}

// parse_ip reads the IP header at off. It returns 0 on success, -1 on a malformed header.
static __always_inline int parse_ip(struct __sk_buff *skb, struct pkt *p, __u16 ethproto, __u32 off)
{
	if (ethproto == bpf_htons(ETH_P_IP)) {
		__u8 h[20];
		if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
			return -1;
		__u8 ihl = h[0] & 0xf;
		if ((h[0] >> 4) != 4 || ihl < 5)
			return -1;
		p->family = 4;
		p->proto = h[9];
		p->frag_id = *(__be16 *)&h[4];
		__u16 frag = bpf_ntohs(*(__be16 *)&h[6]);
		__builtin_memcpy(p->saddr, &h[12], 4);
		__builtin_memcpy(p->daddr, &h[16], 4);
		if (frag & 0x1fff) {
			p->frag = 2;
			return 0;
		}
		if (frag & 0x2000)
			p->frag = 1;
		read_l4(skb, p, off + ihl * 4);
		return 0;
	}
	if (ethproto == bpf_htons(ETH_P_IPV6)) {
		__u8 h[40];
		if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
			return -1;
		if ((h[0] >> 4) != 6)
			return -1;
		p->family = 6;
		p->proto = h[6];
		__builtin_memcpy(p->saddr, &h[8], 16);
		__builtin_memcpy(p->daddr, &h[24], 16);
		off += 40;
		// A fragment header right after the fixed header is read; other extension headers are not walked, and
		// such packets match only any-protocol rules.
		if (p->proto == PROTO_FRAGMENT6) {
			__u8 fh[8];
			if (bpf_skb_load_bytes(skb, off, fh, sizeof(fh)) < 0)
				return -1;
			p->proto = fh[0];
			p->frag_id = *(__be32 *)&fh[4];
			__u16 fo = bpf_ntohs(*(__be16 *)&fh[2]);
			if (fo >> 3) {
				p->frag = 2;
				return 0;
			}
			if (fo & 1)
				p->frag = 1;
			off += 8;
		}
		read_l4(skb, p, off);
		return 0;
	}
	return 1;
}

static __always_inline void ct_fill_key(struct ct_key *k, __u32 ifindex, __u8 dir, struct pkt *p, int reverse)
{
	k->ifindex = ifindex;
	k->dir = dir;
	k->family = p->family;
	k->proto = p->proto;
	if (reverse) {
		k->sport = p->dport;
		k->dport = p->sport;
		__builtin_memcpy(k->saddr, p->daddr, 16);
		__builtin_memcpy(k->daddr, p->saddr, 16);
	} else {
		k->sport = p->sport;
		k->dport = p->dport;
		__builtin_memcpy(k->saddr, p->saddr, 16);
		__builtin_memcpy(k->daddr, p->daddr, 16);
	}
}

static __always_inline __u64 ct_timeout(__u8 proto, __u32 state)
{
	switch (proto) {
	case PROTO_TCP:
		if ((state & CT_RST) || ((state & CT_FIN_FWD) && (state & CT_FIN_REP)))
			return TO_TCP_CLOSE;
		return (state & CT_SEEN_REPLY) ? TO_TCP_EST : TO_TCP_SYN;
	case PROTO_UDP:
		return TO_UDP;
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		return TO_ICMP;
	}
	return TO_OTHER;
}

static __always_inline __u8 tcp_flags(struct __sk_buff *skb, struct pkt *p)
{
	__u8 f = 0;
	if (p->proto == PROTO_TCP)
		bpf_skb_load_bytes(skb, p->l4off + 13, &f, 1);
	return f;
}

// ct_touch records a packet of a tracked flow: reply says which side sent it.
static __always_inline void ct_touch(struct ct_val *v, __u8 proto, __u8 flags, int reply, __u64 now)
{
	__u32 st = v->state;
	if (reply)
		st |= CT_SEEN_REPLY;
	if (flags & 0x04) // RST
		st |= CT_RST;
	if (flags & 0x01) // FIN
		st |= reply ? CT_FIN_REP : CT_FIN_FWD;
	if ((flags & 0x02) && !(flags & 0x10) && !reply) // a new SYN on a closed tuple reopens it
		st &= ~(CT_RST | CT_FIN_FWD | CT_FIN_REP | CT_SEEN_REPLY);
	v->state = st;
	v->last_ns = now;
	v->expires_ns = now + ct_timeout(proto, st);
}

static __always_inline int ct_live(struct ct_val *v, struct pod *pod, __u64 now)
{
	return v->cookie == pod->cookie && v->expires_ns > now;
}

// icmp_error_tracked reports whether the ICMP error in p quotes a packet of a flow tracked on this veth: one the
// pod sent out (the error comes back on the other hook) or a reply the pod sent to a flow opened towards it.
static __always_inline int icmp_error_tracked(struct __sk_buff *skb, struct pkt *p, struct pod *pod, __u32 ifindex,
					      __u8 dir, __u64 now)
{
	__u32 off = p->l4off + 8;
	struct pkt in = {};
	__u16 ethproto = p->family == 4 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
	if (parse_ip(skb, &in, ethproto, off) != 0 || !in.has_ports || in.icmp_err)
		return 0;
	struct ct_key k = {};
	ct_fill_key(&k, ifindex, dir ^ 1, &in, 0);
	struct ct_val *v = bpf_map_lookup_elem(&ap_ct, &k);
	if (v && ct_live(v, pod, now))
		return 1;
	__builtin_memset(&k, 0, sizeof(k));
	ct_fill_key(&k, ifindex, dir, &in, 1);
	v = bpf_map_lookup_elem(&ap_ct, &k);
	return v && ct_live(v, pod, now);
}

static __always_inline void rule_key_head(struct rule_key *k, __u32 ifindex, __u8 dir, struct pod *pod)
{
	*(__be32 *)&k->data[0] = bpf_htonl(ifindex);
	k->data[4] = (dir << 7) | (pod->ver[dir & 1] & 0x7f);
}

// rules_allow looks the packet up in the pod's rules for dir.
static __always_inline int rules_allow(struct pkt *p, struct pod *pod, __u32 ifindex, __u8 dir)
{
	struct rule_key k = {};
	rule_key_head(&k, ifindex, dir, pod);
	k.prefixlen = 40 + 16 + (p->family == 4 ? 32 : 128);
	k.data[5] = KIND_ADDR;
	k.data[6] = p->family;
	__builtin_memcpy(&k.data[7], dir == DIR_EGRESS ? p->daddr : p->saddr, 16);
	struct rule_val *v = bpf_map_lookup_elem(&ap_rules, &k);
	if (!v)
		return 0;
	if (v->flags & RULE_ALL)
		return 1;
	__u32 rs = v->ruleset;
	__builtin_memset(&k, 0, sizeof(k));
	rule_key_head(&k, ifindex, dir, pod);
	k.prefixlen = 40 + 64;
	k.data[5] = KIND_PORT;
	*(__be32 *)&k.data[6] = bpf_htonl(rs);
	k.data[10] = p->proto;
	if (p->proto == PROTO_TCP || p->proto == PROTO_UDP || p->proto == PROTO_SCTP)
		*(__be16 *)&k.data[11] = p->dport;
	return bpf_map_lookup_elem(&ap_rules, &k) != 0;
}

static __always_inline int ratelimit_ok(struct config *cfg, __u64 now)
{
	__u32 zero = 0;
	struct bucket *b = bpf_map_lookup_elem(&ap_ratelimit, &zero);
	if (!b)
		return 0;
	if (cfg->rate == 0)
		return 0;
	__u64 cap = (__u64)cfg->burst * NSEC;
	__u64 elapsed = now - b->last_ns;
	__u64 t = cap; // idle long enough (or never used): a full bucket
	if (elapsed < cap / cfg->rate)
		t = b->tokens + elapsed * cfg->rate;
	if (t > cap)
		t = cap;
	b->last_ns = now;
	if (t < NSEC) {
		b->tokens = t;
		return 0;
	}
	b->tokens = t - NSEC;
	return 1;
}

static __always_inline void emit(struct pkt *p, __u32 ifindex, __u8 dir, __u8 reason, __u64 now)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&ap_config, &zero);
	if (!cfg)
		return;
	if (reason < R_NO_RULE && !cfg->emit_allows)
		return;
	if (!ratelimit_ok(cfg, now)) {
		count(STAT_EV_RATELIMITED);
		return;
	}
	struct event *e = bpf_ringbuf_reserve(&ap_events, sizeof(*e), 0);
	if (!e) {
		count(STAT_EV_RINGFULL);
		return;
	}
	e->ts_ns = now;
	e->ifindex = ifindex;
	e->dir = dir;
	e->reason = reason;
	e->family = p->family;
	e->proto = p->proto;
	e->sport = bpf_ntohs(p->sport);
	e->dport = bpf_ntohs(p->dport);
	e->pad = 0;
	__builtin_memcpy(e->saddr, p->saddr, 16);
	__builtin_memcpy(e->daddr, p->daddr, 16);
	bpf_ringbuf_submit(e, 0);
	count(STAT_EV_SENT);
}

static __always_inline __u8 decide(struct __sk_buff *skb, struct pkt *p, __u8 dir, int dry, __u64 now)
{
	__u32 ifindex = skb->ifindex;
	__be16 ethproto;
	if (bpf_skb_load_bytes(skb, 12, &ethproto, sizeof(ethproto)) < 0)
		return R_MALFORMED;
	int r = parse_ip(skb, p, ethproto, ETH_HLEN);
	if (r > 0)
		return R_NOT_IP;
	if (r < 0)
		return R_MALFORMED;

	struct pod *pod = bpf_map_lookup_elem(&ap_pods, &ifindex);
	if (!pod)
		return R_NO_POD;

	struct node_key nk = {.family = p->family};
	__builtin_memcpy(nk.addr, dir == DIR_EGRESS ? p->daddr : p->saddr, 16);
	if (bpf_map_lookup_elem(&ap_nodes, &nk))
		return R_NODE;

	if (p->family == 6 && p->proto == PROTO_ICMPV6 && p->has_ports && p->icmp_type >= 133 && p->icmp_type <= 137)
		return R_ND;

	if (p->frag == 2) {
		struct frag_key fk = {.ifindex = ifindex, .dir = dir, .proto = p->proto, .family = p->family, .id = p->frag_id};
		__builtin_memcpy(fk.saddr, p->saddr, 16);
		__builtin_memcpy(fk.daddr, p->daddr, 16);
		struct frag_val *fv = bpf_map_lookup_elem(&ap_frags, &fk);
		if (fv && fv->cookie == pod->cookie && fv->expires_ns > now)
			return R_FRAGMENT;
		return R_FRAG_UNKNOWN;
	}

	__u8 reason = 0;
	if (p->icmp_err && icmp_error_tracked(skb, p, pod, ifindex, dir, now))
		reason = R_ICMP_ERROR;

	int icmp = p->proto == PROTO_ICMP || p->proto == PROTO_ICMPV6;
	int trackable = p->has_ports && (!icmp || p->icmp_type == 0 || p->icmp_type == 8 || p->icmp_type == 128 ||
					 p->icmp_type == 129);
	int request = icmp && (p->icmp_type == 8 || p->icmp_type == 128);
	int echo_reply = icmp && (p->icmp_type == 0 || p->icmp_type == 129);
	__u8 flags = tcp_flags(skb, p);
	__u32 gen = pod->gen[dir & 1];

	// A forward packet of a flow the rules in force already allowed: no need to look them up again.
	if (!reason && trackable && !echo_reply) {
		struct ct_key k = {};
		ct_fill_key(&k, ifindex, dir, p, 0);
		struct ct_val *v = bpf_map_lookup_elem(&ap_ct, &k);
		if (v && ct_live(v, pod, now) && v->gen == gen) {
			if (!dry)
				ct_touch(v, p->proto, flags, 0, now);
			reason = R_POLICY;
		}
	}

	// A reply: the reverse tuple was opened from the other hook of this veth. ICMP requests are never replies.
	if (!reason && trackable && !request) {
		struct ct_key k = {};
		ct_fill_key(&k, ifindex, dir ^ 1, p, 1);
		struct ct_val *v = bpf_map_lookup_elem(&ap_ct, &k);
		if (v && ct_live(v, pod, now)) {
			if (!dry)
				ct_touch(v, p->proto, flags, 1, now);
			reason = R_REPLY;
		}
	}

	// Otherwise the rules decide, so a narrowed policy cuts the forward direction of open flows at once.
	if (!reason && rules_allow(p, pod, ifindex, dir)) {
		reason = R_POLICY;
		if (!dry && trackable && !echo_reply) {
			struct ct_key k = {};
			ct_fill_key(&k, ifindex, dir, p, 0);
			struct ct_val *v = bpf_map_lookup_elem(&ap_ct, &k);
			if (v && v->cookie == pod->cookie) {
				ct_touch(v, p->proto, flags, 0, now);
				v->gen = gen;
			} else {
				struct ct_val nv = {.cookie = pod->cookie, .gen = gen};
				ct_touch(&nv, p->proto, flags, 0, now);
				bpf_map_update_elem(&ap_ct, &k, &nv, BPF_ANY);
				count(STAT_CT_NEW);
			}
		}
	}
	if (!reason)
		return R_NO_RULE;

	if (!dry && p->frag == 1) {
		struct frag_key fk = {.ifindex = ifindex, .dir = dir, .proto = p->proto, .family = p->family, .id = p->frag_id};
		__builtin_memcpy(fk.saddr, p->saddr, 16);
		__builtin_memcpy(fk.daddr, p->daddr, 16);
		struct frag_val fv = {.cookie = pod->cookie, .expires_ns = now + TO_FRAG};
		bpf_map_update_elem(&ap_frags, &fk, &fv, BPF_ANY);
	}
	return reason;
}

static __always_inline int run(struct __sk_buff *skb, __u8 dir, int dry)
{
	struct pkt p = {};
	__u64 now = bpf_ktime_get_ns();
	__u8 reason = decide(skb, &p, dir, dry, now);
	if (dry) {
		skb->cb[0] = reason;
	} else {
		count(reason);
		if (reason != R_NOT_IP)
			emit(&p, skb->ifindex, dir, reason, now);
	}
	return reason < R_NO_RULE ? TC_ACT_UNSPEC : TC_ACT_SHOT;
}

SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	return run(skb, DIR_EGRESS, 0);
}

SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	return run(skb, DIR_INGRESS, 0);
}

SEC("tc")
int check_from_pod(struct __sk_buff *skb)
{
	return run(skb, DIR_EGRESS, 1);
}

SEC("tc")
int check_to_pod(struct __sk_buff *skb)
{
	return run(skb, DIR_INGRESS, 1);
}

char __license[] SEC("license") = "Dual Apache-2.0/GPL";
