/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Benchmark helpers (cargo xtask bench), not part of the data plane.
 *
 *   hg_bench_gen    run with BPF_PROG_TEST_RUN in live-frames mode on the
 *                   generator's veth: writes the headers of the template
 *                   (hg_bench_tpl) into the frame, gives it a random UDP
 *                   source port (a new flow) and transmits it (XDP_TX).
 *                   The headers are written every time because live-frames
 *                   pages are recycled with whatever the receiver left in
 *                   them (a load balancer rewrites the destination).
 *   hg_bench_sink   on the receiving containers' veths: drops every frame,
 *                   which the veth counts (rx_queue_*_xdp_drops).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define HG_BENCH_HDR (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))

struct hg_bench_tpl {
	__u8 bytes[HG_BENCH_HDR];
};

/* hg_bench_tpl: the Ethernet, IPv4 and UDP headers every frame starts with. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hg_bench_tpl);
} hg_bench_tpl SEC(".maps");

SEC("xdp")
int hg_bench_gen(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct hg_bench_tpl *tpl = bpf_map_lookup_elem(&hg_bench_tpl, &zero);
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(udp + 1) > data_end || !tpl)
		return XDP_DROP;
	__builtin_memcpy(data, tpl->bytes, HG_BENCH_HDR);
	udp->source = bpf_htons(1024 + (bpf_get_prandom_u32() & 0x7fff));
	udp->check = 0; /* no checksum: the port changes every frame */
	return XDP_TX;
}

SEC("xdp")
int hg_bench_sink(struct xdp_md *ctx)
{
	(void)ctx;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
