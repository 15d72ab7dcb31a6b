/* The protocol headers the firewall reads, defined here: the uapi headers that carry them
 * (linux/ip.h, tcp.h, icmp.h, if_arp.h, in.h) pull in kernel headers that cost bcc seconds of
 * compile time per load. Layouts follow RFC 791, 8200, 826 and 792/4443. */
#ifndef NLAB_PROTO_H
#define NLAB_PROTO_H

#define NLAB_IPPROTO_HOPOPTS  0
#define NLAB_IPPROTO_ICMP     1
#define NLAB_IPPROTO_TCP      6
#define NLAB_IPPROTO_UDP      17
#define NLAB_IPPROTO_ROUTING  43
#define NLAB_IPPROTO_FRAGMENT 44
#define NLAB_IPPROTO_AH       51
#define NLAB_IPPROTO_ICMPV6   58
#define NLAB_IPPROTO_DSTOPTS  60

#define NLAB_ETH_P_IP   0x0800
#define NLAB_ETH_P_ARP  0x0806
#define NLAB_ETH_P_IPV6 0x86DD

#define NLAB_ICMP_ECHOREPLY    0
#define NLAB_ICMP_ECHO         8
#define NLAB_ICMPV6_ECHO_REQ 128
#define NLAB_ICMPV6_ECHO_REP 129

struct nlab_iphdr {
    __u8   ver_ihl;   /* version << 4 | header length in 32-bit words */
    __u8   tos;
    __be16 tot_len;
    __be16 id;
    __be16 frag_off;  /* flags (DF 0x4000, MF 0x2000) | offset in 8-byte units */
    __u8   ttl;
    __u8   protocol;
    __be16 check;
    __be32 saddr;
    __be32 daddr;
};

struct nlab_ipv6hdr {
    __be32 ver_tc_flow;
    __be16 payload_len;
    __u8   nexthdr;
    __u8   hop_limit;
    __u8   saddr[16];
    __u8   daddr[16];
};

struct nlab_ipv6_frag {
    __u8   nexthdr;
    __u8   reserved;
    __be16 frag_off;  /* offset (bytes, multiple of 8) | M flag in bit 0 */
    __be32 id;
};

struct nlab_arp_ipv4 {
    __be16 htype;
    __be16 ptype;
    __u8   hlen;
    __u8   plen;
    __be16 op;
    __u8   sha[6];
    __u8   spa[4];
} __attribute__((packed));

#endif
