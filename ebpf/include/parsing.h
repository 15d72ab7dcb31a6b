/* Packet parsing helpers: one bounds-check idiom, everything inline. */
#ifndef NLAB_PARSING_H
#define NLAB_PARSING_H

#include <uapi/linux/if_ether.h>  /* not linux/if_ether.h: that one pulls in the kernel's skbuff.h (+1.8 s of compile) */
#include <uapi/linux/pkt_cls.h>

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

struct vlan_hdr_ {
    __be16 tci;
    __be16 encap_proto;
};

/* skb->ifindex, always loaded as ctx + constant offset. Read in several helpers, the field's
 * address is otherwise hoisted by clang into a register (ctx + 40), and the verifier refuses
 * a load through a modified ctx pointer. */
static __always_inline __u32 skb_ifindex(const struct __sk_buff *skb)
{
    __u32 ifindex;

    asm volatile("%0 = *(u32 *)(%1 + %2)" : "=r"(ifindex) : "r"(skb), "i"(__builtin_offsetof(struct __sk_buff, ifindex)));
    return ifindex;
}

/* The Ethernet header, or NULL when the frame is shorter than one. */
static __always_inline struct ethhdr *eth_header(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;

    if ((void *)(eth + 1) > data_end)
        return NULL;
    return eth;
}

static __always_inline int is_vlan_proto(__be16 proto)
{
    return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/* Tags in the frame's bytes after the Ethernet header (the outer tag may instead sit in
 * skb->vlan_tci, where the stack puts it on receive). -1: too short to tell. */
static __always_inline int tags_in_bytes(struct __sk_buff *skb, struct ethhdr *eth)
{
    void *data_end = (void *)(long)skb->data_end;
    struct vlan_hdr_ *vh = (void *)(eth + 1);

    if (!is_vlan_proto(eth->h_proto))
        return 0;
    if ((void *)(vh + 1) > data_end)
        return -1;
    return is_vlan_proto(vh->encap_proto) ? 2 : 1;
}

/* Link-local control protocols a switch must not take from an edge port: IEEE 802.1D/802.1AB
 * group addresses 01:80:c2:00:00:0X (STP, LACP, LLDP, ...) and Cisco's 01:00:0c:cc:cc:cc/cd
 * (CDP, DTP, VTP, PVST+). */
static __always_inline int is_control_frame(const struct ethhdr *eth)
{
    const __u8 *d = eth->h_dest;

    if (d[0] == 0x01 && d[1] == 0x80 && d[2] == 0xc2 && d[3] == 0 && d[4] == 0 && (d[5] & 0xf0) == 0)
        return 1;
    return d[0] == 0x01 && d[1] == 0x00 && d[2] == 0x0c && d[3] == 0xcc && d[4] == 0xcc &&
           (d[5] == 0xcc || d[5] == 0xcd);
}

#endif
