/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * hostgate's kernel programs. Kept thin: each program parses, decides and
 * counts; the helpers live in ../include by concern.
 *
 *   hg_xdp_uplink     XDP on the uplink NIC: everything entering the node.
 *   hg_tc_container   TC ingress (TCX) on each container-facing veth: everything
 *                     a container sends.
 *   hg_tc_to_container TC egress (TCX) on the same veths: what reaches the
 *                     container from inside the node, judged by the incoming
 *                     rules (traffic from the network was judged in XDP).
 *
 * The load balancer sits between parse and count; the firewall will too.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "hostgate_abi.h"
#include "parse.h"
#include "stats.h"
#include "lb.h"
#include "fw.h"
#include "guard.h"

/* Bytes of headers the TC program wants in the linear part of an skb. */
#define HG_TC_PULL_LEN 128

SEC("xdp")
int hg_xdp_uplink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct hg_pkt pkt;

	__u32 verdict = HG_VERDICT_PASS;
	__u64 bytes = data_end - data;
	int action = XDP_PASS;

	if (hg_parse(data, data_end, &pkt) == 0) {
		int decapped = hg_decap(ctx, &pkt);
		int lb = -1;

		if (decapped) {
			/* A tunnel from another node: go on with the inner packet. */
			data = (void *)(long)ctx->data;
			data_end = (void *)(long)ctx->data_end;
			if (hg_parse(data, data_end, &pkt) < 0)
				decapped = 0;
		}
		/* The firewall guards customer IPs before anything balances them;
		 * tunnelled traffic was judged by the node that sent it. */
		lb = decapped ? -1 : hg_fw_ingress(ctx, &pkt, &verdict);
		if (lb < 0)
			lb = hg_lb_xdp(ctx, &pkt, decapped, &verdict);
		if (lb >= 0)
			action = lb;
	}
	hg_count(HG_HOOK_XDP_UPLINK, pkt.proto_class, verdict, bytes);
	return action;
}

/* Pulls paged headers into the linear part, then parses; as hg_parse. */
static __always_inline int hg_tc_parse(struct __sk_buff *skb, struct hg_pkt *pkt)
{
	__u32 len = skb->len;

	if (skb->data_end - skb->data < len)
		bpf_skb_pull_data(skb, len < HG_TC_PULL_LEN ? len : HG_TC_PULL_LEN);
	return hg_parse((void *)(long)skb->data, (void *)(long)skb->data_end, pkt);
}

SEC("classifier")
int hg_tc_container(struct __sk_buff *skb)
{
	struct hg_flow_key reply;
	struct hg_pkt pkt;
	__u32 verdict = HG_VERDICT_PASS;
	__u32 len = skb->len;
	int action = TC_ACT_OK;

	hg_tc_parse(skb, &pkt);
	if (!hg_guard_check(skb, &pkt)) {
		hg_count(HG_HOOK_TC_CONTAINER, pkt.proto_class, HG_VERDICT_DROP, len);
		return TC_ACT_SHOT;
	}
	if (pkt.proto_class != HG_PROTO_MALFORMED && hg_lb_reverse_nat(skb, &pkt, &reply)) {
		/* A reply of a balanced connection: its way in was judged already. */
		action = hg_lb_send_reply(skb, &pkt, &reply);
		if (action == TC_ACT_REDIRECT)
			verdict = HG_VERDICT_REDIRECT;
	} else {
		action = hg_fw_egress(skb, &pkt);
		if (action == TC_ACT_SHOT)
			verdict = HG_VERDICT_DROP;
		else if (action == TC_ACT_REDIRECT)
			verdict = HG_VERDICT_TX; /* a reject's answer, back to the container */
	}
	hg_count(HG_HOOK_TC_CONTAINER, pkt.proto_class, verdict, len);
	return action;
}

SEC("classifier")
int hg_tc_to_container(struct __sk_buff *skb)
{
	struct hg_pkt pkt;

	if (hg_tc_parse(skb, &pkt) < 0)
		return TC_ACT_OK;
	return hg_fw_to_container(skb, &pkt) ? TC_ACT_OK : TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
