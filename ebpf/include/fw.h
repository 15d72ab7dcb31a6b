/* The stateful NIC-level firewall of a vNIC (NIST SP 800-125B 4.3): fragments, ICMP errors,
 * connection state, then the policy for a new flow; verdict events and rule hit counters.
 * Maps are reached through the map_* accessors of the program (see vswitch.c). */
#ifndef NLAB_FW_H
#define NLAB_FW_H

#include "abi/fw.h"
#include "abi/port.h"
#include "abi/reasons.h"
#include "conntrack.h"
#include "flow.h"
#include "flowcache.h"
#include "fwctx.h"
#include "policy.h"
#include "policycache.h"
#include "prof.h"

/* Written in place in the ring (no copy through the stack). Submitted with adaptive wakeup: the
 * kernel wakes the reader only for the first record after it caught up, so under load records
 * are read in batches and the wakeup (an irq_work: an IPI on a VM) is paid once per batch. */
static __always_inline void fw_event(const struct fw_ctx *c, __u8 verdict, int reason)
{
    if (PROF_SKIP(NLAB_PROF_EVENT))
        return;
    struct nlab_fw_event *ev = map_event_reserve();

    if (!ev) {
        __u32 zero = 0;
        __u64 *lost = map_events_lost(&zero);
        if (lost)
            (*lost)++;
        return;
    }
    ev->time_ns = c->now;
    __builtin_memcpy(ev->saddr, c->f->saddr, 16);
    __builtin_memcpy(ev->daddr, c->f->daddr, 16);
    ev->sport = bpf_ntohs(c->f->sport);
    ev->dport = bpf_ntohs(c->f->dport);
    ev->ifindex = skb_ifindex(c->skb);
    ev->rule = c->rule;
    ev->endpoint = c->endpoint;
    ev->proto = c->f->proto;
    ev->family = c->f->family;
    ev->verdict = verdict;
    ev->reason = reason;
    ev->direction = c->dir;
    ev->icmp_type = c->f->icmp_type;
    map_event_submit(ev);
}

static __always_inline void rule_hit(const struct fw_ctx *c)
{
    __u32 idx = c->rule < NLAB_MAX_RULES ? c->rule : 0;
    struct nlab_counter *hits = PROF_SKIP(NLAB_PROF_RULEHIT) ? NULL : map_rule_hits(&idx);

    if (hits) {
        hits->packets++;
        hits->bytes += c->skb->len;
    }
}

/* A drop the user should see: reported as an event, not counted on a rule (no rule decided it:
 * connection state, quota, fragments). */
static __always_inline int fw_drop(const struct fw_ctx *c, int reason)
{
    fw_event(c, NLAB_VERDICT_DENY, reason);
    return -reason;
}

/* A denial by the policy: counted on the deciding rule (0: the default) and reported. */
static __always_inline int fw_deny(const struct fw_ctx *c)
{
    rule_hit(c);
    return fw_drop(c, NLAB_DROP_POLICY);
}

static __always_inline int fw_policy(struct fw_ctx *c, __u8 dir, __u8 family, __u8 proto, const __u8 *peer,
                                     __u16 port_be)
{
    if (PROF_SKIP(NLAB_PROF_POLICY)) {
        c->rule = 1;
        return NLAB_VERDICT_ALLOW;
    }
    struct policy_query q = {
        .generation = c->cfg->generation, .endpoint = c->endpoint, .direction = dir,
        .family = family, .proto = proto, .port_be = port_be, .peer = peer,
    };

    return policy_verdict(&q, &c->rule);
}

/* Non-first fragments follow their first fragment's verdict; orphans, overlaps (including
 * RFC 1858's offset-8 TCP rewrite) and duplicate first fragments are dropped. A datagram is
 * keyed as its receiver reassembles it: IPv4 by addresses, protocol and id (RFC 791), IPv6 by
 * addresses and id (RFC 8200), as a later fragment cannot name the upper layer.
 *
 * Reordering: a later fragment before its first is dropped (its policy is not known yet, and
 * there is nowhere to hold it), which loses the datagram; it leaves a PENDING mark, so that the
 * first fragment, when it comes, is refused as FRAG_REORDERED (see firewall) instead of
 * filling the receiver's reassembly queue with a datagram that cannot complete. */
/* A fragment's datagram: its key and its reassembly entry (NULL if none or expired). Looked up
 * once per fragment (the program's stack has no room for a second key). */
struct frag_ref {
    struct nlab_frag_key key;
    struct nlab_frag *fr;
};

static __always_inline void frag_find(const struct fw_ctx *c, struct frag_ref *r)
{
    const struct flow *f = c->f;

    r->key.id = f->frag_id;
    r->key.endpoint = c->endpoint;
    r->key.family = f->family;
    r->key.proto = f->family == 4 ? f->proto : 0;
    __builtin_memcpy(r->key.saddr, f->saddr, 16);
    __builtin_memcpy(r->key.daddr, f->daddr, 16);
    r->fr = map_frag(&r->key);
    if (r->fr && (__s64)(c->now - r->fr->last_seen) > (__s64)c->cfg->timeout_frag)
        r->fr = NULL;
}

static __always_inline int fw_fragment(struct fw_ctx *c, struct frag_ref *r, int verdict)
{
    struct flow *f = c->f;
    struct nlab_frag *fr = r->fr;
    struct nlab_frag fresh = {.last_seen = c->now, .end = f->frag_off + f->frag_len, .verdict = verdict};

    if (f->frag == NLAB_FRAG_FIRST) {
        if (fr)  /* reported once: a denied first fragment already was */
            return verdict == NLAB_VERDICT_ALLOW ? fw_drop(c, NLAB_DROP_FRAG_DUP) : -NLAB_DROP_FRAG_DUP;
        map_frag_update(&r->key, &fresh);
        return 0;
    }
    if (!fr) {
        fresh.end = 0;
        fresh.verdict = NLAB_FRAG_PENDING;
        map_frag_update(&r->key, &fresh);
        return fw_drop(c, NLAB_DROP_FRAG_ORPHAN);
    }
    if (fr->verdict == NLAB_FRAG_PENDING)
        return fw_drop(c, NLAB_DROP_FRAG_ORPHAN);
    if (f->frag_off < fr->end || (f->proto == NLAB_IPPROTO_TCP && f->frag_off == 8))
        return fw_drop(c, NLAB_DROP_FRAG_OVERLAP);
    int rc = fr->verdict == NLAB_VERDICT_ALLOW ? 0 : fw_drop(c, NLAB_DROP_POLICY);  /* no rule kept: no hit */
    if (f->frag_more) {
        fr->end = fresh.end;
        fr->last_seen = c->now;
    } else {
        /* the datagram is complete and its id free again: a busy sender reuses ids within
         * seconds, and a first fragment of the next datagram is no duplicate */
        map_frag_delete(&r->key);
    }
    return rc;
}

static __always_inline int icmp_is_error(const struct flow *f)
{
    if (!is_icmp(f->family, f->proto))
        return 0;
    if (f->family == 4)
        return f->icmp_type == 3 || f->icmp_type == 4 || f->icmp_type == 5 || f->icmp_type == 11 ||
               f->icmp_type == 12;
    return f->icmp_type >= 1 && f->icmp_type <= 4;
}

/* IPv6 neighbour discovery and MLD are the link layer of IPv6 (as ARP is of IPv4): passed like
 * ARP; port security has already refused router advertisements and redirects from VMs. Only in
 * IPv6: protocol 58 inside IPv4 is no neighbour discovery, and must meet the policy. */
static __always_inline int icmp_is_link(const struct flow *f)
{
    __u8 t = f->icmp_type;

    return is_icmp(6, f->proto) && f->family == 6 && ((t >= 130 && t <= 136) || t == 143);
}

/* An ICMP error passes only if the packet it quotes belongs to a tracked flow of this vNIC. */
static __always_inline int fw_icmp_error(struct fw_ctx *c)
{
    struct flow *f = c->f;
    struct flow inner = {.family = f->family};
    __u32 off = f->l4_off + 8;

    if (f->family == 4) {
        struct nlab_iphdr ip;
        if (bpf_skb_load_bytes(c->skb, off, &ip, sizeof(ip)) < 0 || (ip.ver_ihl & 0xf) < 5)
            return fw_drop(c, NLAB_DROP_ICMP_UNRELATED);
        inner.proto = ip.protocol;
        __builtin_memcpy(inner.saddr, &ip.saddr, 4);
        __builtin_memcpy(inner.daddr, &ip.daddr, 4);
        off += (ip.ver_ihl & 0xf) * 4;
    } else {
        /* the addresses straight into `inner` (saddr and daddr are adjacent there, as in the
         * header): no copy of the header on the program's nearly full stack */
        if (bpf_skb_load_bytes(c->skb, off + 6, &inner.proto, 1) < 0 ||
            bpf_skb_load_bytes(c->skb, off + 8, inner.saddr, 32) < 0)
            return fw_drop(c, NLAB_DROP_ICMP_UNRELATED);
        off += sizeof(struct nlab_ipv6hdr);
    }
    __u16 ports[2] = {};
    if (bpf_skb_load_bytes(c->skb, off, ports, sizeof(ports)) < 0)
        return fw_drop(c, NLAB_DROP_ICMP_UNRELATED);
    inner.sport = ports[0];
    inner.dport = ports[1];
    if (is_icmp(inner.family, inner.proto)) {
        __u16 id[3] = {};
        if (bpf_skb_load_bytes(c->skb, off, id, sizeof(id)) < 0)
            return fw_drop(c, NLAB_DROP_ICMP_UNRELATED);
        inner.sport = inner.dport = id[2];
        inner.icmp_type = id[0] & 0xff;  /* type, then code: little-endian load */
    }
    struct nlab_ct_key key = {};
    int reply = 0;
    if (!ct_find(c, &inner, &key, &reply))
        return fw_drop(c, NLAB_DROP_ICMP_UNRELATED);
    return 0;
}

/* A flow already tracked: re-checked once against a policy generation it has not seen, so that
 * a new policy cuts an established flow it denies at its next packet. */
static __always_inline int fw_tracked(struct fw_ctx *c, struct nlab_ct_key *key, struct nlab_ct_entry *e, int reply)
{
    if (e->generation != c->cfg->generation) {
        const __u8 *peer = e->origin == NLAB_FW_OUT ? key->daddr : key->saddr;
        /* an ICMP flow was opened by a request: ask about the request this packet belongs to */
        __u16 port = is_icmp(key->family, key->proto) ? bpf_htons(icmp_request_of(c->f)) : key->dport;
        if (fw_policy(c, e->origin, key->family, key->proto, peer, port) != NLAB_VERDICT_ALLOW) {
            ct_delete(key, e->origin);
            return fw_deny(c);
        }
        e->generation = c->cfg->generation;
        e->rule = c->rule;
    }
    ct_update(c, e, reply);
    return 0;
}

static __always_inline int fw_new_flow(struct fw_ctx *c, struct nlab_ct_key *key)
{
    struct flow *f = c->f;

    if (!ct_may_open(f))
        return fw_drop(c, NLAB_DROP_CT_INVALID);
    const __u8 *peer = c->dir == NLAB_FW_OUT ? f->daddr : f->saddr;
    struct policy_query q = {
        .generation = c->cfg->generation, .endpoint = c->endpoint, .direction = c->dir, .family = f->family,
        .proto = f->proto, .port_be = policy_port(f->family, f->proto, f->dport, f->icmp_type), .peer = peer,
    };
    int verdict = PROF_SKIP(NLAB_PROF_POLICY) ? (c->rule = 1, NLAB_VERDICT_ALLOW) : pc_verdict(&q, &c->rule);
    if (verdict != NLAB_VERDICT_ALLOW)
        return fw_deny(c);
    ct_key_of(f, c->endpoint, 0, key);
    int rc = PROF_SKIP(NLAB_PROF_CT_NEW) ? 0 : ct_create(c, key);
    if (rc < 0)
        return fw_drop(c, -rc);
    rule_hit(c);
    fw_event(c, NLAB_VERDICT_ALLOW, NLAB_PASS);
    return 0;
}

static __always_inline int firewall(struct fw_ctx *c)
{
    struct flow *f = c->f;
    __u32 epoch = 0;
    int cached = fc_cacheable(f) && fc_epoch(c->endpoint, &epoch);
    /* the cache's clock: a plain load of jiffies, where bpf_ktime_get_coarse_ns costs ~20 ns
     * on these VMs; the slow path reads the latter, the clock of last_seen and events */
    __u64 tick = bpf_jiffies64();

    if (cached && fc_lookup(c, epoch, tick))
        return 0;
    c->now = PROF_SKIP(NLAB_PROF_CLOCK) ? 1 : bpf_ktime_get_coarse_ns();
    struct frag_ref frag = {};

    if (f->frag != NLAB_FRAG_NONE) {
        frag_find(c, &frag);
        if (f->frag == NLAB_FRAG_LATER)
            return fw_fragment(c, &frag, 0);
        /* later fragments came first and were dropped: the datagram is lost, open no flow */
        if (frag.fr && frag.fr->verdict == NLAB_FRAG_PENDING)
            return fw_drop(c, NLAB_DROP_FRAG_REORDERED);
    }
    /* a fragmented one is no neighbour discovery to its receiver (RFC 6980): it meets the policy,
     * and its fragments are tracked like any other's */
    if (f->frag == NLAB_FRAG_NONE && icmp_is_link(f))
        return 0;
    int rc;
    if (PROF_SKIP(NLAB_PROF_CT)) {  /* every packet passes as if tracked */
        rc = 0;
    } else if (icmp_is_error(f)) {
        rc = fw_icmp_error(c);
    } else {
        struct nlab_ct_key key = {};
        int reply = 0;
        struct nlab_ct_entry *e = ct_find(c, f, &key, &reply);
        if (e) {
            rc = fw_tracked(c, &key, e, reply);
            if (cached && rc == 0)
                fc_fill(c, &key, epoch, tick, e->state, reply);
        } else {
            rc = fw_new_flow(c, &key);
            if (cached && rc == 0)  /* the entry fw_new_flow made: NEW, checked now, seen now */
                fc_fill(c, &key, epoch, tick, NLAB_CT_NEW, 0);
        }
    }
    if (f->frag == NLAB_FRAG_FIRST) {
        int frc = fw_fragment(c, &frag, rc < 0 ? NLAB_VERDICT_DENY : NLAB_VERDICT_ALLOW);
        if (rc == 0 && frc < 0)
            return frc;
    }
    return rc;
}

#endif
