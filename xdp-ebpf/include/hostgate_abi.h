/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * hostgate_abi.h: every type and constant exchanged between the BPF programs
 * and userspace. This is the single definition: userspace mirrors it in
 * userspace/hostgate-dataplane/src/abi.rs with #[repr(C)] types, and a test
 * compares the two against the BTF of the built object, so any drift fails
 * the build's tests.
 *
 * Bump HG_LAYOUT_VERSION whenever a map's key, value or size changes: pinned
 * maps live under a directory named after it, so a daemon of a new layout
 * never reuses a map of an old one (the kernel would not check it for us).
 */
#ifndef HOSTGATE_ABI_H
#define HOSTGATE_ABI_H

#include <linux/types.h>

#define HG_LAYOUT_VERSION 1

/* Where a program is attached. */
enum hg_hook {
	HG_HOOK_XDP_UPLINK = 0,    /* XDP on the node's uplink NIC */
	HG_HOOK_TC_CONTAINER = 1,  /* TC ingress of a container-facing veth,
				    * i.e. traffic the container sends */
	HG_HOOK_MAX = 2,
};

/* Protocol class of a packet, as the parser saw it. */
enum hg_proto {
	HG_PROTO_NON_IP = 0,       /* ARP, LLDP, anything not IPv4/IPv6 */
	HG_PROTO_IPV4_TCP = 1,
	HG_PROTO_IPV4_UDP = 2,
	HG_PROTO_IPV4_ICMP = 3,
	HG_PROTO_IPV4_OTHER = 4,   /* other L4 protocols (GRE, ESP, ...) */
	HG_PROTO_IPV4_FRAGMENT = 5,/* non-first fragment: no L4 header */
	HG_PROTO_IPV6_TCP = 6,
	HG_PROTO_IPV6_UDP = 7,
	HG_PROTO_IPV6_ICMP = 8,    /* ICMPv6 */
	HG_PROTO_IPV6_OTHER = 9,
	HG_PROTO_IPV6_FRAGMENT = 10,
	HG_PROTO_MALFORMED = 11,   /* truncated or inconsistent headers */
	HG_PROTO_MAX = 12,
};

/* What a program decided for a packet. */
enum hg_verdict {
	HG_VERDICT_PASS = 0,       /* XDP_PASS / TC_ACT_OK */
	HG_VERDICT_DROP = 1,       /* XDP_DROP / TC_ACT_SHOT */
	HG_VERDICT_TX = 2,         /* XDP_TX */
	HG_VERDICT_REDIRECT = 3,   /* XDP_REDIRECT / TC_ACT_REDIRECT */
	HG_VERDICT_MAX = 4,
};

/* One slot of the per-CPU statistics array (map hg_stats). */
struct hg_counter {
	__u64 packets;
	__u64 bytes;
};

/* hg_stats is indexed by (hook, proto, verdict), row-major. */
#define HG_STATS_ENTRIES (HG_HOOK_MAX * HG_PROTO_MAX * HG_VERDICT_MAX)

/*
 * The enums above only reach the object's BTF if some emitted entity refers
 * to them. This struct is that entity (see hg_abi in stats.h); it is never
 * read or written.
 */
struct hg_abi_enums {
	enum hg_hook hook;
	enum hg_proto proto;
	enum hg_verdict verdict;
};

#endif /* HOSTGATE_ABI_H */
