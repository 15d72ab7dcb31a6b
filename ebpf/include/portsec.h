/* Port security of a vNIC (vSphere's forged transmits / MAC changes "reject"): a VM sends only
 * with its own MAC and addresses, answers ARP only for them, and never acts as a DHCP server or
 * an IPv6 router. Maps are reached through the map_* accessors of the program (see vswitch.c). */
#ifndef NLAB_PORTSEC_H
#define NLAB_PORTSEC_H

#include "abi.h"
#include "flow.h"

#define DHCP_SERVER_PORT 67
#define ND_ROUTER_ADVERT 134
#define ND_REDIRECT      137

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

static __always_inline int addr_allowed(__u32 ifindex, __u8 family, const __u8 *addr)
{
    struct nlab_addr_key key = {.ifindex = ifindex, .family = family};

    __builtin_memcpy(key.addr, addr, 16);
    return map_vnic_addr(&key) != NULL;
}

/* The unspecified address: DHCP discovery (IPv4) and duplicate address detection (IPv6). */
static __always_inline int addr_unspecified(const __u8 *a, __u8 family)
{
    __u64 lo, hi;

    __builtin_memcpy(&lo, a, 8);
    __builtin_memcpy(&hi, a + 8, 8);
    return family == 4 ? (lo & 0xffffffff) == 0 : (lo | hi) == 0;
}

/* fe80::/64 with the modified EUI-64 of the vNIC's MAC: the link-local address Linux derives. */
static __always_inline int link_local_of(const __u8 *a, const __u8 *mac)
{
    return a[0] == 0xfe && a[1] == 0x80 && !a[2] && !a[3] && !a[4] && !a[5] && !a[6] && !a[7] &&
           a[8] == (mac[0] ^ 2) && a[9] == mac[1] && a[10] == mac[2] && a[11] == 0xff && a[12] == 0xfe &&
           a[13] == mac[3] && a[14] == mac[4] && a[15] == mac[5];
}

static __always_inline int portsec_arp(struct __sk_buff *skb, const struct nlab_vnic *vnic)
{
    struct nlab_arp_ipv4 arp;
    __u8 spa[16] = {};

    if (bpf_skb_load_bytes(skb, ETH_HLEN, &arp, sizeof(arp)) < 0)
        return -NLAB_DROP_MALFORMED;
    __builtin_memcpy(spa, arp.spa, 4);
    if (!mac_equal(arp.sha, vnic->mac))
        return -NLAB_DROP_SPOOF_ARP;
    /* a probe (sender 0.0.0.0) is fine; any other sender address must be the VM's */
    if (!addr_unspecified(spa, 4) && !addr_allowed(skb_ifindex(skb), 4, spa))
        return -NLAB_DROP_SPOOF_ARP;
    return 0;
}

/* The vNIC's first address of the family, kept in its entry: most packets need no lookup. */
static __always_inline int addr_primary(const struct nlab_vnic *vnic, const struct flow *f)
{
    if (f->family == 4) {
        __be32 src;
        __builtin_memcpy(&src, f->saddr, 4);
        return vnic->ip4 && src == vnic->ip4;
    }
    __u64 a[2], b[2];
    __builtin_memcpy(a, f->saddr, 16);
    __builtin_memcpy(b, vnic->ip6, 16);
    return (b[0] | b[1]) && a[0] == b[0] && a[1] == b[1];
}

static __always_inline int portsec_ip(struct __sk_buff *skb, const struct nlab_vnic *vnic, const struct flow *f)
{
    if (!(vnic->flags & NLAB_VNIC_F_ANY_SOURCE) && !addr_primary(vnic, f) &&
        !addr_allowed(skb_ifindex(skb), f->family, f->saddr) &&
        !addr_unspecified(f->saddr, f->family) && !(f->family == 6 && link_local_of(f->saddr, vnic->mac)))
        return -NLAB_DROP_SPOOF_IP;
    if (f->proto == NLAB_IPPROTO_UDP && f->frag != NLAB_FRAG_LATER && f->sport == bpf_htons(DHCP_SERVER_PORT))
        return -NLAB_DROP_DHCP_SERVER;
    if (f->proto == NLAB_IPPROTO_ICMPV6 && (f->icmp_type == ND_ROUTER_ADVERT || f->icmp_type == ND_REDIRECT))
        return -NLAB_DROP_ROUTER_ADVERT;
    return 0;
}

#endif
