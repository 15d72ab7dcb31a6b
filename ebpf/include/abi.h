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
#define NLAB_DROP_TAGGED_ON_ACCESS  3  /* 802.1Q tag on an access port, or from a guarded vNIC */
#define NLAB_DROP_QINQ              4  /* 802.1ad or double tag: never carried */
#define NLAB_DROP_CONTROL_FRAME     5  /* STP/LLDP/CDP/DTP/VTP from an edge (guarded) port */
#define NLAB_DROP_VLAN_MISMATCH     6  /* towards an access port, not of its VLAN */
#define NLAB_DROP_VLAN_NOT_ALLOWED  7  /* tag not in the trunk's allowed list */
#define NLAB_DROP_UNTAGGED          8  /* untagged frame on a port that carries none */
#define NLAB_DROP_VLAN_HELPER       9  /* bpf_skb_vlan_push/pop failed */
/* port security (a VM sends only as itself) */
#define NLAB_DROP_SPOOF_MAC        10  /* source MAC is not the port's */
#define NLAB_DROP_SPOOF_IP         11  /* IPv4/IPv6 source is not one of the port's */
#define NLAB_DROP_SPOOF_ARP        12  /* ARP or gratuitous ARP for an address not the port's */
#define NLAB_DROP_DHCP_SERVER      13  /* DHCP server reply from a VM */
#define NLAB_DROP_ROUTER_ADVERT    14  /* IPv6 router advertisement or redirect from a VM */
/* firewall */
#define NLAB_DROP_POLICY           15  /* a rule or the default policy denies the flow */
#define NLAB_DROP_CT_INVALID       16  /* no state and not a valid start (e.g. lone ACK/FIN/RST) */
#define NLAB_DROP_CT_FULL          17  /* connection table full: new flows fail closed */
#define NLAB_DROP_CT_QUOTA         18  /* the VM's share of the connection table is used up */
#define NLAB_DROP_ICMP_UNRELATED   19  /* ICMP error about no tracked flow */
#define NLAB_DROP_FRAG_TINY        20  /* first fragment too short for its L4 header */
#define NLAB_DROP_FRAG_ORPHAN      21  /* non-first fragment with no first fragment seen */
#define NLAB_DROP_FRAG_OVERLAP     22  /* fragment overlapping one already seen */
#define NLAB_DROP_FRAG_DUP         23  /* first fragment seen twice */
#define NLAB_DROP_L3_MALFORMED     24  /* bad IP header (length, version, options) */
#define NLAB_DROP_UNSUPPORTED      25  /* an L3 protocol the firewall does not pass (not IP/ARP) */
/* port mirroring (NIST 5) */
#define NLAB_DROP_ANALYZER_TX      26  /* a frame sent by a receive-only analyzer port */
#define NLAB_DROP_ANALYZER_RX      27  /* a frame towards an analyzer port that is not a mirror copy */
/* IPv6 parsing and port security of neighbour discovery */
#define NLAB_DROP_IPV6_CHAIN       28  /* extension-header chain too long, out of order, cut or unwalkable */
#define NLAB_DROP_SPOOF_ND         29  /* neighbour solicitation/advertisement for an address or MAC not the port's */
/* port security, towards the VM */
#define NLAB_DROP_DST_MAC          30  /* unicast frame for another MAC (flooded) towards a port-secured vNIC */
/* firewall: fragments */
#define NLAB_DROP_FRAG_REORDERED   31  /* first fragment after later ones of its datagram (dropped as orphans) */
#define NLAB_NR_REASONS            32

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

/* ---- firewall and port security (NIST 4.3) ---- */

#ifndef NLAB_MAX_ENDPOINTS
#define NLAB_MAX_ENDPOINTS 4096     /* firewalled vNICs per hypervisor (endpoint ids 1..N-1) */
#endif
#ifndef NLAB_MAX_RULES
#define NLAB_MAX_RULES 65536        /* rule ids 0..N-1 (0: the default policy) */
#endif
#ifndef NLAB_CT_SIZE
#define NLAB_CT_SIZE 65536          /* connection table entries per hypervisor */
#endif
#ifndef NLAB_POLICY_SIZE
#define NLAB_POLICY_SIZE 262144     /* policy LPM entries, both generations together */
#endif
#ifndef NLAB_IPCACHE_SIZE
#define NLAB_IPCACHE_SIZE 65536     /* address-to-identity LPM entries, both generations */
#endif

/* The longest extension-header chain the parser walks. RFC 8200 (4.1) orders a packet's headers
 * hop-by-hop, destination options, routing, fragment, AH, ESP, destination options: seven at
 * most, each once (destination options twice), and the walk ends at ESP: six walked. A longer
 * chain is no real traffic: it is refused
 * (NLAB_DROP_IPV6_CHAIN) on every guarded vNIC, never classified by the header where the walk stopped. */
#ifndef NLAB_IPV6_MAX_EXT
#define NLAB_IPV6_MAX_EXT 8
#endif

/* Firewall directions, seen from the VM: out of the VM, into the VM. */
#define NLAB_FW_OUT 0
#define NLAB_FW_IN  1

/* Verdicts in the policy map and in events. */
#define NLAB_VERDICT_DENY  0
#define NLAB_VERDICT_ALLOW 1

/* vNIC flags. */
#define NLAB_VNIC_F_PORTSEC  0x1  /* a VM sends only with its MAC and addresses */
#define NLAB_VNIC_F_FIREWALL 0x2  /* the stateful policy applies (endpoint id set) */
#define NLAB_VNIC_F_ANY_SOURCE 0x4  /* a forwarding appliance: MAC, ARP and ND checked, IP source not */
#define NLAB_VNIC_F_DHCP_SERVER 0x8  /* the VM may send DHCP and DHCPv6 server messages */

/* Connection states. */
#define NLAB_CT_NEW         1  /* opened by the first packet (TCP: SYN seen) */
#define NLAB_CT_ESTABLISHED 2  /* the other side answered */
#define NLAB_CT_CLOSING     3  /* FIN or RST seen */

struct nlab_vnic {
    __u8  mac[6];
    __u16 endpoint;  /* firewall endpoint id; 0: no policy */
    __u32 flags;     /* NLAB_VNIC_F_* */
    /* the vNIC's first IPv4 and IPv6 addresses (0: none): port security checks them before
     * it looks up `vnic_addrs`, which holds all of them */
    __be32 ip4;
    __u8  ip6[16];
};

/* An address a vNIC may send from (port security), keyed with the vNIC's ifindex. */
struct nlab_addr_key {
    __u32 ifindex;
    __u8  family;  /* 4 or 6 */
    __u8  _pad[3];
    __u8  addr[16];  /* IPv4 in the first 4 bytes */
};

struct nlab_ct_key {
    __u8  saddr[16];
    __u8  daddr[16];
    __u16 sport;  /* network order; ICMP echo: the identifier on both */
    __u16 dport;
    __u16 endpoint;
    __u8  proto;
    __u8  family;
};

struct nlab_ct_entry {
    __u64 last_seen;   /* bpf_ktime_get_coarse_ns(): CLOCK_MONOTONIC, one tick behind at most */
    __u32 rule;        /* the rule that allowed the flow */
    __u32 generation;  /* the policy generation it was last checked against */
    __u8  state;
    __u8  origin;      /* NLAB_FW_OUT or NLAB_FW_IN: the direction of the first packet */
    __u8  _pad[6];
};

/* The input of `ct_reap` (run by user space through BPF_PROG_TEST_RUN, as the packet bytes). */
struct nlab_ct_reap {
    struct nlab_ct_key key;
    __u8  force;     /* 1: delete even if the entry is alive (e.g. `nlab trace` undoing its flow) */
    __u8  _pad[3];
};

struct nlab_frag_key {
    __u8  saddr[16];
    __u8  daddr[16];
    __u32 id;
    __u16 endpoint;
    __u8  proto;    /* IPv4 only (RFC 791); IPv6 keys a datagram by addresses and id alone (RFC 8200) */
    __u8  family;
};

struct nlab_frag {
    __u64 last_seen;
    __u32 end;      /* highest byte offset seen so far (end of the last fragment) */
    __u8  verdict;  /* the first fragment's: NLAB_VERDICT_*, or NLAB_FRAG_PENDING */
    __u8  _pad[3];
};

/* A later fragment came before its first (reordered, or the first is lost): the datagram cannot be
 * completed once that fragment is dropped, so its first fragment is refused too when it comes. */
#define NLAB_FRAG_PENDING 2

/* Runtime settings (array of one). `generation`: the active policy generation; its low bit
 * selects which of the two policy copies (keys carry the bit) packets use. */
struct nlab_fw_config {
    __u32 generation;
    __u32 ct_quota;         /* connection entries of flows one endpoint opened (origin OUT) */
    __u64 timeout_tcp;      /* ns: established TCP */
    __u64 timeout_tcp_open; /* ns: TCP being opened or closed */
    __u64 timeout_udp;
    __u64 timeout_icmp;
    __u64 timeout_frag;
    __u64 timeout_tcp_close; /* ns: TCP after a FIN or RST */
    __u32 ct_quota_in;      /* connection entries of flows opened towards one endpoint (origin IN) */
    __u32 ct_quota_peer;    /* of those, entries of flows opened by the peers of one bucket */
};

/* The quota count of an endpoint's entries of one origin: index endpoint * 2 + origin. */
#define NLAB_CT_SHARES (NLAB_MAX_ENDPOINTS * 2)
/* Peers of an endpoint are counted in buckets by a hash of their address (peers sharing a bucket
 * share its bound): index endpoint * NLAB_PEER_BUCKETS + bucket. A power of two. */
#ifndef NLAB_PEER_BUCKETS
#define NLAB_PEER_BUCKETS 256
#endif

/* Policy lookup: LPM over (gen, endpoint, direction, proto, identity) exact and a prefix of
 * the port; a longest match gives the winning rule for that port interval. */
#define NLAB_POLICY_FIXED_BITS 80
struct nlab_policy_key {
    __u32 prefixlen;   /* NLAB_POLICY_FIXED_BITS + 0..16 port bits */
    __u8  gen;         /* generation bit */
    __u8  direction;
    __u8  proto;
    __u8  _pad;
    __u16 endpoint;    /* network order: the trie compares bytes in order */
    __u32 identity;    /* network order */
    __u16 port;        /* network order, last: its leading bits are the prefix */
} __attribute__((packed));

struct nlab_policy_value {
    __u32 rule;
    __u8  verdict;
    __u8  _pad[3];
    __u64 rank;    /* the rule's precedence as a number: priority << 33 | allow << 32 | id; lower wins */
};

/* The identity of rows for any peer: looked up beside the peer's own, the lower rank wins, so
 * such rules are not repeated under every identity. */
#define NLAB_IDENTITY_ANY 0xffffffff

/* Address to identity: LPM over (gen, family, address). */
#define NLAB_IPCACHE_FIXED_BITS 16
struct nlab_ipcache_key {
    __u32 prefixlen;   /* NLAB_IPCACHE_FIXED_BITS + address bits */
    __u8  gen;
    __u8  family;
    __u8  addr[16];
} __attribute__((packed));

struct nlab_fw_event {
    __u64 time_ns;
    __u8  saddr[16];
    __u8  daddr[16];
    __u16 sport;       /* host order */
    __u16 dport;
    __u32 ifindex;
    __u32 rule;
    __u16 endpoint;
    __u8  proto;
    __u8  family;
    __u8  verdict;     /* NLAB_VERDICT_DENY or ALLOW (a new flow) */
    __u8  reason;
    __u8  direction;   /* NLAB_FW_OUT / NLAB_FW_IN */
    __u8  icmp_type;   /* of an ICMP or ICMPv6 packet (sport and dport: its identifier) */
};

/* skb->cb[NLAB_CB_VLAN] carries the classified VLAN to later stages (and to tests). */
#define NLAB_CB_VLAN 0
/* skb->cb[NLAB_CB_MIRROR]: the port's mirror taps, read once by the entry program. */
#define NLAB_CB_MIRROR 1

/* ---- port mirroring (NIST 5, VM-TM-R1..R3) ---- */

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
