/* Port mirroring (NIST 5, VM-TM-R1..R3): mirror ports and sessions, the encapsulation of copies
 * that cross the physical network, and the mark of a copy. Mirrored in dataplane/abi/mirror.py. */
#ifndef NLAB_ABI_MIRROR_H
#define NLAB_ABI_MIRROR_H

#ifndef NLAB_MAX_MIRRORS
#define NLAB_MAX_MIRRORS 64         /* session ids 1..N-1 per hypervisor (0: none) */
#endif
#define NLAB_MIRROR_PER_PORT 8      /* sessions one port may be a source of */

/* Tap points of a VM port: direction seen from the VM, before or after its firewall. */
#define NLAB_TAP_OUT_BEFORE 0x1
#define NLAB_TAP_OUT_AFTER  0x2
#define NLAB_TAP_IN_BEFORE  0x4
#define NLAB_TAP_IN_AFTER   0x8

/* Port flags. */
#define NLAB_MIRROR_PORT_ANALYZER 0x1  /* receive-only: sends nothing, receives copies only */

/* Session flags. */
#define NLAB_MIRROR_F_PROMISC 0x1  /* a promiscuous NIC: skip frames it sends or gets anyway */
#define NLAB_MIRROR_F_ENCAP   0x2  /* copies leave encapsulated through pNIC `dest` (remote, uplink) */
#define NLAB_MIRROR_F_RX      0x4  /* encapsulated copies arriving on an uplink go to port `dest` */

/* The mirror encapsulation, for copies that cross the physical network (RSPAN-like): the copy's
 * first 14 bytes (its MACs and EtherType) are moved to a trailer and replaced by an outer
 * header owned by the mirror endpoints, never a VM's MACs; the frame travels tagged with the
 * session's mirror VLAN.
 *   [outer dst 6][outer src 6][0x88B5][copy from byte 14 on][copy's first 14 bytes][hdr 12]
 * 0x88B5 is the IEEE 802 local experimental EtherType. */
#define NLAB_MIRROR_ETHERTYPE 0x88B5
#define NLAB_MIRROR_MAGIC     0x4e4c4d52  /* "NLMR" */
#define NLAB_MIRROR_VERSION   1
/* Direction of a copy (seen from the VM), in the mark's bits 8..9 and in the trailer. */
#define NLAB_MIRROR_DIR_OUT 1
#define NLAB_MIRROR_DIR_IN  2

/* A copy carries skb->mark = NLAB_MIRROR_MARK | direction << 8 | session id from the tap to the destination
 * port's egress program, which lets it pass and leaves the mark for a capture on that port to
 * read (`nlab watch` attributes each copy by it). A mark never crosses a namespace (veth scrubs
 * it), so a VM cannot forge one nor see one. */
#define NLAB_MIRROR_MARK      0x4e4d0000
#define NLAB_MIRROR_MARK_MASK 0xffff0000
/* What the entry program's mirror step returns for a copy: deliver, skip every check. */
#define NLAB_MIRROR_DELIVER   0x10000

struct nlab_mirror_port {
    __u8 taps;      /* NLAB_TAP_*: union of the taps of its sessions */
    __u8 flags;     /* NLAB_MIRROR_PORT_* */
    __u8 nr;        /* sessions in `session` */
    __u8 _pad;
    __u8 session[NLAB_MIRROR_PER_PORT];
};

struct nlab_mirror_session {
    __u32 ifindex;    /* first hop of a copy: `dest`, or the host's mirror port to be truncated */
    __u32 dest;       /* the destination's vSwitch port */
    __u32 snaplen;    /* 0: whole frames */
    __u32 sample;     /* keep 1 in N; 0 or 1: every frame */
    __u8  taps;       /* NLAB_TAP_* of this session */
    __u8  flags;      /* NLAB_MIRROR_F_* */
    __u8  dest_mac[6];  /* a promiscuous NIC's MAC */
    __u16 vlan;       /* ENCAP, RX: the mirror VLAN */
    __u8  outer_dst[6]; /* ENCAP: the far endpoint's MAC; RX: this host's mirror MAC */
    __u8  outer_src[6]; /* ENCAP: this host's mirror MAC */
    __u16 _pad;
};

/* The tail of an encapsulated copy. */
struct nlab_mirror_trailer {
    __u8   inner[14];   /* the copy's own MACs and EtherType */
    __u8   version;
    __u8   direction;   /* NLAB_MIRROR_DIR_* */
    __be16 session;
    __be32 orig_len;    /* the frame's length before snaplen */
    __be32 magic;
} __attribute__((packed));  /* 26 bytes on the wire */

struct nlab_mirror_stats {
    __u64 packets;    /* copies sent */
    __u64 bytes;
    __u64 dropped;    /* clone or redirect failed */
    __u64 skipped;    /* left out by sampling */
};
#endif
