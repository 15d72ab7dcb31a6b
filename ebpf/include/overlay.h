/* The underlay guard of a VTEP (NIST SP 800-125B 2.5): VXLAN reaches this host's vxlan devices
 * only from registered VTEPs (vtep_peers), for VNIs hosted here (overlay_vnis), whole and well
 * formed. The rest of the underlay's traffic (BGP, ARP, ICMP, transit) passes untouched.
 *
 * "To this host" is wider than the VTEP address: the kernel's vxlan socket is bound to the
 * wildcard address, so it decapsulates UDP 4789 sent to any address of the host namespace and to
 * a broadcast or multicast address. The guard checks VXLAN to every address in overlay_local
 * (user space lists the VTEP address and the subnet broadcast of its pNIC) and to every IPv4
 * broadcast/multicast and IPv6 multicast destination.
 *
 * The guard reads the frame only; it calls no helper that moves packet data. */
#ifndef NLAB_OVERLAY_H
#define NLAB_OVERLAY_H

#include "abi/overlay.h"
#include "abi/reasons.h"
#include "flow.h"
#include "parsing.h"
#include "proto.h"
#include "vlan.h"

struct nlab_vxlan_outer {
    __be16 sport;
    __be16 dport;
    __be16 len;
    __be16 check;
    __be32 flags;  /* I flag and reserved bits */
    __be32 vni;    /* VNI << 8 | reserved */
};

/* A destination the host delivers to its sockets without it being one of its addresses. */
static __always_inline int overlay_group_dst(const struct flow *f)
{
    if (f->family == 6)
        return f->daddr[0] == 0xff;
    return (f->daddr[0] & 0xf0) == 0xe0 ||
           (f->daddr[0] == 0xff && f->daddr[1] == 0xff && f->daddr[2] == 0xff && f->daddr[3] == 0xff);
}

/* Whether the packet is for this host's vxlan sockets to see. `f` holds the addresses even when
 * the parser refused the rest (IPv6: an extension-header chain); a refused IPv4 header leaves
 * them zero, and the stack drops such a header itself (version, length, header length). */
static __always_inline int overlay_to_host(struct flow *f)
{
    struct nlab_overlay_addr key = {.family = f->family};

    if (overlay_group_dst(f))
        return 1;
    __builtin_memcpy(key.addr, f->daddr, 16);
    return map_overlay_local(&key) != NULL;
}

/* The VXLAN header of a UDP 4789 datagram from `f->saddr`: a registered peer, a whole and
 * well-formed header, a hosted VNI. Counts the frame on its VNI. */
static __always_inline int overlay_vxlan(struct __sk_buff *skb, struct flow *f)
{
    struct nlab_overlay_addr peer = {.family = f->family};
    struct nlab_vxlan_outer h;

    __builtin_memcpy(peer.addr, f->saddr, 16);
    if (!map_vtep_peer(&peer))
        return -NLAB_DROP_VXLAN_UNKNOWN_VTEP;
    if (f->payload < sizeof(h) || read_bytes(skb, f->l4_off, &h, sizeof(h)) < 0)
        return -NLAB_DROP_VXLAN_MALFORMED;
    /* the kernel trims the datagram to the UDP length before it reads the VXLAN header */
    __u32 ulen = bpf_ntohs(h.len);
    if (ulen < sizeof(h) || ulen > f->payload)
        return -NLAB_DROP_VXLAN_MALFORMED;
    __u32 word = bpf_ntohl(h.vni);
    if (bpf_ntohl(h.flags) != NLAB_VXLAN_FLAGS_I || (word & 0xff))
        return -NLAB_DROP_VXLAN_MALFORMED;
    __u32 vni = word >> 8;
    struct nlab_overlay_vni *v = map_overlay_vni(&vni);
    if (!v)
        return -NLAB_DROP_VXLAN_UNKNOWN_VNI;
    v->packets++;  /* per-CPU value: no atomics */
    v->bytes += skb->len;
    return 0;
}

/* A frame from the underlay: 0 (pass) or a drop reason. */
static __always_inline int overlay_guard(struct __sk_buff *skb)
{
    struct ethhdr *eth = eth_header(skb);

    if (!eth)
        return 0;  /* a runt: the stack drops it */
    /* The underlay is untagged. A tag of VLAN 0 (priority tag, also stacked) is stripped by the
     * stack, which then delivers the packet as if it came untagged: refused here, or it would
     * carry VXLAN past a guard that reads untagged frames. Another tag the stack never delivers
     * to a socket (no VLAN device exists): refusing it too costs nothing. */
    int vlan = outer_vlan(skb, eth);
    if (vlan < 0)
        return vlan;
    if (vlan != NLAB_NO_VLAN)
        return -NLAB_DROP_TAGGED_ON_ACCESS;
    __be16 proto = eth->h_proto;
    struct flow f = {};
    int rc;
    if (proto == bpf_htons(NLAB_ETH_P_IP))
        rc = parse_ipv4(skb, &f);
    else if (proto == bpf_htons(NLAB_ETH_P_IPV6))
        rc = parse_ipv6(skb, &f);
    else
        return 0;  /* ARP and the rest */
    f.family = proto == bpf_htons(NLAB_ETH_P_IP) ? 4 : 6;  /* the parser sets it only past the version */
    if (!overlay_to_host(&f))
        return 0;
    if (rc < 0)
        return rc;  /* an IPv6 chain the guard cannot follow may still reach a socket: refused */
    /* any fragment, whatever it claims to carry: a later one has no UDP header to classify by,
     * and the VTEP never needs fragments (the overlay's MTU leaves room for the encapsulation).
     * An IPv6 atomic fragment (offset 0, no M) is a whole datagram and checked as one. */
    if (f.frag != NLAB_FRAG_NONE)
        return -NLAB_DROP_VXLAN_FRAGMENT;
    if (f.proto != NLAB_IPPROTO_UDP)
        return 0;
    rc = parse_l4(skb, &f);
    if (rc < 0)
        return rc;
    if (f.dport != bpf_htons(NLAB_VXLAN_PORT))
        return 0;  /* the destination port only: a source port of 4789 is no VXLAN */
    return overlay_vxlan(skb, &f);
}

#endif
