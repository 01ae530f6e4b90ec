/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * monitor.h: decisions reported to userspace (`hostgate monitor`) through a
 * ring buffer. Off unless someone watches: the daemon sets hg_monitor's
 * kinds while a monitor is connected, and clears them after. Only decision
 * sites call in (a firewall drop, a spoofed frame, a new balanced flow),
 * never the plain forwarding path, and a full ring buffer just loses
 * events (bpf_ringbuf_reserve fails; nothing waits).
 */
#ifndef HOSTGATE_MONITOR_H
#define HOSTGATE_MONITOR_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>

#include "hostgate_abi.h"
#include "parse.h"

/* hg_monitor: one entry, what the monitor wants (see struct hg_monitor_cfg). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hg_monitor_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_monitor SEC(".maps");

/* hg_events: the decisions, for the daemon to read (256 KiB: about 3 000
 * events between two reads). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_events SEC(".maps");

/* Whether an event of `kind` is wanted now (and sampled in). */
static __always_inline int hg_monitor_wants(__u32 kind)
{
	__u32 zero = 0;
	struct hg_monitor_cfg *cfg = bpf_map_lookup_elem(&hg_monitor, &zero);

	if (!cfg || !(cfg->kinds & (1u << kind)))
		return 0;
	return cfg->sample_every <= 1 || bpf_get_prandom_u32() % cfg->sample_every == 0;
}

/* Copies the addresses and ports of the packet at `data` into `e`. */
static __always_inline void hg_monitor_addrs(struct hg_event *e, void *data, void *data_end,
					     const struct hg_pkt *pkt)
{
	if (pkt->l3_proto == ETH_P_IP) {
		struct iphdr *ip = HG_PTR(data, pkt->l3_off);

		if ((void *)(ip + 1) > data_end)
			return;
		e->family = HG_FAMILY_V4;
		e->src[0] = ip->saddr;
		e->dst[0] = ip->daddr;
		e->proto = ip->protocol;
	} else if (pkt->l3_proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = HG_PTR(data, pkt->l3_off);

		if ((void *)(ip6 + 1) > data_end)
			return;
		e->family = HG_FAMILY_V6;
		__builtin_memcpy(e->src, &ip6->saddr, 16);
		__builtin_memcpy(e->dst, &ip6->daddr, 16);
		e->proto = pkt->l4_proto;
	} else {
		return;
	}
	if (pkt->has_l4 && (pkt->l4_proto == IPPROTO_TCP || pkt->l4_proto == IPPROTO_UDP)) {
		/* Source and destination ports lead both headers. */
		__be16 *ports = HG_PTR(data, pkt->l4_off);

		if ((void *)(ports + 2) > data_end)
			return;
		e->sport = ports[0];
		e->dport = ports[1];
	}
}

/*
 * The reader is woken only once this much waits in the ring; below it, it
 * finds the events at its next poll timeout (the daemon's is 200 ms). A
 * wake-up per event costs every reported packet a wake-up of the reader
 * (bench fw (c) measured about 19x the cost of the off state).
 */
#define HG_EVENTS_WAKEUP_BYTES (64 * sizeof(struct hg_event))

/* Reports one decision if it is wanted. */
static __always_inline void hg_monitor_emit(__u32 kind, __u32 hook, __u32 ifindex, __u32 id, __u32 backend_id,
					    __u32 action, void *data, void *data_end, const struct hg_pkt *pkt)
{
	struct hg_event *e;

	if (!hg_monitor_wants(kind))
		return;
	e = bpf_ringbuf_reserve(&hg_events, sizeof(*e), 0);
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->hook = hook;
	e->ifindex = ifindex;
	e->id = id;
	e->backend_id = backend_id;
	e->action = action;
	hg_monitor_addrs(e, data, data_end, pkt);
	bpf_ringbuf_submit(e, bpf_ringbuf_query(&hg_events, BPF_RB_AVAIL_DATA) >= HG_EVENTS_WAKEUP_BYTES
				      ? BPF_RB_FORCE_WAKEUP
				      : BPF_RB_NO_WAKEUP);
}

#endif /* HOSTGATE_MONITOR_H */
