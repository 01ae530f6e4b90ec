/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * lb.h: the L4 load balancer. On the uplink (XDP): VIP lookup, connection
 * table, Maglev pick, destination NAT and delivery. On container veths
 * (TC): reverse NAT of the backends' replies.
 *
 * Tables are written by the daemon in an order that never shows a packet
 * a half-built state: backends before the rings that name them, a ring
 * before the VIP entry that leads to it; a changed ring is a new inner map
 * swapped into hg_maglev in one update.
 */
#ifndef HOSTGATE_LB_H
#define HOSTGATE_LB_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "hostgate_abi.h"
#include "csum.h"
#include "parse.h"
#include "monitor.h"

#define HG_AF_INET 2
#define HG_AF_INET6 10

/* hg_vips: VIP (exact, then address-only wildcard) -> id and ring size. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HG_MAX_VIPS * 2);
	__type(key, struct hg_vip_key);
	__type(value, struct hg_vip);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_vips SEC(".maps");

/* One Maglev ring: slot -> backend id. Sized per VIP (BPF_F_INNER_MAP). */
struct hg_maglev_ring {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HG_RING_TEMPLATE);
	__uint(map_flags, BPF_F_INNER_MAP);
	__type(key, __u32);
	__type(value, __u32);
};

/* hg_maglev: VIP id -> its ring. Replacing an entry swaps a ring atomically. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, HG_MAX_VIPS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct hg_maglev_ring);
} hg_maglev SEC(".maps");

/* hg_backends: backend id -> where and how to forward. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HG_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct hg_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_backends SEC(".maps");

/*
 * hg_conntrack: client flow -> backend, so a flow keeps its backend when
 * the backend set changes. LRU: the oldest idle flows make room. Pinned,
 * so flows survive daemon restarts.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HG_CT_ENTRIES);
	__type(key, struct hg_flow_key);
	__type(value, struct hg_ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_conntrack SEC(".maps");

/*
 * hg_rnat: backend reply flow (backend -> client) -> the VIP to answer
 * from. Twice the connection table, so a live flow loses its reverse entry
 * only after its forward one.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HG_CT_ENTRIES * 2);
	__type(key, struct hg_flow_key);
	__type(value, struct hg_rnat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_rnat SEC(".maps");

/* hg_vip_stats / hg_backend_stats: per-CPU traffic by VIP id / backend id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HG_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct hg_lb_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HG_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct hg_lb_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_backend_stats SEC(".maps");

/*
 * hg_tx_ports: interfaces XDP may redirect to (container veths), by
 * ifindex. A miss makes bpf_redirect_map fall back to XDP_PASS.
 */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_tx_ports SEC(".maps");

/* hg_node: this node's underlay addresses (index 0). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hg_node);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_node SEC(".maps");

/* TCP and UDP both start with the two ports. */
struct hg_ports {
	__be16 source;
	__be16 dest;
};

#include "tunnel.h"

static __always_inline __u32 hg_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = (k << 15) | (k >> 17);
	k *= 0x1b873593;
	h ^= k;
	h = (h << 13) | (h >> 19);
	return h * 5 + 0xe6546b64;
}

/* Murmur3-style hash of the client side of a flow (stable per flow). */
static __always_inline __u32 hg_flow_hash(const struct hg_flow_key *f)
{
	__u32 h = 0x5eed1234;
	int i;

#pragma unroll
	for (i = 0; i < 4; i++)
		h = hg_mix(h, f->src[i]);
	h = hg_mix(h, ((__u32)f->sport << 16) | f->dport);
	h = hg_mix(h, f->proto);
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* Fills @flow from the packet; 0 on success. */
static __always_inline int hg_flow_from_pkt(void *data, void *data_end,
					    const struct hg_pkt *pkt,
					    struct hg_flow_key *flow)
{
	struct hg_ports *ports = HG_PTR(data, pkt->l4_off);

	/* Read the ports right after their check: the verifier tracks the
	 * bound on this register only. */
	if ((void *)(ports + 1) > data_end)
		return -1;
	flow->sport = ports->source;
	flow->dport = ports->dest;
	if (pkt->l3_proto == ETH_P_IP) {
		struct iphdr *ip = HG_PTR(data, pkt->l3_off);

		if ((void *)(ip + 1) > data_end)
			return -1;
		flow->src[0] = ip->saddr;
		flow->dst[0] = ip->daddr;
		flow->family = HG_FAMILY_V4;
	} else {
		struct ipv6hdr *ip6 = HG_PTR(data, pkt->l3_off);

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__builtin_memcpy(flow->src, &ip6->saddr, 16);
		__builtin_memcpy(flow->dst, &ip6->daddr, 16);
		flow->family = HG_FAMILY_V6;
	}
	flow->proto = pkt->l4_proto;
	return 0;
}

static __always_inline struct hg_vip *hg_vip_lookup(const struct hg_flow_key *flow)
{
	struct hg_vip_key key = {};
	struct hg_vip *vip;

	__builtin_memcpy(key.addr, flow->dst, 16);
	key.port = flow->dport;
	key.proto = flow->proto;
	key.family = flow->family;
	vip = bpf_map_lookup_elem(&hg_vips, &key);
	if (vip)
		return vip;
	key.port = 0;
	key.proto = 0;
	return bpf_map_lookup_elem(&hg_vips, &key);
}

/* The backend id Maglev assigns to @flow, 0 if the VIP has none. */
static __always_inline __u32 hg_maglev_pick(const struct hg_vip *vip,
					    const struct hg_flow_key *flow)
{
	__u32 vip_id = vip->id;
	__u32 slot, *backend_id;
	void *ring;

	if (!vip->ring_size)
		return 0;
	ring = bpf_map_lookup_elem(&hg_maglev, &vip_id);
	if (!ring)
		return 0;
	slot = hg_flow_hash(flow) % vip->ring_size;
	backend_id = bpf_map_lookup_elem(ring, &slot);
	return backend_id ? *backend_id : 0;
}

static __always_inline void hg_lb_count(void *map, __u32 id, __u64 bytes, int new_flow)
{
	struct hg_lb_counter *c = bpf_map_lookup_elem(map, &id);

	if (!c)
		return;
	c->packets++;
	c->bytes += bytes;
	c->new_flows += new_flow;
}

/*
 * The backend for @flow to VIP @vip: the one in the connection table if it
 * is still active, else a new Maglev pick, recorded. NULL: nowhere to go.
 */
static __always_inline struct hg_backend *
hg_lb_backend(const struct hg_vip *vip, const struct hg_flow_key *flow,
	      __u32 *backend_id, int *new_flow)
{
	struct hg_ct_entry *ct = bpf_map_lookup_elem(&hg_conntrack, flow);
	struct hg_backend *be;
	__u32 id;

	if (ct && ct->vip_id == vip->id) {
		id = ct->backend_id;
		be = bpf_map_lookup_elem(&hg_backends, &id);
		if (be && (be->flags & HG_BACKEND_ACTIVE)) {
			*backend_id = id;
			*new_flow = 0;
			return be;
		}
	}
	id = hg_maglev_pick(vip, flow);
	if (!id)
		return NULL;
	be = bpf_map_lookup_elem(&hg_backends, &id);
	if (!be || !(be->flags & HG_BACKEND_ACTIVE))
		return NULL;
	struct hg_ct_entry entry = {
		.backend_id = id,
		.vip_id = vip->id,
		.last_seen_ns = bpf_ktime_get_ns(),
	};
	bpf_map_update_elem(&hg_conntrack, flow, &entry, BPF_ANY);
	*backend_id = id;
	*new_flow = 1;
	return be;
}

/* Offset of the L4 checksum field, or -1 (UDP and TCP only). */
static __always_inline int hg_l4_csum_off(__u8 proto)
{
	return proto == IPPROTO_TCP ? 16 : proto == IPPROTO_UDP ? 6 : -1;
}

/*
 * Rewrites destination address and port of the packet to the backend's,
 * updating checksums. Returns 0, or -1 if the headers moved out of reach.
 */
static __always_inline int hg_dnat(void *data, void *data_end, const struct hg_pkt *pkt,
				   const struct hg_backend *be)
{
	struct hg_ports *ports = HG_PTR(data, pkt->l4_off);
	__u16 *l4_check;
	int csum_off = hg_l4_csum_off(pkt->l4_proto);

	if (csum_off < 0 || (void *)(ports + 1) > data_end)
		return -1;
	l4_check = (void *)ports + csum_off;
	if ((void *)(l4_check + 1) > data_end)
		return -1;
	/* UDP over IPv4 may carry no checksum (0): keep it that way. */
	int has_csum = pkt->l4_proto == IPPROTO_TCP || *l4_check != 0 || pkt->l3_proto == ETH_P_IPV6;

	if (pkt->l3_proto == ETH_P_IP) {
		struct iphdr *ip = HG_PTR(data, pkt->l3_off);

		if ((void *)(ip + 1) > data_end)
			return -1;
		__be32 old = ip->daddr;

		ip->daddr = be->addr[0];
		ip->check = hg_csum_update32(ip->check, old, be->addr[0]);
		if (has_csum)
			*l4_check = hg_csum_update32(*l4_check, old, be->addr[0]);
	} else {
		struct ipv6hdr *ip6 = HG_PTR(data, pkt->l3_off);
		__be32 old[4];

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__builtin_memcpy(old, &ip6->daddr, 16);
		__builtin_memcpy(&ip6->daddr, be->addr, 16);
		*l4_check = hg_csum_update128(*l4_check, old, be->addr);
	}
	if (be->port && be->port != ports->dest) {
		if (has_csum)
			*l4_check = hg_csum_update16(*l4_check, ports->dest, be->port);
		ports->dest = be->port;
	}
	if (pkt->l4_proto == IPPROTO_UDP && has_csum && *l4_check == 0)
		*l4_check = 0xffff;
	return 0;
}

/*
 * Delivers a rewritten packet: straight into the egress interface when the
 * FIB knows the next hop and the interface is in hg_tx_ports, else to the
 * kernel's own forwarding (XDP_PASS), which resolves neighbours itself.
 */
static __always_inline int hg_forward(struct xdp_md *ctx, const struct hg_pkt *pkt,
				      __u32 *verdict)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth = data;
	int rc;

	*verdict = HG_VERDICT_PASS;
	if (pkt->vlan_depth || (void *)(eth + 1) > data_end)
		return XDP_PASS;
	fib.ifindex = ctx->ingress_ifindex;
	fib.l4_protocol = pkt->l4_proto;
	if (pkt->l3_proto == ETH_P_IP) {
		struct iphdr *ip = HG_PTR(data, pkt->l3_off);

		if ((void *)(ip + 1) > data_end || ip->ttl <= 1)
			return XDP_PASS;
		fib.family = HG_AF_INET;
		fib.tot_len = bpf_ntohs(ip->tot_len);
		fib.ipv4_src = ip->saddr;
		fib.ipv4_dst = ip->daddr;
		rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
		if (rc != BPF_FIB_LKUP_RET_SUCCESS)
			return XDP_PASS;
		/* We route: decrement the TTL like the kernel would. */
		ip->check = hg_csum_update16(ip->check, bpf_htons((__u16)ip->ttl << 8),
					     bpf_htons((__u16)(ip->ttl - 1) << 8));
		ip->ttl--;
	} else {
		struct ipv6hdr *ip6 = HG_PTR(data, pkt->l3_off);

		if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1)
			return XDP_PASS;
		fib.family = HG_AF_INET6;
		fib.tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
		rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
		if (rc != BPF_FIB_LKUP_RET_SUCCESS)
			return XDP_PASS;
		ip6->hop_limit--;
	}
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	rc = bpf_redirect_map(&hg_tx_ports, fib.ifindex, XDP_PASS);
	if (rc == XDP_REDIRECT)
		*verdict = HG_VERDICT_REDIRECT;
	return rc;
}

/*
 * An ICMP error about a VIP's reply (fragmentation needed, packet too big,
 * unreachable) goes to the backend that owns the flow, rewritten so the
 * backend's kernel recognises its own packet inside. Returns -1 when the
 * packet is not such an error.
 */
static __always_inline int hg_lb_icmp(struct xdp_md *ctx, const struct hg_pkt *pkt,
				      int decapped, __u32 *verdict)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct hg_flow_key flow = {};
	struct hg_ct_entry *ct;
	struct hg_backend *be;
	struct hg_vip *vip;
	struct hg_ports *ports;
	__u16 *icmp_check;
	__u8 *icmp = HG_PTR(data, pkt->l4_off);
	__u32 id;

	if ((void *)(icmp + 8) > data_end)
		return -1;
	icmp_check = (__u16 *)(icmp + 2);
	if (pkt->l3_proto == ETH_P_IP) {
		struct iphdr *inner = (void *)(icmp + 8);

		if (icmp[0] != 3 /* destination unreachable */ || (void *)(inner + 1) > data_end ||
		    inner->ihl != 5)
			return -1;
		ports = (void *)(inner + 1);
		if ((void *)(ports + 1) > data_end)
			return -1;
		/* The error is about VIP -> client; the flow is client -> VIP. */
		flow.src[0] = inner->daddr;
		flow.dst[0] = inner->saddr;
		flow.proto = inner->protocol;
		flow.family = HG_FAMILY_V4;
	} else {
		struct ipv6hdr *inner = (void *)(icmp + 8);

		if ((icmp[0] != 1 && icmp[0] != 2 /* unreachable, too big */) ||
		    (void *)(inner + 1) > data_end)
			return -1;
		ports = (void *)(inner + 1);
		if ((void *)(ports + 1) > data_end)
			return -1;
		__builtin_memcpy(flow.src, &inner->daddr, 16);
		__builtin_memcpy(flow.dst, &inner->saddr, 16);
		flow.proto = inner->nexthdr;
		flow.family = HG_FAMILY_V6;
	}
	if (flow.proto != IPPROTO_TCP && flow.proto != IPPROTO_UDP)
		return -1;
	flow.sport = ports->dest;
	flow.dport = ports->source;
	vip = hg_vip_lookup(&flow);
	if (!vip)
		return -1;

	*verdict = HG_VERDICT_DROP;
	ct = bpf_map_lookup_elem(&hg_conntrack, &flow);
	if (!ct || ct->vip_id != vip->id)
		return XDP_DROP; /* no such flow: nobody to tell */
	id = ct->backend_id;
	be = bpf_map_lookup_elem(&hg_backends, &id);
	if (!be || !(be->flags & HG_BACKEND_ACTIVE))
		return XDP_DROP;
	hg_lb_count(&hg_vip_stats, vip->id, data_end - data, 0);
	hg_lb_count(&hg_backend_stats, id, data_end - data, 0);
	if (be->mode == HG_MODE_DSR)
		return decapped ? XDP_DROP : hg_dsr_forward(ctx, pkt, be, verdict);

	/* Inner packet: its source becomes the backend (and its port). */
	if (be->port && be->port != ports->source) {
		*icmp_check = hg_csum_update16(*icmp_check, ports->source, be->port);
		ports->source = be->port;
	}
	if (pkt->l3_proto == ETH_P_IP) {
		struct iphdr *outer = HG_PTR(data, pkt->l3_off);
		struct iphdr *inner = (void *)(icmp + 8);
		__be32 vip_addr;
		__u16 old_check;

		if ((void *)(outer + 1) > data_end || (void *)(inner + 1) > data_end)
			return XDP_DROP;
		vip_addr = inner->saddr;
		old_check = inner->check;
		inner->saddr = be->addr[0];
		inner->check = hg_csum_update32(inner->check, vip_addr, be->addr[0]);
		*icmp_check = hg_csum_update32(*icmp_check, vip_addr, be->addr[0]);
		*icmp_check = hg_csum_update16(*icmp_check, old_check, inner->check);
		outer->daddr = be->addr[0];
		outer->check = hg_csum_update32(outer->check, vip_addr, be->addr[0]);
	} else {
		struct ipv6hdr *outer = HG_PTR(data, pkt->l3_off);
		struct ipv6hdr *inner = (void *)(icmp + 8);
		__be32 vip_addr[4];

		if ((void *)(outer + 1) > data_end || (void *)(inner + 1) > data_end)
			return XDP_DROP;
		__builtin_memcpy(vip_addr, &inner->saddr, 16);
		__builtin_memcpy(&inner->saddr, be->addr, 16);
		__builtin_memcpy(&outer->daddr, be->addr, 16);
		/* The ICMPv6 checksum covers both: the pseudo-header's destination
		 * and the inner source changed the same way. */
		*icmp_check = hg_csum_update128(*icmp_check, vip_addr, be->addr);
		*icmp_check = hg_csum_update128(*icmp_check, vip_addr, be->addr);
	}
	return hg_forward(ctx, pkt, verdict);
}

/*
 * The uplink's load balancer. Returns -1 when the packet is not for a VIP
 * (the caller goes on), else the XDP action, with *verdict for hg_stats.
 */
static __always_inline int hg_lb_xdp(struct xdp_md *ctx, const struct hg_pkt *pkt,
				     int decapped, __u32 *verdict)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct hg_flow_key flow = {};
	struct hg_backend *be;
	struct hg_vip *vip;
	__u32 backend_id = 0;
	int new_flow = 0;
	__u64 bytes = data_end - data;

	if (!pkt->has_l4)
		return -1;
	if (pkt->proto_class == HG_PROTO_IPV4_ICMP || pkt->proto_class == HG_PROTO_IPV6_ICMP)
		return hg_lb_icmp(ctx, pkt, decapped, verdict);
	if (pkt->l4_proto != IPPROTO_TCP && pkt->l4_proto != IPPROTO_UDP)
		return -1;
	if (hg_flow_from_pkt(data, data_end, pkt, &flow) < 0)
		return -1;
	vip = hg_vip_lookup(&flow);
	if (!vip)
		return -1;

	be = hg_lb_backend(vip, &flow, &backend_id, &new_flow);
	hg_lb_count(&hg_vip_stats, vip->id, bytes, new_flow);
	if (!be) {
		*verdict = HG_VERDICT_DROP;
		return XDP_DROP;
	}
	hg_lb_count(&hg_backend_stats, backend_id, bytes, new_flow);
	if (new_flow)
		hg_monitor_emit(HG_EVENT_LB_NEW, HG_HOOK_XDP_UPLINK, ctx->ingress_ifindex, vip->id, backend_id, 0,
				data, data_end, pkt);

	if (be->mode == HG_MODE_DSR) {
		/* Never tunnel twice: a node that received a tunnel delivers locally. */
		if (decapped) {
			*verdict = HG_VERDICT_DROP;
			return XDP_DROP;
		}
		return hg_dsr_forward(ctx, pkt, be, verdict);
	}
	if (new_flow) {
		/* The reply will come from the backend; remember which VIP it answers for. */
		struct hg_flow_key reply = {
			.sport = be->port ? be->port : flow.dport,
			.dport = flow.sport,
			.proto = flow.proto,
			.family = flow.family,
		};
		struct hg_rnat_entry rn = { .vip_port = flow.dport, .family = flow.family };

		__builtin_memcpy(reply.src, be->addr, 16);
		__builtin_memcpy(reply.dst, flow.src, 16);
		__builtin_memcpy(rn.vip, flow.dst, 16);
		bpf_map_update_elem(&hg_rnat, &reply, &rn, BPF_ANY);
	}
	if (hg_dnat(data, data_end, pkt, be) < 0) {
		*verdict = HG_VERDICT_DROP;
		return XDP_DROP;
	}
	return hg_forward(ctx, pkt, verdict);
}

/*
 * Container side: a reply from a NAT backend gets the VIP back as its
 * source. Uses the skb checksum helpers, which also handle checksums the
 * container left to offload (CHECKSUM_PARTIAL). Returns 1 when it rewrote
 * the packet (and fills @reply with the rewritten flow), else 0.
 */
static __always_inline int hg_lb_reverse_nat(struct __sk_buff *skb, const struct hg_pkt *pkt,
					     struct hg_flow_key *reply)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct hg_flow_key flow = {};
	struct hg_rnat_entry *rn;
	int csum_off = hg_l4_csum_off(pkt->l4_proto);
	__u64 mangled0 = pkt->l4_proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u32 l4_check = pkt->l4_off + csum_off;
	__be16 old_port;
	int i;

	if (!pkt->has_l4 || csum_off < 0)
		return 0;
	if (hg_flow_from_pkt(data, data_end, pkt, &flow) < 0)
		return 0;
	rn = bpf_map_lookup_elem(&hg_rnat, &flow);
	if (!rn)
		return 0;
	old_port = flow.sport;
	if (pkt->l3_proto == ETH_P_IP) {
		__u32 ip_off = pkt->l3_off;

		bpf_l4_csum_replace(skb, l4_check, flow.src[0], rn->vip[0],
				    BPF_F_PSEUDO_HDR | mangled0 | sizeof(__be32));
		bpf_l3_csum_replace(skb, ip_off + offsetof(struct iphdr, check), flow.src[0],
				    rn->vip[0], sizeof(__be32));
		bpf_skb_store_bytes(skb, ip_off + offsetof(struct iphdr, saddr), &rn->vip[0],
				    sizeof(__be32), 0);
	} else {
#pragma unroll
		for (i = 0; i < 4; i++)
			bpf_l4_csum_replace(skb, l4_check, flow.src[i], rn->vip[i],
					    BPF_F_PSEUDO_HDR | sizeof(__be32));
		bpf_skb_store_bytes(skb, pkt->l3_off + offsetof(struct ipv6hdr, saddr), rn->vip,
				    16, 0);
	}
	if (rn->vip_port != old_port) {
		__be16 port = rn->vip_port;

		bpf_l4_csum_replace(skb, l4_check, old_port, port, mangled0 | sizeof(__be16));
		bpf_skb_store_bytes(skb, pkt->l4_off, &port, sizeof(port), 0);
	}
	*reply = flow;
	__builtin_memcpy(reply->src, rn->vip, 16);
	reply->sport = rn->vip_port;
	return 1;
}

/*
 * Sends a reverse-NATed reply straight out of the interface towards the
 * client (bpf_redirect_neigh resolves the next hop), as a router would,
 * TTL decremented. The kernel's own input path would refuse it: its
 * source, the customer IP, is usually an address of this node.
 */
static __always_inline int hg_lb_send_reply(struct __sk_buff *skb, const struct hg_pkt *pkt,
					    const struct hg_flow_key *reply)
{
	struct bpf_fib_lookup fib = {};
	__u8 ttl;
	int rc;

	fib.ifindex = skb->ingress_ifindex;
	fib.l4_protocol = reply->proto;
	fib.tot_len = skb->len - pkt->l3_off;
	if (reply->family == HG_FAMILY_V4) {
		__u32 ttl_off = pkt->l3_off + offsetof(struct iphdr, ttl);

		if (bpf_skb_load_bytes(skb, ttl_off, &ttl, 1) < 0 || ttl <= 1)
			return TC_ACT_OK;
		fib.family = HG_AF_INET;
		fib.ipv4_src = reply->src[0];
		fib.ipv4_dst = reply->dst[0];
		rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
		if (rc != BPF_FIB_LKUP_RET_SUCCESS)
			return TC_ACT_OK;
		__u8 new_ttl = ttl - 1;

		bpf_l3_csum_replace(skb, pkt->l3_off + offsetof(struct iphdr, check),
				    bpf_htons((__u16)ttl << 8), bpf_htons((__u16)new_ttl << 8), 2);
		bpf_skb_store_bytes(skb, ttl_off, &new_ttl, 1, 0);
	} else {
		__u32 hop_off = pkt->l3_off + offsetof(struct ipv6hdr, hop_limit);

		if (bpf_skb_load_bytes(skb, hop_off, &ttl, 1) < 0 || ttl <= 1)
			return TC_ACT_OK;
		fib.family = HG_AF_INET6;
		__builtin_memcpy(fib.ipv6_src, reply->src, 16);
		__builtin_memcpy(fib.ipv6_dst, reply->dst, 16);
		rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
		if (rc != BPF_FIB_LKUP_RET_SUCCESS)
			return TC_ACT_OK;
		ttl--;
		bpf_skb_store_bytes(skb, hop_off, &ttl, 1, 0);
	}
	return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
}

#endif /* HOSTGATE_LB_H */
