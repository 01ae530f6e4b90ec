/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * xdp_pass: passes everything. Attached to the far end of a veth, it makes
 * that end accept frames sent with XDP_TX or XDP_REDIRECT, which veth
 * otherwise drops (GRO on the peer suffices for redirects, not for XDP_TX
 * on this kernel). Test beds use it on the ports of their virtual switch.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	(void)ctx;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
