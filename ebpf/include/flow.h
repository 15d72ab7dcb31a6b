/* L3/L4 parsing into a flow description for port security and the firewall.
 * Headers are copied out of the packet (read_bytes), so no packet pointer outlives a helper
 * call that may move the data (a VLAN push or pop). */
#ifndef NLAB_FLOW_H
#define NLAB_FLOW_H

#include <uapi/linux/if_ether.h>

#include "abi/fw.h"
#include "abi/reasons.h"
#include "proto.h"

#define NLAB_FRAG_NONE  0
#define NLAB_FRAG_FIRST 1
#define NLAB_FRAG_LATER 2

#define NLAB_TCP_FIN 0x01
#define NLAB_TCP_SYN 0x02
#define NLAB_TCP_RST 0x04
#define NLAB_TCP_ACK 0x10

struct flow {
    __u8  saddr[16];   /* saddr, daddr: adjacent, as in the IPv6 header (read in one go) */
    __u8  daddr[16];
    __u16 sport;       /* network order; ICMP echo: identifier */
    __u16 dport;
    __u8  proto;
    __u8  family;      /* 4 or 6; 0 for ARP */
    __u8  tcp_flags;
    __u8  frag;        /* NLAB_FRAG_* */
    __u8  frag_more;   /* more fragments follow this one (IPv4 MF, IPv6 M) */
    __u8  icmp_type;
    __u8  icmp_code;
    __u16 payload;     /* bytes from the L4 header to the end of this (fragment's) IP payload */
    __u16 frag_len;    /* bytes of this fragment's fragmentable part (IPv6: after its fragment header) */
    __u32 frag_id;
    __u32 frag_off;    /* bytes */
    __u32 l4_off;      /* offset of the L4 header in the frame */
};

/* Offsets past this are read through bpf_skb_load_bytes only: a bound the verifier needs
 * before it lets a variable offset into the packet. */
#define NLAB_DIRECT_MAX 256

/* `len` bytes at `off` into `to`: straight from the linear part of the packet, where a VM's
 * headers are (a direct read is much cheaper than the helper call), else through the helper,
 * which also reads paged data. */
static __always_inline int read_bytes(struct __sk_buff *skb, __u32 off, void *to, __u32 len)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;

    if (off <= NLAB_DIRECT_MAX) {
        void *p = data + off;
        if (p + len <= end) {
            __builtin_memcpy(to, p, len);
            return 0;
        }
    }
    return bpf_skb_load_bytes(skb, off, to, len);
}

/* ICMP is protocol 1 in IPv4 only, ICMPv6 next header 58 in IPv6 only. The other pairings (an
 * IPv4 ICMP message in an IPv6 packet, or the reverse) are no ICMP to any receiving stack: they
 * are "other" protocols, never read, tracked or matched as ICMP. */
static __always_inline int is_icmp(__u8 family, __u8 proto)
{
    return proto == (family == 6 ? NLAB_IPPROTO_ICMPV6 : NLAB_IPPROTO_ICMP);
}

/* ICMP messages in request/reply pairs that carry an identifier: echo, timestamp, information
 * and address mask (RFC 792, 950), ICMPv6 echo (RFC 4443). For a `proto` is_icmp() admits. */
static __always_inline int icmp_is_query(__u8 proto, __u8 type)
{
    if (proto == NLAB_IPPROTO_ICMP)
        return type == NLAB_ICMP_ECHO || type == NLAB_ICMP_ECHOREPLY || (type >= 13 && type <= 18);
    return type == NLAB_ICMPV6_ECHO_REQ || type == NLAB_ICMPV6_ECHO_REP;
}

#define L4_MIN_TCP  20
#define L4_MIN_UDP  8
#define L4_MIN_ICMP 8

static __always_inline int l4_min(const struct flow *f)
{
    if (f->proto == NLAB_IPPROTO_TCP)
        return L4_MIN_TCP;
    if (f->proto == NLAB_IPPROTO_UDP)
        return L4_MIN_UDP;
    if (is_icmp(f->family, f->proto))
        return L4_MIN_ICMP;
    return 0;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, struct flow *f)
{
    struct nlab_iphdr ip;

    if (read_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
        return -NLAB_DROP_L3_MALFORMED;
    if ((ip.ver_ihl >> 4) != 4 || (ip.ver_ihl & 0xf) < 5)
        return -NLAB_DROP_L3_MALFORMED;
    __u32 hlen = (ip.ver_ihl & 0xf) * 4;
    __u32 total = bpf_ntohs(ip.tot_len);
    if (total < hlen || ETH_HLEN + total > skb->len)
        return -NLAB_DROP_L3_MALFORMED;
    f->family = 4;
    f->proto = ip.protocol;
    __builtin_memcpy(f->saddr, &ip.saddr, 4);
    __builtin_memcpy(f->daddr, &ip.daddr, 4);
    __u16 frag = bpf_ntohs(ip.frag_off);
    f->frag_off = (frag & 0x1fff) * 8;
    f->frag_id = bpf_ntohs(ip.id);
    f->frag_more = (frag & 0x2000) != 0;
    if (f->frag_off)
        f->frag = NLAB_FRAG_LATER;
    else if (frag & 0x2000)
        f->frag = NLAB_FRAG_FIRST;
    f->l4_off = ETH_HLEN + hlen;
    f->payload = total - hlen;
    f->frag_len = f->payload;
    return 0;
}

/* Extension headers the parser does not walk through: mobility (135), HIP (139), shim6 (140) and
 * the experimental 253, 254 (RFC 3692) may be followed by headers no check would see; none of
 * them is used in the lab. Refused rather than taken for the upper layer. */
static __always_inline int ipv6_ext_unwalked(__u8 next)
{
    return next == 135 || next == 139 || next == 140 || next == 253 || next == 254;
}

/* One fragment header (`off` at it): records the fragment, returns its next header. */
static __always_inline int ipv6_fragment(struct __sk_buff *skb, struct flow *f, __u32 off)
{
    struct nlab_ipv6_frag fh;

    if (bpf_skb_load_bytes(skb, off, &fh, sizeof(fh)) < 0)
        return -NLAB_DROP_IPV6_CHAIN;
    __u16 fo = bpf_ntohs(fh.frag_off);
    f->frag_off = fo & 0xfff8;
    f->frag_id = bpf_ntohl(fh.id);
    f->frag_more = fo & 1;
    /* offset 0 without M is an atomic fragment (RFC 6946): a whole datagram */
    f->frag = f->frag_off ? NLAB_FRAG_LATER : ((fo & 1) ? NLAB_FRAG_FIRST : NLAB_FRAG_NONE);
    return fh.nexthdr;
}

/* IPv6: walks the extension-header chain to the upper-layer header, or refuses the packet
 * (NLAB_DROP_IPV6_CHAIN): longer than NLAB_IPV6_MAX_EXT, hop-by-hop other than first, two
 * fragment headers, a header past the payload (in a first fragment too: RFC 7112 wants the
 * whole chain in it), or an unwalked header. A later fragment stops at its fragment header:
 * what follows is data. ESP (encrypted), No Next Header and every other value are the upper
 * layer, which the policy sees as the protocol ("other" unless TCP, UDP or ICMPv6). */
static __always_inline int parse_ipv6(struct __sk_buff *skb, struct flow *f)
{
    struct {
        __be32 ver_tc_flow;
        __be16 payload_len;
        __u8   nexthdr;
        __u8   hop_limit;
    } ip;  /* the addresses are read straight into the flow: the program's stack is nearly full */

    if (read_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 || read_bytes(skb, ETH_HLEN + 8, f->saddr, 32) < 0)
        return -NLAB_DROP_L3_MALFORMED;
    __u32 end = ETH_HLEN + sizeof(struct nlab_ipv6hdr) + bpf_ntohs(ip.payload_len);
    if ((bpf_ntohl(ip.ver_tc_flow) >> 28) != 6 || end > skb->len)
        return -NLAB_DROP_L3_MALFORMED;
    f->family = 6;
    __u8 next = ip.nexthdr;
    __u32 off = ETH_HLEN + sizeof(struct nlab_ipv6hdr);
    __u32 frag_start = 0;  /* offset just past the fragment header; 0: none seen */

    /* headers read through the helper, not read_bytes: a direct read at an offset computed in a
     * loop splits every verifier state in two, and the program no longer verifies (E2BIG); a
     * chain is rare enough for the helper's few ns */
#pragma clang loop unroll(disable)
    for (int i = 0; i <= NLAB_IPV6_MAX_EXT; i++) {
        if (next == NLAB_IPPROTO_FRAGMENT) {
            if (frag_start || i == NLAB_IPV6_MAX_EXT || off + sizeof(struct nlab_ipv6_frag) > end)
                return -NLAB_DROP_IPV6_CHAIN;
            int rc = ipv6_fragment(skb, f, off);
            if (rc < 0)
                return rc;
            next = rc;
            off += sizeof(struct nlab_ipv6_frag);
            frag_start = off;
            if (f->frag == NLAB_FRAG_LATER)
                break;
        } else if (next == NLAB_IPPROTO_HOPOPTS || next == NLAB_IPPROTO_ROUTING || next == NLAB_IPPROTO_DSTOPTS ||
                   next == NLAB_IPPROTO_AH) {
            __u8 eh[2];
            if ((next == NLAB_IPPROTO_HOPOPTS && i) || i == NLAB_IPV6_MAX_EXT || off + 8 > end ||
                bpf_skb_load_bytes(skb, off, eh, 2) < 0)
                return -NLAB_DROP_IPV6_CHAIN;
            /* AH counts its length in 4-byte units less two (RFC 4302), the others in 8-byte
             * units less one (RFC 8200) */
            off += next == NLAB_IPPROTO_AH ? ((__u32)eh[1] + 2) * 4 : ((__u32)eh[1] + 1) * 8;
            next = eh[0];
            if (off > end)
                return -NLAB_DROP_IPV6_CHAIN;
        } else if (ipv6_ext_unwalked(next)) {
            return -NLAB_DROP_IPV6_CHAIN;
        } else {
            break;
        }
    }
    f->proto = next;
    f->l4_off = off;
    f->payload = end - off;
    f->frag_len = end - (frag_start ? frag_start : off);
    return 0;
}

/* Ports, flags or ICMP type of an unfragmented packet or a first fragment. A first fragment
 * too short for its L4 header is the tiny-fragment attack (RFC 1858). */
static __always_inline int parse_l4(struct __sk_buff *skb, struct flow *f)
{
    int need = l4_min(f);

    if (f->frag == NLAB_FRAG_LATER || need == 0)
        return 0;
    if (f->payload < need)
        return f->frag == NLAB_FRAG_FIRST ? -NLAB_DROP_FRAG_TINY : -NLAB_DROP_L3_MALFORMED;
    if (f->proto == NLAB_IPPROTO_TCP) {
        __u8 hdr[14];
        if (read_bytes(skb, f->l4_off, hdr, sizeof(hdr)) < 0)
            return -NLAB_DROP_L3_MALFORMED;
        __builtin_memcpy(&f->sport, hdr, 2);
        __builtin_memcpy(&f->dport, hdr + 2, 2);
        f->tcp_flags = hdr[13];
    } else if (f->proto == NLAB_IPPROTO_UDP) {
        __u8 hdr[4];
        if (read_bytes(skb, f->l4_off, hdr, sizeof(hdr)) < 0)
            return -NLAB_DROP_L3_MALFORMED;
        __builtin_memcpy(&f->sport, hdr, 2);
        __builtin_memcpy(&f->dport, hdr + 2, 2);
    } else {  /* ICMP of the packet's own IP version (l4_min) */
        __u8 hdr[6];
        if (read_bytes(skb, f->l4_off, hdr, sizeof(hdr)) < 0)
            return -NLAB_DROP_L3_MALFORMED;
        f->icmp_type = hdr[0];
        f->icmp_code = hdr[1];
        if (icmp_is_query(f->proto, hdr[0])) {
            __builtin_memcpy(&f->sport, hdr + 4, 2);  /* the identifier pairs request and reply */
            f->dport = f->sport;
        }
    }
    return 0;
}

static __always_inline int parse_flow(struct __sk_buff *skb, __be16 proto, struct flow *f)
{
    int rc;

    if (proto == bpf_htons(NLAB_ETH_P_IP))
        rc = parse_ipv4(skb, f);
    else if (proto == bpf_htons(NLAB_ETH_P_IPV6))
        rc = parse_ipv6(skb, f);
    else
        return -NLAB_DROP_UNSUPPORTED;
    return rc < 0 ? rc : parse_l4(skb, f);
}

#endif
