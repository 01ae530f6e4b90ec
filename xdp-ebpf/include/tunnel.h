/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tunnel.h: direct server return to other nodes. The balancing node wraps
 * the client's packet in IPIP (IPv4) or IP6IP6 (IPv6) addressed to the node
 * hosting the backend; that node's XDP unwraps it and delivers it like any
 * VIP packet, to its local container, whose reply goes straight to the
 * client. Only untagged frames are tunnelled.
 */
#ifndef HOSTGATE_TUNNEL_H
#define HOSTGATE_TUNNEL_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "hostgate_abi.h"
#include "csum.h"
#include "parse.h"

#define HG_TUNNEL_TTL 64

static __always_inline struct hg_node *hg_self(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&hg_node, &zero);
}

/*
 * Sends the (already FIB-resolved) frame out: back where it came from with
 * XDP_TX, or into another interface of hg_tx_ports.
 */
static __always_inline int hg_tunnel_send(struct xdp_md *ctx, struct bpf_fib_lookup *fib,
					  __u32 *verdict)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	int rc;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	if (fib->ifindex == ctx->ingress_ifindex) {
		*verdict = HG_VERDICT_TX;
		return XDP_TX;
	}
	rc = bpf_redirect_map(&hg_tx_ports, fib->ifindex, XDP_PASS);
	*verdict = rc == XDP_REDIRECT ? HG_VERDICT_REDIRECT : HG_VERDICT_PASS;
	return rc;
}

/* Wraps an untagged IPv4 frame in IPIP to @node_v4 and sends it. */
static __always_inline int hg_encap_v4(struct xdp_md *ctx, __be32 self_v4, __be32 node_v4,
				       __u32 *verdict)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr eth_copy, *eth = data;
	struct iphdr *inner = (void *)(eth + 1), *outer;
	struct bpf_fib_lookup fib = {};
	__u16 inner_len;
	__u8 tos;

	if ((void *)(inner + 1) > data_end)
		return XDP_DROP;
	inner_len = bpf_ntohs(inner->tot_len);
	tos = inner->tos;
	__builtin_memcpy(&eth_copy, eth, sizeof(eth_copy));
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth, &eth_copy, sizeof(eth_copy));
	*outer = (struct iphdr){
		.version = 4,
		.ihl = 5,
		.tos = tos,
		.tot_len = bpf_htons(inner_len + sizeof(struct iphdr)),
		.ttl = HG_TUNNEL_TTL,
		.protocol = IPPROTO_IPIP,
		.saddr = self_v4,
		.daddr = node_v4,
	};
	outer->check = hg_ipv4_csum(outer);

	fib.family = HG_AF_INET;
	fib.ifindex = ctx->ingress_ifindex;
	fib.tot_len = inner_len + sizeof(struct iphdr);
	fib.ipv4_src = self_v4;
	fib.ipv4_dst = node_v4;
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS) {
		/* The kernel routes the tunnel packet and resolves the neighbour. */
		*verdict = HG_VERDICT_PASS;
		return XDP_PASS;
	}
	return hg_tunnel_send(ctx, &fib, verdict);
}

/* Wraps an untagged IPv6 frame in IP6IP6 to @node_v6 and sends it. */
static __always_inline int hg_encap_v6(struct xdp_md *ctx, const __be32 *self_v6,
				       const __be32 *node_v6, __u32 *verdict)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr eth_copy, *eth = data;
	struct ipv6hdr *inner = (void *)(eth + 1), *outer;
	struct bpf_fib_lookup fib = {};
	__u16 inner_len;

	if ((void *)(inner + 1) > data_end)
		return XDP_DROP;
	inner_len = bpf_ntohs(inner->payload_len) + sizeof(struct ipv6hdr);
	__builtin_memcpy(&eth_copy, eth, sizeof(eth_copy));
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct ipv6hdr)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth, &eth_copy, sizeof(eth_copy));
	*outer = (struct ipv6hdr){
		.version = 6,
		.payload_len = bpf_htons(inner_len),
		.nexthdr = IPPROTO_IPV6,
		.hop_limit = HG_TUNNEL_TTL,
	};
	__builtin_memcpy(&outer->saddr, self_v6, 16);
	__builtin_memcpy(&outer->daddr, node_v6, 16);

	fib.family = HG_AF_INET6;
	fib.ifindex = ctx->ingress_ifindex;
	fib.tot_len = inner_len + sizeof(struct ipv6hdr);
	__builtin_memcpy(fib.ipv6_src, self_v6, 16);
	__builtin_memcpy(fib.ipv6_dst, node_v6, 16);
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS) {
		*verdict = HG_VERDICT_PASS;
		return XDP_PASS;
	}
	return hg_tunnel_send(ctx, &fib, verdict);
}

/* Tunnels the packet to the node hosting @be. */
static __always_inline int hg_dsr_forward(struct xdp_md *ctx, const struct hg_pkt *pkt,
					  const struct hg_backend *be, __u32 *verdict)
{
	struct hg_node *self = hg_self();

	*verdict = HG_VERDICT_DROP;
	if (!self || pkt->vlan_depth)
		return XDP_DROP;
	if (pkt->l3_proto == ETH_P_IP) {
		if (!self->v4)
			return XDP_DROP;
		return hg_encap_v4(ctx, self->v4, be->node[0], verdict);
	}
	if (!(self->v6[0] | self->v6[1] | self->v6[2] | self->v6[3]))
		return XDP_DROP;
	return hg_encap_v6(ctx, self->v6, be->node, verdict);
}

/*
 * Unwraps a tunnel packet addressed to this node. Returns 1 when it did
 * (the caller parses the inner packet), 0 for anything else.
 */
static __always_inline int hg_decap(struct xdp_md *ctx, const struct hg_pkt *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr eth_copy, *eth = data;
	struct hg_node *self;
	__u16 proto;
	int shrink;

	if (pkt->vlan_depth || (void *)(eth + 1) > data_end)
		return 0;
	if (pkt->l3_proto == ETH_P_IP && pkt->l4_proto == IPPROTO_IPIP) {
		struct iphdr *outer = (void *)(eth + 1);

		self = hg_self();
		if (!self || !self->v4 || (void *)(outer + 1) > data_end || outer->ihl != 5 ||
		    outer->daddr != self->v4)
			return 0;
		shrink = sizeof(struct iphdr);
		proto = ETH_P_IP;
	} else if (pkt->l3_proto == ETH_P_IPV6 && pkt->l4_proto == IPPROTO_IPV6 &&
		   pkt->l4_off == sizeof(struct ethhdr) + sizeof(struct ipv6hdr)) {
		struct ipv6hdr *outer = (void *)(eth + 1);

		self = hg_self();
		if (!self || (void *)(outer + 1) > data_end ||
		    __builtin_memcmp(&outer->daddr, self->v6, 16) != 0)
			return 0;
		shrink = sizeof(struct ipv6hdr);
		proto = ETH_P_IPV6;
	} else {
		return 0;
	}
	__builtin_memcpy(&eth_copy, eth, sizeof(eth_copy));
	if (bpf_xdp_adjust_head(ctx, shrink))
		return 0;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return 0;
	__builtin_memcpy(eth, &eth_copy, sizeof(eth_copy));
	eth->h_proto = bpf_htons(proto);
	return 1;
}

#endif /* HOSTGATE_TUNNEL_H */
