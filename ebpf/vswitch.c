/* The switch-port dataplane of a vSwitch (in a hypervisor namespace) or of a physical switch:
 * VLAN access and trunk ports, NIC teams and injected faults, with every verdict counted per
 * port, direction and reason.
 * Loaded once per switching namespace by dataplane/bpf.py; ports are configured in `ports`.
 *
 * Compile-time settings: -DNLAB_MAX_IFINDEX=N (capacity of the port and counter arrays). */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "abi.h"
#include "parsing.h"
#include "prof.h"
#ifndef NLAB_FC_BITS
#define NLAB_FC_BITS 12  /* flow cache: 4096 slots per CPU (see include/flowcache.h) */
#endif
#define NLAB_FC_SLOTS (1u << NLAB_FC_BITS)
#ifndef NLAB_PC_BITS
#define NLAB_PC_BITS 10  /* policy decision cache: 1024 slots per CPU (see include/policycache.h) */
#endif
#include "vlan.h"

/* Port configuration by ifindex. An array: the lookup is inlined by the JIT, and a lab
 * namespace numbers its interfaces from 1, so ifindex fits as an index. Written by user space
 * only; an all-zero entry (mode UNCONFIGURED) drops everything: a port fails closed. */
BPF_ARRAY(ports, struct nlab_port, NLAB_MAX_IFINDEX);

/* Verdict counters, index ((ifindex * NLAB_NR_DIRS) + dir) * NLAB_NR_REASONS + reason.
 * Per-CPU so that counting needs no atomic operation; user space sums the CPUs. */
BPF_PERCPU_ARRAY(counters, struct nlab_counter, NLAB_MAX_IFINDEX * NLAB_NR_DIRS * NLAB_NR_REASONS);

/* ---- NIC teaming and fault injection (every switching node) ---- */
/* Team member state by ifindex; all zero: not a member. One byte write flips a team. */
BPF_ARRAY(team_state, struct nlab_team_member, NLAB_MAX_IFINDEX);
/* Injected fault by ifindex (host pNIC or physical switch port); all zero: none. */
BPF_ARRAY(port_faults, struct nlab_fault, NLAB_MAX_IFINDEX);
/* Beacons per port and direction, index ifindex * NLAB_NR_DIRS + dir. */
BPF_PERCPU_ARRAY(team_beacons, struct nlab_counter, NLAB_MAX_IFINDEX * NLAB_NR_DIRS);

static __always_inline struct nlab_team_member *map_team_member(__u32 *idx) { return team_state.lookup(idx); }
static __always_inline struct nlab_fault *map_port_fault(__u32 *idx) { return port_faults.lookup(idx); }
static __always_inline struct nlab_counter *map_team_beacons(__u32 *idx) { return team_beacons.lookup(idx); }

#include "team.h"

/* ---- firewall and port security (VM ports of hypervisors only) ----
 * A physical switch is built with -DNLAB_SWITCH_ONLY: it has no VM ports, and leaving the
 * firewall out cuts most of its compile time. */
#ifndef NLAB_SWITCH_ONLY

/* vNIC settings by ifindex (MAC, endpoint id, flags); all zero: no port security, no policy. */
BPF_ARRAY(vnics, struct nlab_vnic, NLAB_MAX_IFINDEX);
/* (ifindex, address) a vNIC may send from. A hash: sparse, exact. */
BPF_HASH(vnic_addrs, struct nlab_addr_key, u8, 4096);
/* Runtime settings: active policy generation, quota, timeouts. */
BPF_ARRAY(fw_config, struct nlab_fw_config, 1);
/* Peer address -> identity; LPM for CIDRs. Holds both generations during an update. */
BPF_LPM_TRIE(ipcache, struct nlab_ipcache_key, u32, NLAB_IPCACHE_SIZE);
/* (gen, direction, proto, endpoint, identity, port prefix) -> rule; LPM turns port ranges into a
 * few prefixes, so the lookup cost does not depend on the number of rules. */
BPF_LPM_TRIE(policy, struct nlab_policy_key, struct nlab_policy_value, NLAB_POLICY_SIZE);
/* Default verdict by (gen * NLAB_MAX_ENDPOINTS + endpoint) * 2 + direction: double-buffered
 * like the policy, so that one flip of the generation switches rows and defaults together.
 * An endpoint user space did not write reads 0: deny. */
BPF_ARRAY(defaults, u8, NLAB_MAX_ENDPOINTS * 4);
/* Connection table: a plain hash so that a full table refuses new flows instead of evicting. */
BPF_HASH(conntrack, struct nlab_ct_key, struct nlab_ct_entry, NLAB_CT_SIZE);
/* Live connection entries per endpoint and origin (index endpoint * 2 + origin), for the two
 * quotas of a vNIC: flows its VM opened, flows opened towards it. */
BPF_ARRAY(ct_count, u32, NLAB_CT_SHARES);
/* Live entries of flows opened towards an endpoint, by peer bucket (see ct_peer_bucket). */
BPF_ARRAY(ct_peer_count, u32, NLAB_MAX_ENDPOINTS * NLAB_PEER_BUCKETS);
/* First-fragment verdicts; LRU: stale reassembly state may be evicted, a fragment then orphaned. */
BPF_TABLE("lru_hash", struct nlab_frag_key, struct nlab_frag, frags, 4096);
/* Deleted connection entries per endpoint (any cause), a 32-bit counter that wraps: the flow
 * cache's deletion epoch (include/flowcache.h). Bumped after each delete by the datapath and
 * ct_reap; user space that deletes or rewrites an entry by other means must bump it too. */
BPF_ARRAY(ct_epoch, u32, NLAB_MAX_ENDPOINTS);
/* The flow cache: per-CPU slots of tracked flows that passed (include/flowcache.h). */
BPF_PERCPU_ARRAY(flow_cache, struct nlab_fc_entry, NLAB_FC_SLOTS);
/* Policy decisions of new flows: per-CPU slots (include/policycache.h). */
BPF_PERCPU_ARRAY(policy_cache, struct nlab_pc_entry, 1u << NLAB_PC_BITS);
/* Packets and bytes decided by each rule (0: the defaults). */
BPF_PERCPU_ARRAY(rule_hits, struct nlab_counter, NLAB_MAX_RULES);
/* Verdict events (denied packets, new allowed flows) and the count of those the reader lost. */
BPF_RINGBUF_OUTPUT(fw_events, 64);
BPF_PERCPU_ARRAY(events_lost, u64, 1);

/* Map accessors. bcc rewrites `map.lookup()` and friends only in the main source file, not in
 * included headers, so the helpers in include/ reach every map through these. */
static __always_inline u8 *map_vnic_addr(struct nlab_addr_key *k) { return vnic_addrs.lookup(k); }
static __always_inline u32 *map_ipcache(struct nlab_ipcache_key *k) { return ipcache.lookup(k); }
static __always_inline struct nlab_policy_value *map_policy(struct nlab_policy_key *k) { return policy.lookup(k); }
static __always_inline u8 *map_defaults(__u32 *idx) { return defaults.lookup(idx); }
static __always_inline u32 *map_ct_count(__u32 *idx) { return ct_count.lookup(idx); }
static __always_inline u32 *map_ct_peer_count(__u32 *idx) { return ct_peer_count.lookup(idx); }
static __always_inline u32 *map_ct_epoch(__u32 *idx) { return ct_epoch.lookup(idx); }
static __always_inline struct nlab_fc_entry *map_flow_cache(__u32 *idx) { return flow_cache.lookup(idx); }
static __always_inline struct nlab_pc_entry *map_policy_cache(__u32 *idx) { return policy_cache.lookup(idx); }
static __always_inline struct nlab_ct_entry *map_ct(struct nlab_ct_key *k) { return conntrack.lookup(k); }
static __always_inline int map_ct_delete(struct nlab_ct_key *k) { return conntrack.delete(k); }
static __always_inline int map_ct_insert(struct nlab_ct_key *k, struct nlab_ct_entry *e)
{
    return conntrack.insert(k, e);  /* BPF_NOEXIST */
}
static __always_inline struct nlab_frag *map_frag(struct nlab_frag_key *k) { return frags.lookup(k); }
static __always_inline int map_frag_update(struct nlab_frag_key *k, struct nlab_frag *v) { return frags.update(k, v); }
static __always_inline int map_frag_delete(struct nlab_frag_key *k) { return frags.delete(k); }
static __always_inline struct nlab_counter *map_rule_hits(__u32 *idx) { return rule_hits.lookup(idx); }
static __always_inline struct nlab_fw_event *map_event_reserve(void)
{
    return fw_events.ringbuf_reserve(sizeof(struct nlab_fw_event));
}
static __always_inline void map_event_submit(struct nlab_fw_event *ev) { fw_events.ringbuf_submit(ev, 0); }
static __always_inline u64 *map_events_lost(__u32 *idx) { return events_lost.lookup(idx); }

/* ---- port mirroring (NIST 5) ---- */
/* Mirror taps and sessions of a port by ifindex; all zero: not mirrored (one inlined lookup). */
BPF_ARRAY(mirror_ports, struct nlab_mirror_port, NLAB_MAX_IFINDEX);
/* Sessions by id (1..NLAB_MAX_MIRRORS-1): destination, snaplen, sampling, taps. */
BPF_ARRAY(mirror_sessions, struct nlab_mirror_session, NLAB_MAX_MIRRORS);
/* Copies sent, dropped and sampled out per session; per-CPU: no atomics on the copy path. */
BPF_PERCPU_ARRAY(mirror_stats, struct nlab_mirror_stats, NLAB_MAX_MIRRORS);

static __always_inline struct nlab_mirror_port *map_mirror_port(__u32 *idx) { return mirror_ports.lookup(idx); }
static __always_inline struct nlab_mirror_session *map_mirror_session(__u32 *id) { return mirror_sessions.lookup(id); }
static __always_inline struct nlab_mirror_stats *map_mirror_stats(__u32 *id) { return mirror_stats.lookup(id); }

/* ---- overlay: the underlay guard of a VTEP (NIST 2.5) ----
 * Empty on a host without a VTEP, where the program is not even loaded (switch.ON_DEMAND); not
 * preallocated, so they cost nothing there. Written by user space only (dataplane/overlay.py). */
/* Addresses this host takes VXLAN at (its VTEP address, its pNIC's subnet broadcast). Hash: a
 * handful of exact addresses, IPv4 and IPv6 in one key. */
BPF_F_TABLE("hash", struct nlab_overlay_addr, u8, overlay_local, NLAB_MAX_OVERLAY_LOCAL, BPF_F_NO_PREALLOC);
/* The other hosts' VTEP addresses: the only underlay sources VXLAN is accepted from. */
BPF_F_TABLE("hash", struct nlab_overlay_addr, u8, vtep_peers, NLAB_MAX_VTEP_PEERS, BPF_F_NO_PREALLOC);
/* VNI (host order) -> frames accepted for it. Per-CPU hash: VNIs are sparse in 24 bits, and the
 * lookup that admits a VNI also finds its counter, which then needs no atomics. */
BPF_F_TABLE("percpu_hash", u32, struct nlab_overlay_vni, overlay_vnis, NLAB_MAX_OVERLAY_VNIS, BPF_F_NO_PREALLOC);

static __always_inline u8 *map_overlay_local(struct nlab_overlay_addr *k) { return overlay_local.lookup(k); }
static __always_inline u8 *map_vtep_peer(struct nlab_overlay_addr *k) { return vtep_peers.lookup(k); }
static __always_inline struct nlab_overlay_vni *map_overlay_vni(__u32 *vni) { return overlay_vnis.lookup(vni); }

#include "portsec.h"
#include "fw.h"
#include "mirror.h"
#include "overlay.h"
#endif /* !NLAB_SWITCH_ONLY */

/* The one exit of every program: count the verdict, turn a negative reason into a drop. */
static __always_inline int verdict(struct __sk_buff *skb, __u32 len, int dir, int rc)
{
    __u32 reason = rc < 0 ? -rc : NLAB_PASS;
    __u32 ifindex = skb_ifindex(skb);

    ifindex = ifindex < NLAB_MAX_IFINDEX ? ifindex : 0;
    __u32 idx = (ifindex * NLAB_NR_DIRS + dir) * NLAB_NR_REASONS + (reason & (NLAB_NR_REASONS - 1));
    struct nlab_counter *c = PROF_SKIP(NLAB_PROF_COUNTERS) ? NULL : counters.lookup(&idx);

    if (c) {
        c->packets++;
        c->bytes += len;
    }
    if (rc < 0)
        return TC_ACT_SHOT;
    skb->cb[NLAB_CB_VLAN] = rc;
    return TC_ACT_OK;
}

static __always_inline const struct nlab_port *port_of(struct __sk_buff *skb)
{
    __u32 ifindex = skb_ifindex(skb);

    if (ifindex >= NLAB_MAX_IFINDEX)
        return NULL;
    const struct nlab_port *port = ports.lookup(&ifindex);
    /* only the modes user space writes; anything else (zero included) fails closed */
    if (!port || (port->mode != NLAB_MODE_ACCESS && port->mode != NLAB_MODE_TRUNK))
        return NULL;
    return port;
}

static __always_inline int classify(struct __sk_buff *skb, int dir)
{
    const struct nlab_port *port = port_of(skb);
    struct ethhdr *eth = eth_header(skb);

    if (!port)
        return -NLAB_DROP_NO_PORT;
    if (!eth)
        return -NLAB_DROP_MALFORMED;
    int vlan = outer_vlan(skb, eth);
    if (port->mode == NLAB_MODE_ACCESS)
        return dir == NLAB_DIR_INGRESS ? access_ingress(skb, port, eth, vlan) : access_egress(skb, port, vlan);
    if (vlan < 0)
        return vlan;
    return trunk_check(skb, port, eth, vlan, dir);
}

#ifndef NLAB_SWITCH_ONLY
static __always_inline const struct nlab_vnic *vnic_of(struct __sk_buff *skb)
{
    __u32 ifindex = skb_ifindex(skb);
    const struct nlab_vnic *vnic = ifindex < NLAB_MAX_IFINDEX ? vnics.lookup(&ifindex) : NULL;

    return vnic && vnic->flags ? vnic : NULL;
}

#define VNIC_CONTINUE 0  /* on to the firewall */
#define VNIC_DONE     1  /* passes without it (ARP: port security has checked it) */

/* Port security and parsing of a frame through vNIC `vnic`: VNIC_* or a drop reason. */
static __always_inline int vnic_admit(struct fw_ctx *c, const struct nlab_vnic *vnic)
{
    struct ethhdr *eth = eth_header(c->skb);

    if (!eth)
        return -NLAB_DROP_MALFORMED;
    __be16 proto = eth->h_proto;
    int guard = c->dir == NLAB_FW_OUT && (vnic->flags & NLAB_VNIC_F_PORTSEC);
    if (guard && !mac_equal(eth->h_source, vnic->mac))
        return -NLAB_DROP_SPOOF_MAC;
    if (proto == bpf_htons(ETH_P_ARP)) {
        int rc = guard ? portsec_arp(c->skb, vnic) : 0;
        return rc < 0 ? rc : VNIC_DONE;
    }
    int rc = parse_flow(c->skb, proto, c->f);
    if (rc < 0)
        return rc;
    if (guard && !PROF_SKIP(NLAB_PROF_PORTSEC) && (rc = portsec_ip(c->skb, vnic, c->f)) < 0)
        return rc;
    return VNIC_CONTINUE;
}

/* Refusals before the firewall that are attacks from or at a VM: reported like firewall denials
 * (rule 0). The others (malformed frames, protocols that are not IP) are only counted. */
#define VNIC_REPORTED ((1u << NLAB_DROP_SPOOF_MAC) | (1u << NLAB_DROP_SPOOF_IP) | (1u << NLAB_DROP_SPOOF_ARP) | \
                       (1u << NLAB_DROP_DHCP_SERVER) | (1u << NLAB_DROP_ROUTER_ADVERT) |                     \
                       (1u << NLAB_DROP_FRAG_TINY) | (1u << NLAB_DROP_IPV6_CHAIN) | (1u << NLAB_DROP_SPOOF_ND))

static __always_inline int vnic_refuse(struct fw_ctx *c, int rc)
{
    __u32 reason = -rc;

    if (reason < 32 && ((1u << reason) & VNIC_REPORTED)) {
        c->now = bpf_ktime_get_coarse_ns();
        fw_event(c, NLAB_VERDICT_DENY, reason);
    }
    return rc;
}

/* Port security and firewall of vNIC `vnic` (NULL: none) in direction `dir`; 0 when it passes. */
static __always_inline int vnic_firewall(struct __sk_buff *skb, const struct nlab_vnic *vnic, __u8 dir)
{
    if (!vnic)
        return 0;
    struct flow f = {};
    struct fw_ctx c = {.skb = skb, .f = &f, .endpoint = vnic->endpoint, .dir = dir};
    int rc = vnic_admit(&c, vnic);
    if (rc < 0)
        return vnic_refuse(&c, rc);
    if (rc == VNIC_DONE || !(vnic->flags & NLAB_VNIC_F_FIREWALL))
        return 0;
    __u32 zero = 0;
    c.cfg = fw_config.lookup(&zero);
    if (!c.cfg)
        return -NLAB_DROP_POLICY;
    return firewall(&c);
}

/* From a VM: edge checks, port security, firewall, then the VLAN tag. */
static __always_inline int from_vm(struct __sk_buff *skb)
{
    const struct nlab_port *port = port_of(skb);
    struct ethhdr *eth = eth_header(skb);

    if (!port)
        return -NLAB_DROP_NO_PORT;
    if (!eth)
        return -NLAB_DROP_MALFORMED;
    int vlan = outer_vlan(skb, eth);
    if (vlan < 0)
        return vlan;
    /* a tagged frame would carry its headers past port security and the firewall, which read
     * them untagged: refused on an access port and on any port whose vNIC they guard */
    if (vlan != NLAB_NO_VLAN)
        return port->mode == NLAB_MODE_ACCESS || vnic_of(skb) ? -NLAB_DROP_TAGGED_ON_ACCESS
                                                               : trunk_check(skb, port, eth, vlan, NLAB_DIR_INGRESS);
    if ((port->flags & NLAB_PORT_F_GUARD) && is_control_frame(eth))
        return -NLAB_DROP_CONTROL_FRAME;
    mirror_tap(skb, NLAB_TAP_OUT_BEFORE);
    int rc = vnic_firewall(skb, vnic_of(skb), NLAB_FW_OUT);
    if (rc < 0)
        return rc;
    mirror_tap(skb, NLAB_TAP_OUT_AFTER);
    eth = eth_header(skb);  /* revalidate after the helper calls of the firewall */
    if (!eth)
        return -NLAB_DROP_MALFORMED;
    if (port->mode == NLAB_MODE_ACCESS)
        return access_ingress(skb, port, eth, vlan);
    return trunk_check(skb, port, eth, vlan, NLAB_DIR_INGRESS);
}

/* A unicast frame for another MAC reaches a VM port only because the bridge floods it (its
 * destination is unknown or aged out). A vNIC with port security owns exactly one MAC, the only
 * one it may send with, so such a frame is never its own: refused before the taps and the
 * firewall, it leaves no copy, state, event or rule hit on a bystander. Without port security a
 * VM may own other MACs (VRRP, a bridge inside it) and gets floods like any bridge port. */
static __always_inline int vnic_dst_check(struct __sk_buff *skb, const struct nlab_vnic *vnic)
{
    if (!vnic || !(vnic->flags & NLAB_VNIC_F_PORTSEC))
        return 0;
    struct ethhdr *eth = eth_header(skb);  /* reloaded: classify may have popped a tag */
    if (!eth)
        return -NLAB_DROP_MALFORMED;
    /* two word compares instead of six byte compares: this runs on every frame to the VM */
    __u32 d4, m4;
    __u16 d2, m2;
    __builtin_memcpy(&d4, eth->h_dest, 4);
    __builtin_memcpy(&d2, eth->h_dest + 4, 2);
    __builtin_memcpy(&m4, vnic->mac, 4);
    __builtin_memcpy(&m2, vnic->mac + 4, 2);
    if (!(eth->h_dest[0] & 1) && ((d4 ^ m4) | (__u32)(d2 ^ m2)))
        return -NLAB_DROP_DST_MAC;
    return 0;
}

/* To a VM: the VLAN check and untagging first, then port security and the firewall on the
 * untagged frame. */
static __always_inline int to_vm(struct __sk_buff *skb)
{
    int vlan = classify(skb, NLAB_DIR_EGRESS);

    if (vlan < 0)
        return vlan;
    const struct nlab_vnic *vnic = vnic_of(skb);
    int rc = vnic_dst_check(skb, vnic);
    if (rc < 0)
        return rc;
    mirror_tap(skb, NLAB_TAP_IN_BEFORE);
    rc = vnic_firewall(skb, vnic, NLAB_FW_IN);
    if (rc < 0)
        return rc;
    mirror_tap(skb, NLAB_TAP_IN_AFTER);
    return vlan;
}

/* attach: TC ingress of a VM's vSwitch port (frames from the VM) */
int port_from_vm(struct __sk_buff *skb)
{
    __u32 len = skb->len;
    int rc = mirror_enter(skb, NLAB_DIR_INGRESS);

    return verdict(skb, len, NLAB_DIR_INGRESS, rc ? rc : from_vm(skb));
}

/* attach: TC egress of a VM's vSwitch port (frames to the VM) */
int port_to_vm(struct __sk_buff *skb)
{
    __u32 len = skb->len;
    int rc = mirror_enter(skb, NLAB_DIR_EGRESS);

    return verdict(skb, len, NLAB_DIR_EGRESS, rc ? rc : to_vm(skb));
}

/* attach: TC ingress of mirror1, the far end of a hypervisor's mirror port (copies to truncate or encapsulate) */
int mirror_port_rx(struct __sk_buff *skb)
{
    return mirror_port_forward(skb);
}

/* not attached: user space runs it through BPF_PROG_TEST_RUN on a struct nlab_ct_reap to delete
 * a connection entry (expired, or any with `force`). Deleting here, not from user space, keeps
 * the quota count exact: the decrement is atomic, and only the deleter of an entry makes it.
 * Returns 1 if it deleted the entry. */
int ct_reap(struct __sk_buff *skb)
{
    struct nlab_ct_reap req;
    __u32 zero = 0;

    if (bpf_skb_load_bytes(skb, 0, &req, sizeof(req)) < 0)
        return 0;
    if (req.force == NLAB_REAP_REWRITTEN) {
        __u32 idx = req.key.endpoint;
        u32 *epoch = ct_epoch.lookup(&idx);
        if (epoch)
            __sync_fetch_and_add(epoch, 1);
        return 0;
    }
    struct nlab_fw_config *cfg = fw_config.lookup(&zero);
    struct nlab_ct_entry *e = conntrack.lookup(&req.key);
    if (!cfg || !e)
        return 0;
    if (!req.force && (__s64)(bpf_ktime_get_coarse_ns() - e->last_seen) <= (__s64)ct_timeout(cfg, &req.key, e->state))
        return 0;
    __u8 origin = e->origin;  /* read before the delete: the element is recycled after it */
    if (conntrack.delete(&req.key) != 0)
        return 0;  /* the datapath deleted it first, and released its share */
    ct_release(&req.key, origin);
    return 1;
}

/* attach: TC ingress of a VTEP host's underlay pNIC (outer frames from the physical network) */
int overlay_from_underlay(struct __sk_buff *skb)
{
    __u32 len = skb->len;

    return verdict(skb, len, NLAB_DIR_INGRESS, overlay_guard(skb));
}

#endif /* !NLAB_SWITCH_ONLY */

/* attach: TC ingress of every switch port (frames from the port's device into the switch) */
int vlan_from_port(struct __sk_buff *skb)
{
    __u32 len = skb->len;
    int rc = port_gate(skb, NLAB_DIR_INGRESS);

    if (rc == NLAB_GATE_BEACON)
        return beacon_exit(skb, len, NLAB_DIR_INGRESS);
    int act = verdict(skb, len, NLAB_DIR_INGRESS, rc ? rc : classify(skb, NLAB_DIR_INGRESS));

#ifndef NLAB_SWITCH_ONLY
    if (act == TC_ACT_OK && mirror_encapsulated(skb))  /* a hypervisor's uplink: remote mirror copies */
        return mirror_receive(skb);
#endif
    return act;
}

/* attach: TC egress of every switch port (frames from the switch out to the port's device) */
int vlan_to_port(struct __sk_buff *skb)
{
    __u32 len = skb->len;
    int rc = port_gate(skb, NLAB_DIR_EGRESS);

    if (rc == NLAB_GATE_BEACON)
        return beacon_exit(skb, len, NLAB_DIR_EGRESS);
    return verdict(skb, len, NLAB_DIR_EGRESS, rc ? rc : classify(skb, NLAB_DIR_EGRESS));
}

/* The floor of benchmarks: an empty TC program, loaded from the same object. */
int nlab_empty(struct __sk_buff *skb)
{
    return TC_ACT_OK;
}
