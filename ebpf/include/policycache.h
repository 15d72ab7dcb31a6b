/* A per-CPU cache of policy decisions for new flows: the verdict and deciding rule of (policy
 * generation, endpoint, direction, family, protocol, peer, port), the whole question as a key,
 * so that a new flow like one decided before in the same generation (a client's next connection
 * to a service, a peer's next datagram socket) skips the ipcache and policy tries. Every input of
 * the decision is in the key, and the maps the decision reads change only under a generation
 * flip (user space writes the spare half, then the generation): a slot of an older generation can
 * never match. A slot also serves only in the tick (jiffies) it was filled in, so that a live row
 * edited in place (a fault, tampering: what `nlab verify` probes for) decides new flows within a
 * tick, as it would without the cache. A collision is a miss. Maps are reached through the map_*
 * accessors. */
#ifndef NLAB_POLICYCACHE_H
#define NLAB_POLICYCACHE_H

#include "abi/fw.h"
#include "policy.h"
#include "prof.h"

static __always_inline void pc_key(const struct policy_query *q, __u64 *k)
{
    __builtin_memcpy(k, q->peer, 16);
    k[2] = (__u64)q->generation | (__u64)q->endpoint << 32 | (__u64)q->direction << 48 | (__u64)q->family << 56;
    k[3] = (__u64)q->proto | (__u64)q->port_be << 8;
}

static __always_inline __u32 pc_slot(const __u64 *k)
{
    __u64 h = k[0];

    h = h * 0x9e3779b97f4a7c15ULL + k[1];
    h = h * 0x9e3779b97f4a7c15ULL + k[2];
    h = h * 0x9e3779b97f4a7c15ULL + k[3];
    h *= 0x9e3779b97f4a7c15ULL;
    return h >> (64 - NLAB_PC_BITS);
}

/* policy_verdict through the cache. */
static __always_inline int pc_verdict(const struct policy_query *q, __u32 *rule)
{
    __u64 k[4];
    __u64 tick = bpf_jiffies64();

    pc_key(q, k);
    __u32 idx = pc_slot(k);
    struct nlab_pc_entry *s = PROF_SKIP(NLAB_PROF_CACHE) ? NULL : map_policy_cache(&idx);
    if (s && s->tick == tick &&
        !((s->key[0] ^ k[0]) | (s->key[1] ^ k[1]) | (s->key[2] ^ k[2]) | (s->key[3] ^ k[3]))) {
        *rule = s->rule;
        return s->verdict;
    }
    int verdict = policy_verdict(q, rule);
    if (s) {
        __builtin_memcpy(s->key, k, sizeof(k));
        s->tick = tick;
        s->rule = *rule;
        s->verdict = verdict;
    }
    return verdict;
}

#endif
