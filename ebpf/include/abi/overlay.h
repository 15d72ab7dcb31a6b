/* The VXLAN underlay guard (NIST SP 800-125B 2.5): this host's VTEP addresses, the registered
 * peer VTEPs, the VNIs hosted here with their counters. Mirrored in dataplane/abi/overlay.py. */
#ifndef NLAB_ABI_OVERLAY_H
#define NLAB_ABI_OVERLAY_H

/* Capacities (-D overridable): peers are the other hosts' VTEPs, VNIs the segments of one host. */
#ifndef NLAB_MAX_VTEP_PEERS
#define NLAB_MAX_VTEP_PEERS 1024
#endif
#ifndef NLAB_MAX_OVERLAY_VNIS
#define NLAB_MAX_OVERLAY_VNIS 4096
#endif
#ifndef NLAB_MAX_OVERLAY_LOCAL
#define NLAB_MAX_OVERLAY_LOCAL 16
#endif

/* The VXLAN port (IANA, RFC 7348) and header: flags (I = 0x08) and 24 reserved bits, then the
 * VNI and 8 reserved bits. Every reserved bit must be zero: RFC 7348 says to ignore them, the
 * kernel's vxlan (without GBP/GPE/RCO) drops such a frame, and so does the guard. */
#define NLAB_VXLAN_PORT     4789
#define NLAB_VXLAN_HLEN     8
#define NLAB_VXLAN_FLAGS_I  0x08000000  /* first word, host order */
#define NLAB_VNI_MAX        0xffffff

/* Key of overlay_local and vtep_peers: an IPv4 address in addr[0..3] with the rest zero, or an
 * IPv6 address. */
struct nlab_overlay_addr {
    __u8 family;  /* 4 or 6 */
    __u8 _pad[3];
    __u8 addr[16];
};

/* Value of overlay_vnis (per-CPU): a VNI is hosted while it has an entry; VXLAN frames accepted
 * for it. */
struct nlab_overlay_vni {
    __u64 packets;
    __u64 bytes;
};

#endif
