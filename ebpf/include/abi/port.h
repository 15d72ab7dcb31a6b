/* Switch ports and VLANs: the port map, the verdict counters, the classified VLAN in skb->cb.
 * Mirrored in dataplane/abi/port.py. */
#ifndef NLAB_ABI_PORT_H
#define NLAB_ABI_PORT_H

/* Largest ifindex a port may have: ports and counters are arrays indexed by ifindex (inlined
 * lookups instead of hashing). A lab namespace numbers its interfaces from 1. */
#ifndef NLAB_MAX_IFINDEX
#define NLAB_MAX_IFINDEX 1024
#endif

/* Direction, seen from the switch: into it from the port's device, or out of it to the device. */
#define NLAB_DIR_INGRESS 0
#define NLAB_DIR_EGRESS  1
#define NLAB_NR_DIRS     2

/* Port modes. */
#define NLAB_MODE_UNCONFIGURED 0
#define NLAB_MODE_ACCESS       1
#define NLAB_MODE_TRUNK        2  /* also a plain port: no VLANs allowed, untagged on */

/* Port flags. */
#define NLAB_PORT_F_UNTAGGED 0x1  /* trunk: untagged frames pass */
#define NLAB_PORT_F_GUARD    0x2  /* edge port: drop switch-control frames from the device */

struct nlab_port {
    __u16 access_vid;   /* access VLAN (mode ACCESS) */
    __u8  mode;
    __u8  flags;
    __u32 _pad;
    __u64 allowed[64];  /* trunk: bitmap of allowed VLAN ids 0..4095 */
};

struct nlab_counter {
    __u64 packets;
    __u64 bytes;
};

/* The classified VLAN of an untagged frame (vlan.h's helpers return it). */
#define NLAB_NO_VLAN 0xffff

/* skb->cb[NLAB_CB_VLAN] carries the classified VLAN to later stages (and to tests). */
#define NLAB_CB_VLAN 0
/* skb->cb[NLAB_CB_MIRROR]: the port's mirror taps, read once by the entry program. */
#define NLAB_CB_MIRROR 1

#endif
