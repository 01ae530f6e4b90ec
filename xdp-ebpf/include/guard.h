/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * guard.h: anti-spoofing on container veths (TC ingress, i.e. what the
 * container sends). A registered container may send only from its MAC
 * and its addresses (registered, or leased to it by hostgate's DHCP
 * server); ARP must claim one of its IPv4 addresses, and DHCP may ask from
 * 0.0.0.0. IPv6
 * link-local and unspecified sources stay allowed, or neighbour discovery
 * and duplicate address detection would break. Unregistered veths are not
 * guarded.
 */
#ifndef HOSTGATE_GUARD_H
#define HOSTGATE_GUARD_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>

#include "hostgate_abi.h"
#include "parse.h"
#include "monitor.h"

/* hg_guard: host-side ifindex of a container veth -> its MAC and drop count. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HG_GUARD_IFACES);
	__type(key, __u32);
	__type(value, struct hg_guard);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_guard SEC(".maps");

/* hg_guard_addrs: (ifindex, address) pairs a container may send from. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HG_GUARD_ADDRS);
	__type(key, struct hg_guard_addr);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_guard_addrs SEC(".maps");

#define HG_ARP_SPA_OFF (sizeof(struct ethhdr) + 14)

/*
 * A DHCP client's message (UDP 68 -> 67) from 0.0.0.0: how a container
 * asks for its address before it has one. The address it gets is then
 * added to hg_guard_addrs from its lease.
 */
static __always_inline int hg_guard_dhcp_discovery(const struct hg_pkt *pkt, const struct iphdr *ip,
						   void *data, void *data_end)
{
	struct udphdr *udp = HG_PTR(data, pkt->l4_off);

	if (ip->saddr != 0 || !pkt->has_l4 || pkt->l4_proto != IPPROTO_UDP)
		return 0;
	if ((void *)(udp + 1) > data_end)
		return 0;
	return udp->source == bpf_htons(68) && udp->dest == bpf_htons(67);
}

static __always_inline int hg_guard_addr_ok(__u32 ifindex, __u32 family, const void *addr, int len)
{
	struct hg_guard_addr key = { .ifindex = ifindex, .family = family };

	__builtin_memcpy(key.addr, addr, len);
	return bpf_map_lookup_elem(&hg_guard_addrs, &key) != NULL;
}

/* 1 if the frame may leave the container, 0 if it is spoofed. */
static __always_inline int hg_guard_check(struct __sk_buff *skb, const struct hg_pkt *pkt)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 ifindex = skb->ifindex;
	struct hg_guard *g = bpf_map_lookup_elem(&hg_guard, &ifindex);

	if (!g)
		return 1;
	if ((void *)(eth + 1) > data_end)
		goto spoofed;
	if (g->check_mac && __builtin_memcmp(eth->h_source, g->mac, ETH_ALEN) != 0)
		goto spoofed;
	switch (pkt->l3_proto) {
	case ETH_P_IP: {
		struct iphdr *ip = HG_PTR(data, pkt->l3_off);

		if ((void *)(ip + 1) > data_end)
			goto spoofed;
		if (hg_guard_dhcp_discovery(pkt, ip, data, data_end))
			return 1;
		if (!hg_guard_addr_ok(ifindex, HG_FAMILY_V4, &ip->saddr, 4))
			goto spoofed;
		return 1;
	}
	case ETH_P_IPV6: {
		struct ipv6hdr *ip6 = HG_PTR(data, pkt->l3_off);
		__u32 w0;

		if ((void *)(ip6 + 1) > data_end)
			goto spoofed;
		w0 = bpf_ntohl(ip6->saddr.in6_u.u6_addr32[0]);
		if ((w0 & 0xffc00000) == 0xfe800000) /* fe80::/10 link-local */
			return 1;
		if (!(ip6->saddr.in6_u.u6_addr32[0] | ip6->saddr.in6_u.u6_addr32[1] |
		      ip6->saddr.in6_u.u6_addr32[2] | ip6->saddr.in6_u.u6_addr32[3]))
			return 1; /* :: (duplicate address detection) */
		if (!hg_guard_addr_ok(ifindex, HG_FAMILY_V6, &ip6->saddr, 16))
			goto spoofed;
		return 1;
	}
	case ETH_P_ARP: {
		__be32 *spa = data + HG_ARP_SPA_OFF;

		if ((void *)(spa + 1) > data_end)
			goto spoofed;
		if (*spa == 0) /* ARP probe */
			return 1;
		if (!hg_guard_addr_ok(ifindex, HG_FAMILY_V4, spa, 4))
			goto spoofed;
		return 1;
	}
	default:
		/* Other ethertypes: only the MAC check applies. */
		return 1;
	}
spoofed:
	__sync_fetch_and_add(&g->drops, 1);
	hg_monitor_emit(HG_EVENT_SPOOF, HG_HOOK_TC_CONTAINER, ifindex, 0, 0, 0, data, data_end, pkt);
	return 0;
}

#endif /* HOSTGATE_GUARD_H */
