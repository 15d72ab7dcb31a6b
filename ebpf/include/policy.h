/* Policy lookup: three LPM lookups whatever the number of rules. `ipcache` turns the peer address
 * into an identity (an address class the rules cannot tell apart); `policy` maps (endpoint,
 * direction, protocol, identity, port prefix) to the winning rule, looked up under the peer's
 * identity and under the wildcard one of rules for any peer; the lower rank wins. Both maps
 * carry a generation bit so that user space writes a whole new policy beside the live one and
 * flips `generation`. */
#ifndef NLAB_POLICY_H
#define NLAB_POLICY_H

#include "abi/fw.h"
#include "flow.h"

/* Protocols the policy names, ICMP only in its own IP version (is_icmp); every other IP protocol
 * is "other" (0): only rules for any protocol apply to it, with port 0. */
static __always_inline __u8 policy_proto(__u8 family, __u8 proto)
{
    if (proto == NLAB_IPPROTO_TCP || proto == NLAB_IPPROTO_UDP || is_icmp(family, proto))
        return proto;
    return 0;
}

/* The "port" the policy matches: the destination port, the ICMP type, or 0. */
static __always_inline __u16 policy_port(__u8 family, __u8 proto, __u16 dport_be, __u8 icmp_type)
{
    if (proto == NLAB_IPPROTO_TCP || proto == NLAB_IPPROTO_UDP)
        return dport_be;
    if (is_icmp(family, proto))
        return bpf_htons(icmp_type);
    return 0;
}

static __always_inline __u32 identity_of(__u8 gen, __u8 family, const __u8 *addr)
{
    struct nlab_ipcache_key key = {.gen = gen, .family = family};

    key.prefixlen = NLAB_IPCACHE_FIXED_BITS + (family == 4 ? 32 : 128);
    __builtin_memcpy(key.addr, addr, 16);
    __u32 *identity = map_ipcache(&key);
    return identity ? *identity : 0;  /* 0: the world, matched only by broad rules */
}

struct policy_query {
    __u32 generation;
    __u16 endpoint;
    __u8  direction;
    __u8  family;
    __u8  proto;
    __u16 port_be;
    const __u8 *peer;
};

/* NLAB_VERDICT_* for the query; *rule gets the deciding rule (0: the endpoint's default). */
static __always_inline int policy_verdict(const struct policy_query *q, __u32 *rule)
{
    __u8 gen = q->generation & 1;
    struct nlab_policy_key key = {
        .prefixlen = NLAB_POLICY_FIXED_BITS + 16,
        .gen = gen,
        .direction = q->direction,
        .proto = policy_proto(q->family, q->proto),
        .endpoint = bpf_htons(q->endpoint),
        .identity = bpf_htonl(identity_of(gen, q->family, q->peer)),
        .port = q->port_be,
    };
    struct nlab_policy_value *v = map_policy(&key);

    key.identity = NLAB_IDENTITY_ANY;  /* all ones: the same in either byte order */
    struct nlab_policy_value *any = map_policy(&key);
    if (!v || (any && any->rank < v->rank))
        v = any;
    if (v) {
        *rule = v->rule;
        return v->verdict;
    }
    /* defaults are double-buffered like the rows; an endpoint past the array reads deny */
    __u32 idx = ((__u32)gen * NLAB_MAX_ENDPOINTS + q->endpoint) * 2 + (q->direction & 1);
    __u8 *def = q->endpoint < NLAB_MAX_ENDPOINTS ? map_defaults(&idx) : NULL;
    *rule = 0;
    return def ? *def : NLAB_VERDICT_DENY;
}

#endif
