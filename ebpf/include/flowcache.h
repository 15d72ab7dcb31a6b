/* A per-CPU flow cache in front of the connection table: a packet of a tracked TCP or UDP flow
 * that the slow path (ct_find, fw_tracked) would pass without changing anything passes on a
 * compare of one slot, with no hash-table lookup. A slot is indexed by a hash of the packet's
 * own tuple (each direction of a flow has its own) and holds the whole tuple, so a collision is
 * a miss, never a wrong hit. Per CPU: no atomics, no cache line shared between CPUs.
 *
 * A slot passes a packet only while everything the slow path would read is unchanged:
 * - the policy generation (every install flips it; the slow path would re-check the flow);
 * - the endpoint's deletion epoch (ct_epoch, bumped after each deleted entry of the endpoint,
 *   in the datapath and in ct_reap): a deleted or expired connection stops passing at once.
 *   The epoch is read before the connection lookup that fills a slot, so a delete racing with
 *   the fill leaves a slot of the old epoch;
 * - the clock tick (jiffies): a slot filled in tick T serves only while jiffies is T. The slow
 *   path set the connection's last_seen (coarse ns) in that tick, so it cannot expire meanwhile
 *   (timeouts are whole seconds, and a connection with a timeout under NLAB_FC_MIN_TIMEOUT is
 *   never cached); the refresh of last_seen it skips is one tick at most (the coarse clock may
 *   step once while jiffies stays: it moves just after jiffies at a tick), made by the first
 *   packet of the next tick, which takes the slow path;
 * - the state: only packets that would not move it (no SYN, FIN or RST; no first reply) hit,
 *   and since state only moves forward, a slot's older state is conservative.
 * So the verdict, the connection's state and last_seen, the counters, rule hits (none on a
 * tracked flow) and events (none) are those of the slow path. Fragments, ICMP and other
 * protocols always take the slow path. Maps are reached through the map_* accessors. */
#ifndef NLAB_FLOWCACHE_H
#define NLAB_FLOWCACHE_H

#include "abi/fw.h"
#include "conntrack.h"
#include "flow.h"
#include "fwctx.h"
#include "prof.h"

static __always_inline int fc_cacheable(const struct flow *f)
{
    if (PROF_SKIP(NLAB_PROF_CACHE))
        return 0;
    return f->frag == NLAB_FRAG_NONE && (f->proto == NLAB_IPPROTO_TCP || f->proto == NLAB_IPPROTO_UDP);
}

/* The endpoint's deletion epoch into *epoch; 0 if it has none (then nothing is cached). */
static __always_inline int fc_epoch(__u16 endpoint, __u32 *epoch)
{
    __u32 idx = endpoint;
    __u32 *e = map_ct_epoch(&idx);

    if (!e)
        return 0;
    *epoch = *(volatile __u32 *)e;  /* before the connection lookup (see above) */
    return 1;
}

static __always_inline void fc_key(const struct fw_ctx *c, __u64 *k)
{
    __u64 last = 0;

    __builtin_memcpy(k, c->f->saddr, 32);
    __builtin_memcpy(&last, &c->f->sport, 6);  /* sport, dport, proto, family */
    k[4] = last | (__u64)(c->endpoint | (__u32)c->dir << 15) << 48;
}

/* A multiply chain, not a plain xor of the words: A->B and B->A must not share a slot, or the
 * two directions of one flow on one CPU would evict each other at every packet. */
static __always_inline __u32 fc_slot(const __u64 *k)
{
    __u64 h = k[0];

    h = h * 0x9e3779b97f4a7c15ULL + k[1];
    h = h * 0x9e3779b97f4a7c15ULL + k[2];
    h = h * 0x9e3779b97f4a7c15ULL + k[3];
    h = h * 0x9e3779b97f4a7c15ULL + k[4];
    h *= 0x9e3779b97f4a7c15ULL;
    return h >> (64 - NLAB_FC_BITS);
}

/* Would ct_update leave a connection in `state` as it is for this packet? */
static __always_inline int fc_quiet(const struct flow *f, __u8 state, __u8 reply)
{
    if (f->proto == NLAB_IPPROTO_TCP)
        return !(f->tcp_flags & (NLAB_TCP_SYN | NLAB_TCP_FIN | NLAB_TCP_RST)) &&
               !(reply && state == NLAB_CT_NEW && (f->tcp_flags & NLAB_TCP_ACK));
    return !reply || state == NLAB_CT_ESTABLISHED;
}

/* Connections that may expire within a tick or two are never cached (see above). */
#define NLAB_FC_MIN_TIMEOUT 1000000000ULL

/* 1 if the packet passes on its slot. */
static __always_inline int fc_lookup(const struct fw_ctx *c, __u32 epoch, __u64 tick)
{
    __u64 k[5];

    fc_key(c, k);
    __u32 idx = fc_slot(k);
    const struct nlab_fc_entry *s = map_flow_cache(&idx);
    if (!s)
        return 0;
    if ((s->key[0] ^ k[0]) | (s->key[1] ^ k[1]) | (s->key[2] ^ k[2]) | (s->key[3] ^ k[3]) | (s->key[4] ^ k[4]))
        return 0;
    return s->tick == tick && s->generation == c->cfg->generation && s->epoch == epoch &&
           fc_quiet(c->f, s->state, s->reply);
}

/* After the slow path passed a packet of connection `key`, now in `state`, checked against the
 * current generation and refreshed in tick `tick`. */
static __always_inline void fc_fill(const struct fw_ctx *c, const struct nlab_ct_key *key, __u32 epoch, __u64 tick,
                                    __u8 state, __u8 reply)
{
    __u64 k[5];

    if (ct_timeout(c->cfg, key, state) < NLAB_FC_MIN_TIMEOUT)
        return;

    fc_key(c, k);
    __u32 idx = fc_slot(k);
    struct nlab_fc_entry *s = map_flow_cache(&idx);
    if (!s)
        return;
    __builtin_memcpy(s->key, k, sizeof(k));
    s->tick = tick;
    s->generation = c->cfg->generation;
    s->epoch = epoch;
    s->state = state;
    s->reply = reply;
}

#endif
