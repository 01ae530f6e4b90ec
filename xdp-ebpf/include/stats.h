/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * stats.h: the per-CPU packet/byte counters every program updates.
 */
#ifndef HOSTGATE_STATS_H
#define HOSTGATE_STATS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "hostgate_abi.h"

/*
 * hg_stats: packets and bytes by (hook, protocol class, verdict).
 * Per-CPU so the fast path never contends on a cache line; userspace sums
 * the CPUs. Pinned by name so counts survive daemon restarts and program
 * replacement. Key: hg_stats_index(). Value: struct hg_counter.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HG_STATS_ENTRIES);
	__type(key, __u32);
	__type(value, struct hg_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hg_stats SEC(".maps");

/* Keeps the ABI enums in the object's BTF for the layout test; never used.
 * Its own section, which the loader ignores, so it costs no map. */
struct hg_abi_enums hg_abi SEC(".hg_abi") __attribute__((used));

static __always_inline __u32 hg_stats_index(__u32 hook, __u32 proto,
					    __u32 verdict)
{
	return (hook * HG_PROTO_MAX + proto) * HG_VERDICT_MAX + verdict;
}

static __always_inline void hg_count(__u32 hook, __u32 proto, __u32 verdict,
				     __u64 bytes)
{
	__u32 key = hg_stats_index(hook, proto, verdict);
	struct hg_counter *c = bpf_map_lookup_elem(&hg_stats, &key);

	if (!c)
		return;
	/* Per-CPU slot: plain increments are race-free. */
	c->packets++;
	c->bytes += bytes;
}

#endif /* HOSTGATE_STATS_H */
