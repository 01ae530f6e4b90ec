/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * parse.h: bounds-checked header parsing shared by the XDP and TC programs.
 *
 * The parser walks Ethernet, up to two VLAN tags (802.1Q / 802.1ad), IPv4
 * (including options) or IPv6 (including extension headers), and checks that
 * the L4 header (TCP with its options, UDP, ICMP, ICMPv6) lies inside the
 * packet. It only reads; it records offsets so later stages (load balancer,
 * firewall) can find the headers again without parsing twice.
 *
 * Every access is preceded by an explicit check against data_end: that is
 * what the verifier needs, and what keeps a truncated packet from being read
 * past its end.
 */
#ifndef HOSTGATE_PARSE_H
#define HOSTGATE_PARSE_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_endian.h>

#include "hostgate_abi.h"

#define HG_MAX_VLAN_DEPTH 2
/* Extension headers walked before giving up (and calling the packet OTHER). */
#define HG_MAX_IPV6_EXT 6
/* IPv4 fragment offset mask, in host order. */
#define HG_IP_OFFSET_MASK 0x1fff
#define HG_IP6_OFFSET_MASK 0xfff8

/*
 * Largest header offset later stages may use. The verifier only grants a
 * packet range to pointers whose variable offset is bounded well below
 * 64 KiB, so users mask offsets with this (see HG_PTR); L4 headers further
 * in are reported as absent.
 */
#define HG_MAX_HDR_OFF 1023
/* A pointer @off bytes into the packet, with the offset bounded for the verifier. */
#define HG_PTR(data, off) ((void *)(data) + ((off) & HG_MAX_HDR_OFF))

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

/* The headers of one packet, as offsets from the start of the frame. */
struct hg_pkt {
	__u16 l3_proto;    /* ethertype after VLAN tags, host order */
	__u16 l3_off;      /* offset of the IP header */
	__u16 l4_off;      /* offset of the L4 header (valid if has_l4) */
	__u8 l4_proto;     /* IPPROTO_* after IPv6 extension headers */
	__u8 proto_class;  /* enum hg_proto */
	__u8 has_l4;       /* L4 header present and complete */
	__u8 vlan_depth;
};

struct hg_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* Generic IPv6 extension header: next header, then length. */
struct hg_ipv6_opt_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct hg_ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

/* Size of the L4 header of @proto at @hdr, or -1 if it is not complete. */
static __always_inline int hg_l4_len(__u8 proto, void *hdr, void *data_end)
{
	switch (proto) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = hdr;
		int len;

		if ((void *)(tcp + 1) > data_end)
			return -1;
		len = tcp->doff * 4;
		if (len < (int)sizeof(*tcp) || hdr + len > data_end)
			return -1;
		return len;
	}
	case IPPROTO_UDP:
		if (hdr + sizeof(struct udphdr) > data_end)
			return -1;
		return sizeof(struct udphdr);
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		/* type, code, checksum and the 4-byte rest of header */
		if (hdr + 8 > data_end)
			return -1;
		return 8;
	default:
		return 0;
	}
}

static __always_inline __u8 hg_class(__u16 l3, __u8 l4)
{
	int v6 = l3 == ETH_P_IPV6;

	switch (l4) {
	case IPPROTO_TCP:
		return v6 ? HG_PROTO_IPV6_TCP : HG_PROTO_IPV4_TCP;
	case IPPROTO_UDP:
		return v6 ? HG_PROTO_IPV6_UDP : HG_PROTO_IPV4_UDP;
	case IPPROTO_ICMP:
		return v6 ? HG_PROTO_IPV6_OTHER : HG_PROTO_IPV4_ICMP;
	case IPPROTO_ICMPV6:
		return v6 ? HG_PROTO_IPV6_ICMP : HG_PROTO_IPV4_OTHER;
	default:
		return v6 ? HG_PROTO_IPV6_OTHER : HG_PROTO_IPV4_OTHER;
	}
}

/* Checks the L4 header at @l4 and fills in the L4 fields of @pkt. */
static __always_inline int hg_parse_l4(struct hg_pkt *pkt, void *data, void *l4,
				       void *data_end)
{
	int len = hg_l4_len(pkt->l4_proto, l4, data_end);

	if (len < 0)
		return -1;
	pkt->l4_off = l4 - data;
	pkt->has_l4 = len > 0 && pkt->l4_off <= HG_MAX_HDR_OFF;
	pkt->proto_class = hg_class(pkt->l3_proto, pkt->l4_proto);
	return 0;
}

static __always_inline int hg_parse_ipv4(struct hg_pkt *pkt, void *data,
					 void *data_end)
{
	struct iphdr *ip = data + pkt->l3_off;
	int ihl_len;

	if ((void *)(ip + 1) > data_end || ip->version != 4)
		return -1;
	ihl_len = ip->ihl * 4;
	if (ihl_len < (int)sizeof(*ip) || (void *)ip + ihl_len > data_end)
		return -1;
	pkt->l4_proto = ip->protocol;
	if (bpf_ntohs(ip->frag_off) & HG_IP_OFFSET_MASK) {
		pkt->proto_class = HG_PROTO_IPV4_FRAGMENT;
		return 0;
	}
	return hg_parse_l4(pkt, data, (void *)ip + ihl_len, data_end);
}

static __always_inline int hg_parse_ipv6(struct hg_pkt *pkt, void *data,
					 void *data_end)
{
	struct ipv6hdr *ip6 = data + pkt->l3_off;
	void *cursor;
	__u8 next;
	int i;

	if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
		return -1;
	next = ip6->nexthdr;
	cursor = ip6 + 1;

#pragma unroll
	for (i = 0; i < HG_MAX_IPV6_EXT; i++) {
		struct hg_ipv6_opt_hdr *opt = cursor;

		switch (next) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			if ((void *)(opt + 1) > data_end)
				return -1;
			next = opt->nexthdr;
			cursor += (opt->hdrlen + 1) * 8;
			break;
		case IPPROTO_AH:
			if ((void *)(opt + 1) > data_end)
				return -1;
			next = opt->nexthdr;
			cursor += (opt->hdrlen + 2) * 4;
			break;
		case IPPROTO_FRAGMENT: {
			struct hg_ipv6_frag_hdr *frag = cursor;

			if ((void *)(frag + 1) > data_end)
				return -1;
			if (bpf_ntohs(frag->frag_off) & HG_IP6_OFFSET_MASK) {
				pkt->l4_proto = frag->nexthdr;
				pkt->proto_class = HG_PROTO_IPV6_FRAGMENT;
				return 0;
			}
			next = frag->nexthdr;
			cursor += sizeof(*frag);
			break;
		}
		default:
			pkt->l4_proto = next;
			return hg_parse_l4(pkt, data, cursor, data_end);
		}
	}
	/* Too many extension headers to follow: still IPv6, L4 unknown. */
	pkt->l4_proto = next;
	pkt->proto_class = HG_PROTO_IPV6_OTHER;
	return 0;
}

/*
 * Parses the frame [data, data_end). Returns 0 and fills @pkt, or -1 for a
 * malformed frame (pkt->proto_class is then HG_PROTO_MALFORMED).
 */
static __always_inline int hg_parse(void *data, void *data_end,
				    struct hg_pkt *pkt)
{
	struct ethhdr *eth = data;
	__u16 proto;
	__u16 off;
	int i;

	*pkt = (struct hg_pkt){ .proto_class = HG_PROTO_MALFORMED };
	if ((void *)(eth + 1) > data_end)
		return -1;
	proto = bpf_ntohs(eth->h_proto);
	off = sizeof(*eth);

#pragma unroll
	for (i = 0; i < HG_MAX_VLAN_DEPTH; i++) {
		struct hg_vlan_hdr *vlan = data + off;

		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		if ((void *)(vlan + 1) > data_end)
			return -1;
		proto = bpf_ntohs(vlan->encap_proto);
		off += sizeof(*vlan);
		pkt->vlan_depth++;
	}

	pkt->l3_proto = proto;
	pkt->l3_off = off;
	switch (proto) {
	case ETH_P_IP:
		if (hg_parse_ipv4(pkt, data, data_end) < 0)
			goto malformed;
		return 0;
	case ETH_P_IPV6:
		if (hg_parse_ipv6(pkt, data, data_end) < 0)
			goto malformed;
		return 0;
	default:
		pkt->proto_class = HG_PROTO_NON_IP;
		return 0;
	}
malformed:
	pkt->proto_class = HG_PROTO_MALFORMED;
	pkt->has_l4 = 0;
	return -1;
}

#endif /* HOSTGATE_PARSE_H */
