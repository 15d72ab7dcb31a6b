/* ABI shared by the eBPF programs and user space (mirrored in dataplane/abi.py; a test checks
 * that both agree on every value and struct size). Change both together. */
#ifndef NLAB_ABI_H
#define NLAB_ABI_H

/* Largest ifindex a port may have: ports and counters are arrays indexed by ifindex (inlined
 * lookups instead of hashing). A lab namespace numbers its interfaces from 1. */
#ifndef NLAB_MAX_IFINDEX
#define NLAB_MAX_IFINDEX 1024
#endif

/* Why a packet was dropped; 0 counts passes. Helpers return the negative value. */
#define NLAB_PASS                   0
#define NLAB_DROP_NO_PORT           1  /* port not configured (fail closed) */
#define NLAB_DROP_MALFORMED         2  /* too short for its headers */
#define NLAB_DROP_TAGGED_ON_ACCESS  3  /* 802.1Q tag arriving on an access port */
#define NLAB_DROP_QINQ              4  /* 802.1ad or double tag: never carried */
#define NLAB_DROP_CONTROL_FRAME     5  /* STP/LLDP/CDP/DTP/VTP from an edge (guarded) port */
#define NLAB_DROP_VLAN_MISMATCH     6  /* towards an access port, not of its VLAN */
#define NLAB_DROP_VLAN_NOT_ALLOWED  7  /* tag not in the trunk's allowed list */
#define NLAB_DROP_UNTAGGED          8  /* untagged frame on a port that carries none */
#define NLAB_DROP_VLAN_HELPER       9  /* bpf_skb_vlan_push/pop failed */
#define NLAB_NR_REASONS            16

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

/* skb->cb[NLAB_CB_VLAN] carries the classified VLAN to later stages (and to tests). */
#define NLAB_CB_VLAN 0

#endif
