/* VLAN policy of a switch port (NIST SP 800-125B 2.4): access ports tag and untag, trunks carry
 * an allowed list, nothing else crosses. Helpers return a VLAN id (0..4095), NLAB_NO_VLAN for
 * an untagged frame, or a negative drop reason. */
#ifndef NLAB_VLAN_H
#define NLAB_VLAN_H

#include "abi/port.h"
#include "abi/reasons.h"
#include "parsing.h"

static __always_inline int vlan_allowed(const struct nlab_port *port, __u32 vid)
{
    return (port->allowed[(vid >> 6) & 63] >> (vid & 63)) & 1;
}

/* The frame's outer VLAN: from skb->vlan_tci (stack-untagged) or from the bytes (egress before
 * offload, BPF_PROG_TEST_RUN). A second tag or an 802.1ad outer tag is refused outright. */
static __always_inline int outer_vlan(struct __sk_buff *skb, struct ethhdr *eth)
{
    int in_bytes = tags_in_bytes(skb, eth);

    if (in_bytes < 0)
        return -NLAB_DROP_MALFORMED;
    if (skb->vlan_present) {
        if (skb->vlan_proto != bpf_htons(ETH_P_8021Q) || in_bytes > 0)
            return -NLAB_DROP_QINQ;
        return skb->vlan_tci & 0x0fff;
    }
    if (in_bytes == 0)
        return NLAB_NO_VLAN;
    if (in_bytes > 1 || eth->h_proto != bpf_htons(ETH_P_8021Q))
        return -NLAB_DROP_QINQ;
    struct vlan_hdr_ *vh = (void *)(eth + 1);  /* bounds checked by tags_in_bytes */
    if ((void *)(vh + 1) > (void *)(long)skb->data_end)
        return -NLAB_DROP_MALFORMED;
    return bpf_ntohs(vh->tci) & 0x0fff;
}

/* A frame entering the switch through an access port: untagged only, then tagged with the
 * port's VLAN. */
static __always_inline int access_ingress(struct __sk_buff *skb, const struct nlab_port *port,
                                          struct ethhdr *eth, int vlan)
{
    if (vlan < 0)
        return vlan;
    if (vlan != NLAB_NO_VLAN)
        return -NLAB_DROP_TAGGED_ON_ACCESS;
    if ((port->flags & NLAB_PORT_F_GUARD) && is_control_frame(eth))
        return -NLAB_DROP_CONTROL_FRAME;
    /* may move packet data: callers must not use eth or data pointers after this */
    if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), port->access_vid) < 0)
        return -NLAB_DROP_VLAN_HELPER;
    return port->access_vid;
}

/* A frame leaving the switch through an access port: only its VLAN, delivered untagged. */
static __always_inline int access_egress(struct __sk_buff *skb, const struct nlab_port *port, int vlan)
{
    if (vlan < 0)  /* malformed or double-tagged: keep the reason, not "another VLAN" */
        return vlan;
    if (vlan != port->access_vid)
        return -NLAB_DROP_VLAN_MISMATCH;
    /* may move packet data: callers must not use eth or data pointers after this */
    if (bpf_skb_vlan_pop(skb) < 0)
        return -NLAB_DROP_VLAN_HELPER;
    return vlan;
}

/* A frame crossing a trunk (either way): an allowed tag, or untagged where the trunk allows. */
static __always_inline int trunk_check(struct __sk_buff *skb, const struct nlab_port *port,
                                       struct ethhdr *eth, int vlan, int dir)
{
    if (dir == NLAB_DIR_INGRESS && (port->flags & NLAB_PORT_F_GUARD) && is_control_frame(eth))
        return -NLAB_DROP_CONTROL_FRAME;
    if (vlan == NLAB_NO_VLAN)
        return (port->flags & NLAB_PORT_F_UNTAGGED) ? vlan : -NLAB_DROP_UNTAGGED;
    return vlan_allowed(port, vlan) ? vlan : -NLAB_DROP_VLAN_NOT_ALLOWED;
}

#endif
