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

#define HG_LAYOUT_VERSION 4

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

/* ---- Load balancer ---------------------------------------------------- */

#define HG_MAX_VIPS 512        /* VIP ids are 0..HG_MAX_VIPS-1 */
#define HG_MAX_BACKENDS 4096   /* backend ids are 1..HG_MAX_BACKENDS-1; 0 = none */
#define HG_CT_ENTRIES 262144   /* LRU connection table size */
/* Template size of a Maglev ring; real rings may differ (BPF_F_INNER_MAP). */
#define HG_RING_TEMPLATE 7

/* Address families as stored in keys. */
enum hg_family {
	HG_FAMILY_V4 = 4,
	HG_FAMILY_V6 = 6,
};

/* Backend forwarding modes. */
enum hg_mode {
	HG_MODE_NAT = 0,   /* local container: DNAT + redirect, reverse NAT at TC */
	HG_MODE_DSR = 1,   /* remote node: IPIP / IP6IP6 to the node address */
};

/*
 * VIP lookup key. Addresses are in network order; an IPv4 address fills
 * addr[0] and leaves the rest zero. port = 0 and proto = 0 is the
 * address-only wildcard VIP, looked up after the exact one misses.
 */
struct hg_vip_key {
	__be32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 family;
};

/* What a VIP maps to (map hg_vips). */
struct hg_vip {
	__u32 id;          /* index into hg_maglev and hg_vip_stats */
	__u32 ring_size;   /* slots in this VIP's Maglev ring */
};

/* A backend (map hg_backends, indexed by backend id). */
struct hg_backend {
	__be32 addr[4];    /* where packets go (container address) */
	__be32 node[4];    /* DSR: the underlay address of the hosting node */
	__be16 port;       /* destination port at the backend; 0 keeps the VIP's */
	__u8 family;
	__u8 mode;         /* enum hg_mode */
	__u32 flags;       /* HG_BACKEND_* */
};

#define HG_BACKEND_ACTIVE 1  /* takes packets; cleared entries are holes */

/*
 * A flow as seen on the wire: the connection table key (client -> VIP) and
 * the reverse-NAT key (backend -> client) share this shape.
 */
struct hg_flow_key {
	__be32 src[4];
	__be32 dst[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u16 pad;         /* always zero: part of the hash key */
};

/* Connection table entry (map hg_conntrack). */
struct hg_ct_entry {
	__u32 backend_id;
	__u32 vip_id;
	__u64 last_seen_ns;
};

/* Reverse NAT entry (map hg_rnat): what a backend's reply must look like. */
struct hg_rnat_entry {
	__be32 vip[4];
	__be16 vip_port;
	__u8 family;
	__u8 pad;
};

/*
 * This node's own underlay addresses (map hg_node, one entry): the source
 * of the tunnels it opens and the destination of those it terminates.
 * Zero when the family is not configured.
 */
struct hg_node {
	__be32 v4;
	__be32 v6[4];
};

/* Per-VIP and per-backend counters (maps hg_vip_stats, hg_backend_stats). */
struct hg_lb_counter {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
};

/* ---- Firewall ---------------------------------------------------------- */

#define HG_FW_MAX_RULES 65536      /* rule ids 0..HG_FW_MAX_RULES-1 */
#define HG_FW_POLICY_ENTRIES 262144
#define HG_FW_LPM_ENTRIES 262144
#define HG_FW_BUCKETS 65536        /* rate-limit buckets (rule, source) */
#define HG_FW_IP_STATS 65536       /* guarded customer IPs counted */

/* What a firewall decision does. */
enum hg_fw_action {
	HG_FW_ALLOW = 0,
	HG_FW_DROP = 1,
	HG_FW_REJECT = 2,      /* drop and tell the sender (TCP RST) */
	HG_FW_RATE_LIMIT = 3,  /* allow within rate/burst per source, drop beyond */
};

/*
 * Policy key: (guarded address, protocol, destination port or ICMP type
 * + 1), 0 = any. The guarded address is the customer IP (destination) for
 * incoming rules, the container's address (source) for outgoing ones.
 * flags: bit 0 = IPv6, bit 1 = ruleset version (double buffering),
 * bit 2 = outgoing.
 */
struct hg_fw_key {
	__be32 dst[4];
	__u16 port;
	__u8 proto;
	__u8 flags;
};

/* A group of rules (value of hg_fw_policy). */
struct hg_fw_group {
	__u32 group;   /* (group id << 2) | version << 1 | IPv6 */
};

/* Source lookup: longest prefix within a group. prefixlen counts the 32
 * group bits plus the address bits. */
struct hg_fw_lpm_key {
	__u32 prefixlen;
	__u32 group;
	__u8 addr[16];
};

/* The decision for a (group, source prefix). */
struct hg_fw_verdict {
	__u32 rule_id;
	__u32 action;  /* enum hg_fw_action */
	__u32 rate;    /* packets per second (rate limit) */
	__u32 burst;
	__u32 flags;   /* HG_FW_TRACK_* */
};

/* The guarded side has outgoing rules: remember allowed incoming
 * conversations so its answers pass them (otherwise answers pass anyway). */
#define HG_FW_TRACK_INBOUND 1

/*
 * A conversation under way (map hg_fw_flows), seen from the guarded side:
 * opened by a container (its replies pass the incoming rules) or allowed
 * in (its answers pass the outgoing rules). The local address is left out
 * because egress SNAT (nftables) rewrites it after TC has seen the packet.
 */
struct hg_fw_flow {
	__be32 remote[4];
	__be16 rport;
	__be16 lport;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

#define HG_FW_FLOWS 262144

/* Which ruleset version is live (hg_fw_active, one entry). */
struct hg_fw_state {
	__u32 version;
	__u32 enabled; /* 0 until a ruleset was applied */
};

/* A token bucket per (rule, source) for rate limits. */
struct hg_fw_bucket_key {
	__u32 rule_id;
	__u32 pad;
	__be32 src[4];
};

struct hg_fw_bucket {
	__u64 tokens;   /* in nanoseconds of credit: one packet costs 1e9 / rate */
	__u64 last_ns;
};

/* ---- Anti-spoofing --------------------------------------------------- */

#define HG_GUARD_IFACES 4096
#define HG_GUARD_ADDRS 65536

/* A guarded container veth (map hg_guard, by host-side ifindex). */
struct hg_guard {
	__u8 mac[6];     /* the only source MAC the container may use */
	__u8 check_mac;  /* 0: any MAC (none registered) */
	__u8 pad;
	__u64 drops;     /* spoofed frames dropped (atomic adds) */
};

/* An address a guarded container may send from (map hg_guard_addrs). */
struct hg_guard_addr {
	__u32 ifindex;
	__u32 family;    /* enum hg_family */
	__be32 addr[4];
};

/* ---- Monitor: decisions streamed to `hostgate monitor` ------------------ */

/* What an event reports. */
enum hg_event_kind {
	HG_EVENT_FW_DROP = 0,    /* a firewall rule dropped or rejected a packet */
	HG_EVENT_SPOOF = 1,      /* anti-spoofing dropped what a container sent */
	HG_EVENT_LB_NEW = 2,     /* the load balancer chose a backend for a new flow */
	HG_EVENT_KIND_MAX = 3,
};

/* Which kinds are wanted, and how many of them to keep (map hg_monitor).
 * All zero while nobody watches: each decision site then pays one array
 * lookup and a test. */
struct hg_monitor_cfg {
	__u32 kinds;         /* bit (1 << enum hg_event_kind) per wanted kind */
	__u32 sample_every;  /* keep 1 of this many (0 or 1: all) */
};

/* One decision (ring buffer hg_events). */
struct hg_event {
	__u64 ts_ns;         /* bpf_ktime_get_ns() */
	__u32 kind;          /* enum hg_event_kind */
	__u32 hook;          /* enum hg_hook, or HG_HOOK_MAX for TC towards a container */
	__u32 ifindex;
	__u32 id;            /* firewall rule id, or VIP id */
	__u32 backend_id;    /* HG_EVENT_LB_NEW */
	__u32 action;        /* enum hg_fw_action for firewall events */
	__be32 src[4];
	__be32 dst[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;          /* IPPROTO_* */
	__u8 family;         /* enum hg_family, 0: not IP */
	__u8 pad[2];
};

/*
 * The enums above only reach the object's BTF if some emitted entity refers
 * to them. This struct is that entity (see hg_abi in stats.h); it is never
 * read or written.
 */
struct hg_abi_enums {
	enum hg_hook hook;
	enum hg_proto proto;
	enum hg_verdict verdict;
	enum hg_family family;
	enum hg_mode mode;
	enum hg_fw_action fw_action;
	enum hg_event_kind event_kind;
	struct hg_event event;
	struct hg_monitor_cfg monitor_cfg;
};

#endif /* HOSTGATE_ABI_H */
