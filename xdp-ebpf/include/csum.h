/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * csum.h: incremental Internet checksum updates (RFC 1624) for rewrites in
 * XDP, where the skb checksum helpers do not exist. The one's complement
 * sum does not depend on byte order as long as every word is taken as it
 * lies in memory, so these work on network-order fields directly.
 */
#ifndef HOSTGATE_CSUM_H
#define HOSTGATE_CSUM_H

#include <linux/types.h>
#include <linux/ip.h>

static __always_inline __u16 hg_csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* The checksum @check after a 16-bit field changed from @from to @to. */
static __always_inline __u16 hg_csum_update16(__u16 check, __u16 from, __u16 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~from;
	sum += to;
	return ~hg_csum_fold(sum);
}

/* The checksum @check after a 32-bit field changed from @from to @to. */
static __always_inline __u16 hg_csum_update32(__u16 check, __u32 from, __u32 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~(from & 0xffff);
	sum += (__u16)~(from >> 16);
	sum += to & 0xffff;
	sum += to >> 16;
	return ~hg_csum_fold(sum);
}

/* The checksum @check after a 128-bit address changed from @from to @to. */
static __always_inline __u16 hg_csum_update128(__u16 check, const __be32 *from,
					       const __be32 *to)
{
	int i;

#pragma unroll
	for (i = 0; i < 4; i++)
		check = hg_csum_update32(check, from[i], to[i]);
	return check;
}

/* Full checksum of a fresh 20-byte IPv4 header (check field zero). */
static __always_inline __u16 hg_ipv4_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += w[i];
	return ~hg_csum_fold(sum);
}

#endif /* HOSTGATE_CSUM_H */
