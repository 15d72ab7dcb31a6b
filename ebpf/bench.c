/* Benchmark-only object: the real VLAN helpers of include/vlan.h in a pair that leaves the skb
 * as it found it (push the access tag, then pop it), so that BPF_PROG_TEST_RUN can repeat it
 * warm. Never attached; tests/bench/test_vlan_cost.py loads it next to nlab_empty. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "abi.h"
#include "parsing.h"
#include "vlan.h"

BPF_ARRAY(bench_port, struct nlab_port, 1);

int bench_push_pop(struct __sk_buff *skb)
{
    __u32 zero = 0;
    const struct nlab_port *port = bench_port.lookup(&zero);
    struct ethhdr *eth = eth_header(skb);

    if (!port || !eth)
        return TC_ACT_SHOT;
    int vlan = access_ingress(skb, port, eth, outer_vlan(skb, eth));
    if (vlan < 0)
        return TC_ACT_SHOT;
    /* access_ingress may have moved packet data: parse again */
    eth = eth_header(skb);
    if (!eth)
        return TC_ACT_SHOT;
    return access_egress(skb, port, outer_vlan(skb, eth)) < 0 ? TC_ACT_SHOT : TC_ACT_OK;
}

int bench_empty(struct __sk_buff *skb)
{
    return TC_ACT_OK;
}
