/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * fw.h: ingress firewall for customer IPs, in XDP before the load balancer.
 *
 * Cost does not grow with the number of rules: at most three hash lookups
 * find the rule group of (customer IP, protocol, port/type), one LPM
 * lookup finds the decision for the source (hostgate_rules::compile builds
 * both so that longest prefix equals first match). Entries carry a
 * ruleset version; the daemon writes a new version beside the old, flips
 * hg_fw_active, then removes the old one, so each packet is judged by one
 * whole ruleset.
 */
#ifndef HOSTGATE_FW_H
#define HOSTGATE_FW_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "hostgate_abi.h"
#include "csum.h"
#include "monitor.h"
#include "parse.h"

/* hg_fw_policy: (customer IP, proto, port) -> rule group. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HG_FW_POLICY_ENTRIES);
	__type(key, struct hg_fw_key);
	__type(value, struct hg_fw_group);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_fw_policy SEC(".maps");

/* hg_fw_src: (group, source prefix) -> decision. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, HG_FW_LPM_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hg_fw_lpm_key);
	__type(value, struct hg_fw_verdict);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_fw_src SEC(".maps");

/* hg_fw_active: the live ruleset version. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hg_fw_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_fw_active SEC(".maps");

/* hg_fw_stats: per-CPU packets and bytes decided by each rule id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HG_FW_MAX_RULES);
	__type(key, __u32);
	__type(value, struct hg_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_fw_stats SEC(".maps");

/* hg_fw_ip_stats: per-CPU packets and bytes from the network to each
 * guarded customer IP (key: hg_fw_key with only dst and the IPv6 flag
 * set). Userspace creates an entry per guarded IP; the programs only count
 * into existing ones, so the table holds what the operator declared. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, HG_FW_IP_STATS);
	__type(key, struct hg_fw_key);
	__type(value, struct hg_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_fw_ip_stats SEC(".maps");

/* hg_fw_buckets: rate-limit token buckets, the idlest forgotten first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HG_FW_BUCKETS);
	__type(key, struct hg_fw_bucket_key);
	__type(value, struct hg_fw_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_fw_buckets SEC(".maps");

/* hg_fw_flows: conversations containers opened; their replies are let in. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HG_FW_FLOWS);
	__type(key, struct hg_fw_flow);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_fw_flows SEC(".maps");

/* hg_fw_inbound: conversations the incoming rules allowed; the guarded
 * side's answers pass its outgoing rules. Kept apart from hg_fw_flows so
 * neither kind can open the other direction's door. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HG_FW_FLOWS);
	__type(key, struct hg_fw_flow);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_fw_inbound SEC(".maps");

#define HG_NSEC 1000000000ULL

/* Ports of a TCP/UDP packet in network order; 0 if none. */
static __always_inline int hg_ports_of(void *data, void *data_end, const struct hg_pkt *pkt,
				       __be16 *sport, __be16 *dport)
{
	__be16 *p = HG_PTR(data, pkt->l4_off);

	if (!pkt->has_l4 || (pkt->l4_proto != IPPROTO_TCP && pkt->l4_proto != IPPROTO_UDP) ||
	    (void *)(p + 2) > data_end)
		return -1;
	*sport = p[0];
	*dport = p[1];
	return 0;
}

/* Within the rate? Refills tokens (in ns of credit) and spends one packet. */
static __always_inline int hg_fw_within_rate(const struct hg_fw_verdict *v, const __be32 *src)
{
	struct hg_fw_bucket_key key = { .rule_id = v->rule_id };
	struct hg_fw_bucket *b;
	__u64 now = bpf_ktime_get_ns(), cost, cap;

	if (!v->rate)
		return 0;
	cost = HG_NSEC / v->rate;
	cap = cost * v->burst;
	__builtin_memcpy(key.src, src, 16);
	b = bpf_map_lookup_elem(&hg_fw_buckets, &key);
	if (!b) {
		struct hg_fw_bucket fresh = { .tokens = cap - cost, .last_ns = now };

		bpf_map_update_elem(&hg_fw_buckets, &key, &fresh, BPF_ANY);
		return 1;
	}
	/* Racy across CPUs by design: a bucket may let a few packets too many
	 * through under contention, never too few. */
	b->tokens += now - b->last_ns;
	if (b->tokens > cap)
		b->tokens = cap;
	b->last_ns = now;
	if (b->tokens < cost)
		return 0;
	b->tokens -= cost;
	return 1;
}

/* Bytes of the offending packet an ICMP error quotes: its IP header (20
 * for IPv4 without options, 40 for IPv6) and 8 bytes of what follows. */
#define HG_QUOTE_V4 28
#define HG_QUOTE_V6 48

/* The Internet checksum of @len (even, <= 2 * HG_CSUM_MAX_WORDS) bytes at @p. */
#define HG_CSUM_MAX_WORDS 32
static __always_inline __u32 hg_csum_words(const __u16 *p, int words, void *data_end, __u32 sum)
{
	int i;

#pragma unroll
	for (i = 0; i < HG_CSUM_MAX_WORDS; i++) {
		if (i >= words || (void *)(p + i + 1) > data_end)
			break;
		sum += p[i];
	}
	return sum;
}

/*
 * Writes an ICMP / ICMPv6 port unreachable from @dst to @src into a frame
 * already sized to Ethernet + outer headers + quote, the quote of the
 * original in place behind the room for the outer headers. Returns 0, or -1
 * if the frame is too short.
 */
static __always_inline int hg_fw_write_unreach(void *data, void *data_end, const struct ethhdr *orig,
					       const __be32 *src, const __be32 *dst, int v6)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, orig->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, orig->h_dest, ETH_ALEN);
	eth->h_proto = orig->h_proto;
	if (v6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		__u8 *icmp = (void *)(ip6 + 1);
		__u32 sum;

		if ((void *)(icmp + 8 + HG_QUOTE_V6) > data_end)
			return -1;
		*ip6 = (struct ipv6hdr){ .version = 6, .payload_len = bpf_htons(8 + HG_QUOTE_V6),
					 .nexthdr = IPPROTO_ICMPV6, .hop_limit = 64 };
		__builtin_memcpy(&ip6->saddr, dst, 16);
		__builtin_memcpy(&ip6->daddr, src, 16);
		__builtin_memset(icmp, 0, 8);
		icmp[0] = 1; /* destination unreachable */
		icmp[1] = 4; /* port unreachable */
		/* Pseudo-header: addresses, length, next header; then the message. */
		sum = hg_csum_words((__u16 *)&ip6->saddr, 16, data_end, 0);
		sum += bpf_htons(8 + HG_QUOTE_V6) + bpf_htons(IPPROTO_ICMPV6);
		sum = hg_csum_words((__u16 *)icmp, (8 + HG_QUOTE_V6) / 2, data_end, sum);
		((__u16 *)icmp)[1] = ~hg_csum_fold(sum);
	} else {
		struct iphdr *ip = (void *)(eth + 1);
		__u8 *icmp = (void *)(ip + 1);

		if ((void *)(icmp + 8 + HG_QUOTE_V4) > data_end)
			return -1;
		*ip = (struct iphdr){ .version = 4, .ihl = 5, .tot_len = bpf_htons(20 + 8 + HG_QUOTE_V4),
				      .ttl = 64, .protocol = IPPROTO_ICMP, .saddr = dst[0], .daddr = src[0] };
		ip->check = hg_ipv4_csum(ip);
		__builtin_memset(icmp, 0, 8);
		icmp[0] = 3; /* destination unreachable */
		icmp[1] = 3; /* port unreachable */
		((__u16 *)icmp)[1] = ~hg_csum_fold(hg_csum_words((__u16 *)icmp, (8 + HG_QUOTE_V4) / 2, data_end, 0));
	}
	return 0;
}

/*
 * What an ICMP error about @pkt needs: the original Ethernet header and
 * addresses, and the sizes of the outer headers and of the quote. Returns
 * -1 for what gets no error: ICMP itself (no ICMP about ICMP), tagged
 * frames, IPv4 with options, frames shorter than the quote.
 */
struct hg_unreach {
	struct ethhdr eth;
	__be32 src[4];
	__be32 dst[4];
	int v6;
	int outer;
	int quote;
};

static __always_inline int hg_fw_unreach_of(void *data, void *data_end, const struct hg_pkt *pkt,
					    struct hg_unreach *u)
{
	struct ethhdr *eth = data;
	int len = data_end - data;

	u->v6 = pkt->l3_proto == ETH_P_IPV6;
	u->outer = u->v6 ? sizeof(struct ipv6hdr) + 8 : sizeof(struct iphdr) + 8;
	u->quote = u->v6 ? HG_QUOTE_V6 : HG_QUOTE_V4;
	if (pkt->l4_proto == IPPROTO_ICMP || pkt->l4_proto == IPPROTO_ICMPV6 || pkt->vlan_depth ||
	    (void *)(eth + 1) > data_end || len < (int)sizeof(*eth) + u->quote)
		return -1;
	if (u->v6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__builtin_memcpy(u->src, &ip6->saddr, 16);
		__builtin_memcpy(u->dst, &ip6->daddr, 16);
	} else {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end || ip->ihl != 5)
			return -1;
		u->src[0] = ip->saddr;
		u->dst[0] = ip->daddr;
	}
	__builtin_memcpy(&u->eth, eth, sizeof(u->eth));
	return 0;
}

/*
 * Answers a non-TCP packet with ICMP / ICMPv6 port unreachable, as
 * nftables' reject does: the packet is turned into the error in place
 * (headers prepended, the quote of the original kept, the rest trimmed)
 * and sent back with XDP_TX.
 */
static __always_inline int hg_fw_reject_icmp(struct xdp_md *ctx, const struct hg_pkt *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct hg_unreach u;

	if (hg_fw_unreach_of(data, data_end, pkt, &u) < 0)
		return XDP_DROP;
	/* Keep only the quote of the original, then make room in front. */
	if (bpf_xdp_adjust_tail(ctx, (int)sizeof(u.eth) + u.quote - (int)(data_end - data)))
		return XDP_DROP;
	if (bpf_xdp_adjust_head(ctx, -u.outer))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (hg_fw_write_unreach(data, data_end, &u.eth, u.src, u.dst, u.v6) < 0)
		return XDP_DROP;
	return XDP_TX;
}

/* What turning a segment into its RST changed, for the checksum. */
struct hg_rst {
	__be32 old_seq, seq;
	__be32 old_ack, ack;
	__u16 old_flags, flags;
};

/*
 * Turns a TCP segment into the RST that answers it, in place: MACs,
 * addresses and ports swapped (which leaves the checksums unchanged);
 * seq = their ack (if any), ack = their seq + 1 for a SYN. The payload
 * stays (its length is in the IP header); the peer ignores it. The caller
 * fixes the TCP checksum from @r. Returns -1 for what gets no RST.
 */
static __always_inline int hg_fw_rst_in_place(void *data, void *data_end, const struct hg_pkt *pkt,
					      struct hg_rst *r)
{
	struct ethhdr *eth = data;
	struct tcphdr *tcp = HG_PTR(data, pkt->l4_off);
	__u8 mac[ETH_ALEN];
	__be16 port;

	if (!pkt->has_l4 || pkt->vlan_depth || (void *)(eth + 1) > data_end || (void *)(tcp + 1) > data_end ||
	    tcp->rst)
		return -1;
	if (pkt->l3_proto == ETH_P_IP) {
		struct iphdr *ip = HG_PTR(data, pkt->l3_off);
		__be32 a;

		if ((void *)(ip + 1) > data_end)
			return -1;
		a = ip->saddr;
		ip->saddr = ip->daddr;
		ip->daddr = a;
	} else {
		struct ipv6hdr *ip6 = HG_PTR(data, pkt->l3_off);
		struct in6_addr a;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		a = ip6->saddr;
		ip6->saddr = ip6->daddr;
		ip6->daddr = a;
	}
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	port = tcp->source;
	tcp->source = tcp->dest;
	tcp->dest = port;
	r->old_seq = tcp->seq;
	r->old_ack = tcp->ack_seq;
	r->seq = tcp->ack ? tcp->ack_seq : 0;
	r->ack = bpf_htonl(bpf_ntohl(tcp->seq) + (tcp->syn ? 1 : 0));
	tcp->seq = r->seq;
	tcp->ack_seq = r->ack;
	r->old_flags = ((__u16 *)tcp)[6];
	tcp->syn = 0;
	tcp->fin = 0;
	tcp->psh = 0;
	tcp->urg = 0;
	tcp->rst = 1;
	tcp->ack = 1;
	r->flags = ((__u16 *)tcp)[6];
	return 0;
}

/*
 * Answers a rejected packet from the network: a TCP segment with its RST,
 * anything else with an ICMP port unreachable (hg_fw_reject_icmp), sent
 * back with XDP_TX.
 */
static __always_inline int hg_fw_reject(struct xdp_md *ctx, const struct hg_pkt *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tcphdr *tcp = HG_PTR(data, pkt->l4_off);
	struct hg_rst r;

	if (pkt->l4_proto != IPPROTO_TCP)
		return hg_fw_reject_icmp(ctx, pkt);
	if (hg_fw_rst_in_place(data, data_end, pkt, &r) < 0 || (void *)(tcp + 1) > data_end)
		return XDP_DROP;
	tcp->check = hg_csum_update32(tcp->check, r.old_seq, r.seq);
	tcp->check = hg_csum_update32(tcp->check, r.old_ack, r.ack);
	tcp->check = hg_csum_update16(tcp->check, r.old_flags, r.flags);
	return XDP_TX;
}

/*
 * The TC side of reject, for what a container sends: the RST or the ICMP
 * error goes back out of the veth the packet came in by (a redirect to its
 * egress), so the container learns at once, as from nftables' reject.
 * hg_tc_to_container lets such frames through unjudged (they re-enter the
 * interface they came from). Returns TC_ACT_REDIRECT, or TC_ACT_SHOT when
 * no answer is due.
 */
static __always_inline int hg_fw_reject_skb(struct __sk_buff *skb, const struct hg_pkt *pkt)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (pkt->l4_proto == IPPROTO_TCP) {
		__u32 check = (pkt->l4_off & HG_MAX_HDR_OFF) + offsetof(struct tcphdr, check);
		struct hg_rst r;

		if (hg_fw_rst_in_place(data, data_end, pkt, &r) < 0)
			return TC_ACT_SHOT;
		/* The helper keeps a checksum the NIC is to finish (CHECKSUM_PARTIAL) right. */
		if (bpf_l4_csum_replace(skb, check, r.old_seq, r.seq, 4) ||
		    bpf_l4_csum_replace(skb, check, r.old_ack, r.ack, 4) ||
		    bpf_l4_csum_replace(skb, check, r.old_flags, r.flags, 2))
			return TC_ACT_SHOT;
	} else {
		struct hg_unreach u;

		if (hg_fw_unreach_of(data, data_end, pkt, &u) < 0)
			return TC_ACT_SHOT;
		/* Keep only the quote, then insert the outer headers after the MAC. */
		if (bpf_skb_change_tail(skb, sizeof(u.eth) + u.quote, 0) ||
		    bpf_skb_adjust_room(skb, u.outer, BPF_ADJ_ROOM_MAC, 0) || bpf_skb_pull_data(skb, skb->len))
			return TC_ACT_SHOT;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (hg_fw_write_unreach(data, data_end, &u.eth, u.src, u.dst, u.v6) < 0)
			return TC_ACT_SHOT;
	}
	return bpf_redirect(skb->ifindex, 0);
}

#define HG_FW_EGRESS 4

/*
 * Fills the policy key (guarded address, protocol, destination port or
 * ICMP type + 1) and the source-lookup key (the far address) of @pkt:
 * incoming, the guarded address is the destination; outgoing, the source.
 * Returns -1 for non-IP packets.
 */
static __always_inline int hg_fw_keys(void *data, void *data_end, const struct hg_pkt *pkt, __u32 version,
				      int egress, struct hg_fw_key *key, struct hg_fw_lpm_key *lkey)
{
	__u8 v6 = pkt->l3_proto == ETH_P_IPV6;

	if (pkt->l3_proto == ETH_P_IP) {
		struct iphdr *ip = HG_PTR(data, pkt->l3_off);

		if ((void *)(ip + 1) > data_end)
			return -1;
		key->dst[0] = egress ? ip->saddr : ip->daddr;
		__builtin_memcpy(lkey->addr, egress ? &ip->daddr : &ip->saddr, 4);
	} else if (pkt->l3_proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = HG_PTR(data, pkt->l3_off);

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__builtin_memcpy(key->dst, egress ? &ip6->saddr : &ip6->daddr, 16);
		__builtin_memcpy(lkey->addr, egress ? &ip6->daddr : &ip6->saddr, 16);
	} else {
		return -1;
	}
	key->flags = v6 | (version & 1) << 1 | (egress ? HG_FW_EGRESS : 0);
	key->proto = pkt->l4_proto;
	if (pkt->has_l4) {
		__u8 *l4 = HG_PTR(data, pkt->l4_off);

		if ((void *)(l4 + 4) > data_end)
			return -1;
		if (pkt->l4_proto == IPPROTO_TCP || pkt->l4_proto == IPPROTO_UDP)
			key->port = bpf_ntohs(*(__be16 *)(l4 + 2));
		else if (pkt->l4_proto == IPPROTO_ICMP || pkt->l4_proto == IPPROTO_ICMPV6)
			key->port = l4[0] + 1;
	}
	return 0;
}

/* The decision for the keys: (addr, proto, port), (addr, proto, any),
 * (addr, any, any), then the longest source prefix. NULL: not guarded. */
static __always_inline struct hg_fw_verdict *hg_fw_decide(struct hg_fw_key *key, struct hg_fw_lpm_key *lkey)
{
	struct hg_fw_group *g = bpf_map_lookup_elem(&hg_fw_policy, key);

	if (!g) {
		key->port = 0;
		g = bpf_map_lookup_elem(&hg_fw_policy, key);
	}
	if (!g) {
		key->proto = 0;
		g = bpf_map_lookup_elem(&hg_fw_policy, key);
	}
	if (!g)
		return NULL;
	lkey->group = g->group;
	return bpf_map_lookup_elem(&hg_fw_src, lkey);
}

/*
 * Remembers an allowed incoming conversation (remote, remote port, local
 * port) so the guarded side's answers pass its outgoing rules. Written only
 * when missing: the fast path mostly reads.
 */
static __always_inline void hg_fw_note_inbound(void *data, void *data_end, const struct hg_pkt *pkt,
					       const __u8 *remote, __u8 v6)
{
	struct hg_fw_flow flow = { .proto = pkt->l4_proto, .family = v6 ? HG_FAMILY_V6 : HG_FAMILY_V4 };
	__u64 now;

	if (hg_ports_of(data, data_end, pkt, &flow.rport, &flow.lport) < 0)
		return;
	__builtin_memcpy(flow.remote, remote, 16);
	if (bpf_map_lookup_elem(&hg_fw_inbound, &flow))
		return;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&hg_fw_inbound, &flow, &now, BPF_ANY);
}

static __always_inline void hg_fw_count(__u32 rule_id, __u64 bytes)
{
	struct hg_counter *c = bpf_map_lookup_elem(&hg_fw_stats, &rule_id);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/*
 * Judges a packet to a guarded customer IP. Returns -1 to let it go on
 * (allowed, or not a guarded IP), else the XDP action with *verdict set.
 */
static __always_inline int hg_fw_ingress(struct xdp_md *ctx, const struct hg_pkt *pkt, __u32 *verdict)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct hg_fw_lpm_key lkey = { .prefixlen = 32 + 128 };
	struct hg_fw_key key = {};
	struct hg_fw_state *state;
	struct hg_fw_verdict *v;
	__u32 zero = 0;
	__u8 v6 = pkt->l3_proto == ETH_P_IPV6;

	state = bpf_map_lookup_elem(&hg_fw_active, &zero);
	if (!state || !state->enabled || hg_fw_keys(data, data_end, pkt, state->version, 0, &key, &lkey) < 0)
		return -1;
	v = hg_fw_decide(&key, &lkey);
	if (!v)
		return -1; /* not a guarded address */
	{
		struct hg_fw_key ip = { .flags = v6 };
		struct hg_counter *c;

		__builtin_memcpy(ip.dst, key.dst, sizeof(ip.dst));
		c = bpf_map_lookup_elem(&hg_fw_ip_stats, &ip);
		if (c) {
			c->packets++;
			c->bytes += data_end - data;
		}
	}
	if (v->action != HG_FW_ALLOW) {
		/* A reply to a connection a container opened passes. */
		struct hg_fw_flow flow = { .proto = pkt->l4_proto, .family = v6 ? HG_FAMILY_V6 : HG_FAMILY_V4 };

		if (hg_ports_of(data, data_end, pkt, &flow.rport, &flow.lport) == 0) {
			__builtin_memcpy(flow.remote, lkey.addr, 16);
			if (bpf_map_lookup_elem(&hg_fw_flows, &flow))
				return -1;
		}
	}
	hg_fw_count(v->rule_id, data_end - data);
	switch (v->action) {
	case HG_FW_ALLOW:
		if (v->flags & HG_FW_TRACK_INBOUND)
			hg_fw_note_inbound(data, data_end, pkt, lkey.addr, v6);
		return -1;
	case HG_FW_RATE_LIMIT: {
		__be32 src[4] = {};

		__builtin_memcpy(src, lkey.addr, 16);
		if (hg_fw_within_rate(v, src)) {
			if (v->flags & HG_FW_TRACK_INBOUND)
				hg_fw_note_inbound(data, data_end, pkt, lkey.addr, v6);
			return -1;
		}
		hg_monitor_emit(HG_EVENT_FW_DROP, HG_HOOK_XDP_UPLINK, ctx->ingress_ifindex, v->rule_id, 0,
				v->action, data, data_end, pkt);
		*verdict = HG_VERDICT_DROP;
		return XDP_DROP;
	}
	case HG_FW_REJECT: {
		int action;

		/* Reported before the reject rewrites the packet into its answer. */
		hg_monitor_emit(HG_EVENT_FW_DROP, HG_HOOK_XDP_UPLINK, ctx->ingress_ifindex, v->rule_id, 0,
				v->action, data, data_end, pkt);
		action = hg_fw_reject(ctx, pkt);
		*verdict = action == XDP_TX ? HG_VERDICT_TX : HG_VERDICT_DROP;
		return action;
	}
	default:
		hg_monitor_emit(HG_EVENT_FW_DROP, HG_HOOK_XDP_UPLINK, ctx->ingress_ifindex, v->rule_id, 0,
				v->action, data, data_end, pkt);
		*verdict = HG_VERDICT_DROP;
		return XDP_DROP;
	}
}

/* Records a connection a container opens so its replies get in; returns
 * TC_ACT_OK, to let the packet go. */
static __always_inline int hg_fw_remember(struct __sk_buff *skb, const struct hg_pkt *pkt,
					  const __u8 *remote, __u8 v6)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct hg_fw_flow flow = { .proto = pkt->l4_proto, .family = v6 ? HG_FAMILY_V6 : HG_FAMILY_V4 };
	__u64 now = bpf_ktime_get_ns();

	if (hg_ports_of(data, data_end, pkt, &flow.lport, &flow.rport) < 0)
		return TC_ACT_OK;
	__builtin_memcpy(flow.remote, remote, 16);
	bpf_map_update_elem(&hg_fw_flows, &flow, &now, BPF_ANY);
	return TC_ACT_OK;
}

/* hg_uplinks: the uplinks' ifindexes. Frames that entered through one were
 * judged by XDP already; the container side judges only the rest. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_uplinks SEC(".maps");

/*
 * Judges what reaches a container from inside the node (another container,
 * the node itself) against the incoming rules guarding its address (TC on
 * the egress side of its veth). Returns 1 to deliver, 0 to drop.
 */
static __always_inline int hg_fw_to_container(struct __sk_buff *skb, const struct hg_pkt *pkt)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct hg_fw_lpm_key lkey = { .prefixlen = 32 + 128 };
	struct hg_fw_key key = {};
	struct hg_fw_state *state;
	struct hg_fw_verdict *v;
	__u32 zero = 0, in = skb->ingress_ifindex;

	state = bpf_map_lookup_elem(&hg_fw_active, &zero);
	/* From an uplink: judged in XDP. Back out of the veth it came in by: a
	 * reject's answer (hg_fw_reject_skb), judged on its way out. */
	if (!state || !state->enabled || bpf_map_lookup_elem(&hg_uplinks, &in) || in == skb->ifindex)
		return 1;
	if (hg_fw_keys(data, data_end, pkt, state->version, 0, &key, &lkey) < 0)
		return 1;
	v = hg_fw_decide(&key, &lkey);
	if (!v)
		return 1;
	if (v->action != HG_FW_ALLOW) {
		/* A reply to a conversation the container opened passes. */
		struct hg_fw_flow flow = { .proto = pkt->l4_proto, .family = pkt->l3_proto == ETH_P_IPV6 ? HG_FAMILY_V6 : HG_FAMILY_V4 };

		if (hg_ports_of(data, data_end, pkt, &flow.rport, &flow.lport) == 0) {
			__builtin_memcpy(flow.remote, lkey.addr, 16);
			if (bpf_map_lookup_elem(&hg_fw_flows, &flow))
				return 1;
		}
	}
	hg_fw_count(v->rule_id, skb->len);
	if (v->action == HG_FW_ALLOW)
		return 1;
	if (v->action == HG_FW_RATE_LIMIT && hg_fw_within_rate(v, (const __be32 *)lkey.addr))
		return 1;
	/* HG_HOOK_MAX: the TC hook towards a container, which has no counter row. */
	hg_monitor_emit(HG_EVENT_FW_DROP, HG_HOOK_MAX, skb->ifindex, v->rule_id, 0, v->action, data, data_end, pkt);
	return 0;
}

/*
 * Judges what a container sends against its customer's outgoing rules
 * (TC). Returns the TC action: TC_ACT_OK to let it go, TC_ACT_SHOT to drop
 * it, TC_ACT_REDIRECT when a reject answers it (hg_fw_reject_skb).
 */
static __always_inline int hg_fw_egress(struct __sk_buff *skb, const struct hg_pkt *pkt)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct hg_fw_lpm_key lkey = { .prefixlen = 32 + 128 };
	struct hg_fw_key key = {};
	struct hg_fw_state *state;
	struct hg_fw_verdict *v;
	__u32 zero = 0;
	__u8 v6 = pkt->l3_proto == ETH_P_IPV6;

	state = bpf_map_lookup_elem(&hg_fw_active, &zero);
	if (!state || !state->enabled || hg_fw_keys(data, data_end, pkt, state->version, 1, &key, &lkey) < 0)
		return TC_ACT_OK;
	v = hg_fw_decide(&key, &lkey);
	if (!v)
		return hg_fw_remember(skb, pkt, lkey.addr, v6); /* no outgoing rules */
	if (v->action != HG_FW_ALLOW) {
		/* An answer within a conversation the incoming rules allowed passes. */
		struct hg_fw_flow flow = { .proto = pkt->l4_proto, .family = v6 ? HG_FAMILY_V6 : HG_FAMILY_V4 };

		if (hg_ports_of(data, data_end, pkt, &flow.lport, &flow.rport) == 0) {
			__builtin_memcpy(flow.remote, lkey.addr, 16);
			if (bpf_map_lookup_elem(&hg_fw_inbound, &flow))
				return TC_ACT_OK;
		}
	}
	hg_fw_count(v->rule_id, skb->len);
	if (v->action == HG_FW_ALLOW)
		return hg_fw_remember(skb, pkt, lkey.addr, v6);
	if (v->action == HG_FW_RATE_LIMIT && hg_fw_within_rate(v, key.dst))
		return hg_fw_remember(skb, pkt, lkey.addr, v6);
	hg_monitor_emit(HG_EVENT_FW_DROP, HG_HOOK_TC_CONTAINER, skb->ifindex, v->rule_id, 0, v->action, data,
			data_end, pkt);
	return v->action == HG_FW_REJECT ? hg_fw_reject_skb(skb, pkt) : TC_ACT_SHOT;
}

#endif /* HOSTGATE_FW_H */
