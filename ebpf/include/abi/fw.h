/* The NIC firewall and port security: vNICs, their addresses, the connection and fragment
 * tables, runtime settings, the policy and ipcache LPM keys, and the events. Mirrored in
 * dataplane/abi/fw.py. */
#ifndef NLAB_ABI_FW_H
#define NLAB_ABI_FW_H

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

/* A slot of the per-CPU flow cache (include/flowcache.h): a packet of a tracked TCP or UDP flow
 * that passed, and what must still hold for the next packet like it to pass without the
 * connection table. Kernel state only: user space reads it in tests. */
struct nlab_fc_entry {
    __u64 key[5];      /* the packet's saddr, daddr, sport, dport, proto, family (as in struct flow),
                        * then endpoint | direction << 15 in the top 16 bits */
    __u64 tick;        /* jiffies when the slow path refreshed the connection's last_seen */
    __u32 generation;  /* the policy generation the connection was checked against */
    __u32 epoch;       /* the endpoint's ct_epoch (count of its deleted entries) before the lookup */
    __u8  state;       /* the connection's state then: it only moves forward */
    __u8  reply;       /* the packet went against the flow's origin */
    __u8  _pad[6];
};

/* A slot of the per-CPU policy decision cache (include/policycache.h): the whole question as the
 * key, the answer beside it. Kernel state only: user space reads it in tests. */
struct nlab_pc_entry {
    __u64 key[4];      /* peer address (16 bytes); generation | endpoint << 32 | direction << 48 |
                        * family << 56; policy protocol | port (network order) << 8 */
    __u64 tick;        /* jiffies when decided: a slot serves in that tick only */
    __u32 rule;        /* the deciding rule (0: the endpoint's default) */
    __u8  verdict;     /* NLAB_VERDICT_* */
    __u8  _pad[3];
};

/* The input of `ct_reap` (run by user space through BPF_PROG_TEST_RUN, as the packet bytes). */
struct nlab_ct_reap {
    struct nlab_ct_key key;
    __u8  force;     /* 1: delete even if the entry is alive (e.g. `nlab trace` undoing its flow);
                      * NLAB_REAP_REWRITTEN: delete nothing, see below */
    __u8  _pad[3];
};

/* `force` of a request that deletes nothing: user space rewrote the entry of `key` in place (or
 * deleted it without ct_reap), so its endpoint's deletion epoch moves on (atomically, in the
 * kernel) and no flow cache slot passes packets on what the entry was. */
#define NLAB_REAP_REWRITTEN 2

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
#endif
