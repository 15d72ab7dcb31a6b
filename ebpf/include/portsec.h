/* Port security of a vNIC (vSphere's forged transmits / MAC changes "reject"): a VM sends only
 * with its own MAC and addresses, answers ARP and neighbour discovery only for them, sends from
 * an unspecified address only where a protocol needs one, and never acts as a DHCP server
 * (unless declared one), an IPv6 router, or (unless it forwards) a sender of redirects. Maps are
 * reached through the map_* accessors of the program (see vswitch.c). */
#ifndef NLAB_PORTSEC_H
#define NLAB_PORTSEC_H

#include "abi/fw.h"
#include "abi/reasons.h"
#include "flow.h"
#include "parsing.h"

#define DHCP_SERVER_PORT  67
#define DHCP_CLIENT_PORT  68
#define DHCP6_CLIENT_PORT 546
#define DHCP6_SERVER_PORT 547
#define BOOTREPLY         2
#define DHCP_MAGIC        0x63825363  /* RFC 2131: the cookie after the 236-byte BOOTP header */
#define ICMP_REDIRECT     5
#define ND_ROUTER_SOLICIT 133
#define ND_ROUTER_ADVERT  134
#define ND_NEIGH_SOLICIT  135
#define ND_NEIGH_ADVERT   136
#define ND_REDIRECT       137
#define MLD2_REPORT       143
#define ND_OPT_SOURCE_LL  1
#define ND_OPT_TARGET_LL  2
#define ND_MAX_OPTS       4  /* options an NS, NA or RS may carry here (Linux sends one or two) */

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

/* The ND target (16 bytes at `off`) is an address the vNIC owns: an own or allowed one, or its
 * link-local address. Read straight into the lookup key: the program's stack is nearly full. */
static __always_inline int target_own(struct __sk_buff *skb, const struct nlab_vnic *vnic, __u32 off)
{
    struct nlab_addr_key key = {.ifindex = skb_ifindex(skb), .family = 6};

    if (bpf_skb_load_bytes(skb, off, key.addr, 16) < 0)
        return 0;
    return link_local_of(key.addr, vnic->mac) || map_vnic_addr(&key) != NULL;
}

/* The unspecified source is a protocol's, not an anonymous sender's: a DHCPv4 client's broadcast
 * to the server port (RFC 2131 4.1), and in IPv6 duplicate address detection (a neighbour
 * solicitation, RFC 4862 5.4.2), an MLDv2 report sent before an address is ready (RFC 3810
 * 5.2.13) and a router solicitation (RFC 4861 6.3.7). portsec_nd checks the first and last
 * further. */
static __always_inline int unspecified_allowed(const struct flow *f)
{
    if (f->frag != NLAB_FRAG_NONE)
        return 0;
    if (f->family == 4) {
        __be32 dst;
        __builtin_memcpy(&dst, f->daddr, 4);
        return f->proto == NLAB_IPPROTO_UDP && f->sport == bpf_htons(DHCP_CLIENT_PORT) &&
               f->dport == bpf_htons(DHCP_SERVER_PORT) && dst == 0xffffffff;
    }
    __u8 t = f->icmp_type;
    return is_icmp(6, f->proto) && (t == ND_NEIGH_SOLICIT || t == MLD2_REPORT || t == ND_ROUTER_SOLICIT);
}

/* A DHCP server message, recognised by what it says, whatever its ports: a BOOTP reply (op 2)
 * with the DHCP cookie, or to a BOOTP port without it; in DHCPv6 (no cookie: by type on the
 * DHCPv6 ports, which clients and relays listen on) ADVERTISE, REPLY, RECONFIGURE, RELAY-REPL
 * and DHCPV4-RESPONSE. A fragmented datagram to a DHCP port cannot be judged from its first
 * fragment (the message may start in the next): refused too; DHCP never needs fragmenting. */
static __always_inline int dhcp_server_message(struct __sk_buff *skb, const struct flow *f)
{
    __u16 dport = bpf_ntohs(f->dport);
    int v4 = f->family == 4;
    int dhcp_port = v4 ? dport == DHCP_SERVER_PORT || dport == DHCP_CLIENT_PORT
                       : dport == DHCP6_CLIENT_PORT || dport == DHCP6_SERVER_PORT;
    __u8 op;

    if (dhcp_port && f->frag == NLAB_FRAG_FIRST)
        return 1;
    if ((!v4 && !dhcp_port) || f->payload < L4_MIN_UDP + 1 || read_bytes(skb, f->l4_off + L4_MIN_UDP, &op, 1) < 0)
        return 0;
    if (!v4)
        return op == 2 || op == 7 || op == 10 || op == 13 || op == 21;
    if (op != BOOTREPLY)
        return 0;
    __be32 cookie = 0;
    if (f->payload >= L4_MIN_UDP + 240)
        read_bytes(skb, f->l4_off + L4_MIN_UDP + 236, &cookie, 4);
    return dhcp_port || cookie == bpf_htonl(DHCP_MAGIC);
}

/* The destination is the solicited-node multicast group of the NS's target (RFC 4291 2.7.1):
 * ff02::1:ff00:0/104 and the target's last 24 bits. */
static __always_inline int solicited_node_of(struct __sk_buff *skb, const struct flow *f)
{
    const __u8 *a = f->daddr;
    __u8 low[4];

    if (bpf_skb_load_bytes(skb, f->l4_off + 8 + 12, low, 4) < 0)
        return 0;
    return a[0] == 0xff && a[1] == 0x02 && !a[2] && !a[3] && !a[4] && !a[5] && !a[6] && !a[7] && !a[8] &&
           !a[9] && !a[10] && a[11] == 1 && a[12] == 0xff && a[13] == low[1] && a[14] == low[2] && a[15] == low[3];
}

/* Neighbour discovery inspected like ARP: an advertisement only for the vNIC's own addresses,
 * link-layer address options only with its MAC; the unspecified source only in duplicate address
 * detection (a solicitation for its own address, to that address's solicited-node group, without
 * a source link-layer option: RFC 4861 7.1.1, RFC 4862 5.4.2) and in a router solicitation without
 * that option (RFC 4861 6.1.1); never fragmented (RFC 6980). */
static __always_inline int portsec_nd(struct __sk_buff *skb, const struct nlab_vnic *vnic, const struct flow *f)
{
    __u8 t = f->icmp_type;
    __u32 fixed = t == ND_ROUTER_SOLICIT ? 8 : 24;
    int unspec = addr_unspecified(f->saddr, 6);

    if (f->frag != NLAB_FRAG_NONE || f->payload < fixed || (t == ND_NEIGH_ADVERT && unspec))
        return -NLAB_DROP_SPOOF_ND;
    if ((t == ND_NEIGH_ADVERT || (t == ND_NEIGH_SOLICIT && unspec)) && !target_own(skb, vnic, f->l4_off + 8))
        return -NLAB_DROP_SPOOF_ND;
    if (t == ND_NEIGH_SOLICIT && unspec && !solicited_node_of(skb, f))
        return -NLAB_DROP_SPOOF_ND;
    __u32 off = f->l4_off + fixed;
    __u32 end = f->l4_off + f->payload;
#pragma clang loop unroll(disable)
    for (int i = 0; i < ND_MAX_OPTS; i++) {
        __u8 opt[8];
        if (off >= end)
            return 0;
        /* a zero length is invalid (RFC 4861 4.6): the receiver discards the message */
        if (off + 8 > end || bpf_skb_load_bytes(skb, off, opt, 8) < 0 || opt[1] == 0)
            return -NLAB_DROP_SPOOF_ND;
        if ((opt[0] == ND_OPT_SOURCE_LL || opt[0] == ND_OPT_TARGET_LL) && (unspec || !mac_equal(opt + 2, vnic->mac)))
            return -NLAB_DROP_SPOOF_ND;
        off += (__u32)opt[1] * 8;
    }
    return off >= end ? 0 : -NLAB_DROP_SPOOF_ND;  /* more options than walked: fail closed */
}

/* ICMP a VM sends only as the role it has: router advertisements never (no VM is the lab's IPv6
 * router), redirects only if it forwards, neighbour discovery only for itself. */
static __always_inline int portsec_icmp(struct __sk_buff *skb, const struct nlab_vnic *vnic, const struct flow *f)
{
    __u8 t = f->icmp_type;
    int forwards = vnic->flags & NLAB_VNIC_F_ANY_SOURCE;

    if (f->family == 4)
        return t == ICMP_REDIRECT && !forwards ? -NLAB_DROP_ROUTER_ADVERT : 0;
    if (t == ND_ROUTER_ADVERT || (t == ND_REDIRECT && !forwards))
        return -NLAB_DROP_ROUTER_ADVERT;
    if (t == ND_ROUTER_SOLICIT || t == ND_NEIGH_SOLICIT || t == ND_NEIGH_ADVERT)
        return portsec_nd(skb, vnic, f);
    return 0;
}

/* Port security of an IP packet from the VM: its source, then what its upper layer says. */
static __always_inline int portsec_ip(struct __sk_buff *skb, const struct nlab_vnic *vnic, const struct flow *f)
{
    if (!addr_primary(vnic, f)) {  /* the common case first: the vNIC's own address */
        int unspec = addr_unspecified(f->saddr, f->family);  /* forwarders too: no router forwards from it */
        if ((unspec && !unspecified_allowed(f)) ||
            (!unspec && !(vnic->flags & NLAB_VNIC_F_ANY_SOURCE) && !addr_allowed(skb_ifindex(skb), f->family, f->saddr) &&
             !(f->family == 6 && link_local_of(f->saddr, vnic->mac))))
            return -NLAB_DROP_SPOOF_IP;
    }
    if (f->frag == NLAB_FRAG_LATER)
        return 0;
    if (f->proto == NLAB_IPPROTO_UDP)
        return !(vnic->flags & NLAB_VNIC_F_DHCP_SERVER) && dhcp_server_message(skb, f) ? -NLAB_DROP_DHCP_SERVER : 0;
    if (is_icmp(f->family, f->proto))
        return portsec_icmp(skb, vnic, f);
    return 0;
}

#endif
