/* Packet parsing helpers: one bounds-check idiom, everything inline. */
#ifndef NLAB_PARSING_H
#define NLAB_PARSING_H

#include <uapi/linux/if_ether.h>  /* not linux/if_ether.h: that one pulls in the kernel's skbuff.h, a much slower compile */
#include <uapi/linux/pkt_cls.h>

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

struct vlan_hdr_ {
    __be16 tci;
    __be16 encap_proto;
};

/* Make the context pointer `skb` opaque to clang from here on. When inlined helpers read the
 * same field, clang may keep the field's address (ctx + offset) in a register and load through
 * it; the verifier refuses a load through a modified ctx pointer. After this, every field is
 * loaded as this copy of skb + constant offset. */
#define ctx_opaque(skb) asm volatile("" : "+r"(skb))

/* skb->ifindex, read in several helpers: loaded as ctx + constant offset (see ctx_opaque). */
static __always_inline __u32 skb_ifindex(const struct __sk_buff *skb)
{
    ctx_opaque(skb);
    return skb->ifindex;
}

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
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
