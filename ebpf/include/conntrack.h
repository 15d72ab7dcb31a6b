/* Connection tracking per vNIC: a flow is keyed as its first packet looked (origin), so a
 * reply matches the reversed key. The table is a plain hash, not an LRU: when it is full a
 * new flow fails closed instead of evicting an established one. Maps are reached through the
 * map_* accessors of the program (see vswitch.c). */
#ifndef NLAB_CONNTRACK_H
#define NLAB_CONNTRACK_H

#include "abi/fw.h"
#include "abi/reasons.h"
#include "flow.h"
#include "fwctx.h"

/* The request an ICMP message answers (echo, timestamp, information, address mask), or its
 * own type: what opened its flow, and so what the policy is asked again about that flow. */
static __always_inline __u8 icmp_request_of(const struct flow *f)
{
    __u8 t = f->icmp_type;

    if (f->proto == NLAB_IPPROTO_ICMPV6)
        return t == NLAB_ICMPV6_ECHO_REP ? NLAB_ICMPV6_ECHO_REQ : t;
    if (t == NLAB_ICMP_ECHOREPLY)
        return NLAB_ICMP_ECHO;
    return t == 14 || t == 16 || t == 18 ? t - 1 : t;  /* timestamp, information, mask replies */
}

static __always_inline void ct_key_of(const struct flow *f, __u16 endpoint, int reverse, struct nlab_ct_key *k)
{
    if (reverse) {
        __builtin_memcpy(k->saddr, f->daddr, 16);
        __builtin_memcpy(k->daddr, f->saddr, 16);
        k->sport = f->dport;
        k->dport = f->sport;
    } else {
        __builtin_memcpy(k->saddr, f->saddr, 16);
        __builtin_memcpy(k->daddr, f->daddr, 16);
        k->sport = f->sport;
        k->dport = f->dport;
    }
    if (is_icmp(f->family, f->proto)) {
        /* an ICMP flow is (identifier, request type) either way: a reply names the request it
         * answers, so an echo and a timestamp exchange between two hosts are two flows */
        k->sport = f->sport;
        k->dport = bpf_htons(icmp_request_of(f));
    }
    k->endpoint = endpoint;
    k->proto = f->proto;
    k->family = f->family;
}

/* An ICMP packet can only ride its flow in its own role: a request the way the flow was opened,
 * a reply the other way. Otherwise a peer's echo request with the identifier of one of our
 * pings would pass as a "reply", past the policy of its own direction. */
static __always_inline int ct_role_fits(const struct flow *f, int reply)
{
    if (!is_icmp(f->family, f->proto))
        return 1;
    return reply == (icmp_request_of(f) != f->icmp_type);
}

static __always_inline __u64 ct_timeout(const struct nlab_fw_config *cfg, const struct nlab_ct_key *k, __u8 state)
{
    __u8 proto = k->proto;

    if (proto == NLAB_IPPROTO_TCP) {
        if (state == NLAB_CT_ESTABLISHED)
            return cfg->timeout_tcp;
        /* a closed connection gives its entry (and its VM's quota share) back soon */
        return state == NLAB_CT_CLOSING ? cfg->timeout_tcp_close : cfg->timeout_tcp_open;
    }
    if (proto == NLAB_IPPROTO_UDP)
        return cfg->timeout_udp;
    if (is_icmp(k->family, proto))
        return cfg->timeout_icmp;
    return cfg->timeout_udp;
}

/* Every entry counts against one share of its endpoint: that of its origin. */
static __always_inline __u32 ct_share(__u16 endpoint, __u8 origin)
{
    return (__u32)endpoint * 2 + (origin & 1);
}

/* The peer bucket of a flow opened towards the VM (its peer is the key's source): MurmurHash3's
 * finalizer of the address's words, so that neighbouring addresses land apart. A fixed hash:
 * which peers share a bucket depends on their addresses only, the same in every run. */
static __always_inline __u32 ct_peer_bucket(const struct nlab_ct_key *k)
{
    __u32 w[4];

    __builtin_memcpy(w, k->saddr, 16);
    __u32 h = w[0] ^ w[1] ^ w[2] ^ w[3];
    h ^= h >> 16;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    h ^= h >> 16;
    return (__u32)k->endpoint * NLAB_PEER_BUCKETS + (h & (NLAB_PEER_BUCKETS - 1));
}

/* Take one slot of `*count` if it stays within `limit`. Added first and read after (the fetching
 * atomics need -mcpu=v3, which bcc does not pass to its backend): of CPUs racing for the last
 * slot, none reads a count within the limit unless all the others added after its read, so the
 * limit is never exceeded; at worst all of them give back and refuse (fail closed). */
static __always_inline int ct_take(__u32 *count, __u32 limit)
{
    __sync_fetch_and_add(count, 1);
    if (*(volatile __u32 *)count <= limit)
        return 1;
    __sync_fetch_and_add(count, -1);
    return 0;
}

static __always_inline void ct_give(__u32 *count)
{
    if (count && *count > 0)
        __sync_fetch_and_add(count, -1);
}

/* After a delete: the shares back, and the endpoint's deletion epoch moved on, so that no flow
 * cache slot passes the deleted connection's packets any more (include/flowcache.h). */
static __always_inline void ct_release(const struct nlab_ct_key *k, __u8 origin)
{
    __u32 idx = k->endpoint;
    __u32 *epoch = map_ct_epoch(&idx);

    if (epoch)
        __sync_fetch_and_add(epoch, 1);
    idx = ct_share(k->endpoint, origin);

    ct_give(map_ct_count(&idx));
    if (origin == NLAB_FW_IN) {
        idx = ct_peer_bucket(k);
        ct_give(map_ct_peer_count(&idx));
    }
}

/* Only the deleter of an entry gives its shares back: a racing delete of the same key fails. */
static __always_inline void ct_delete(struct nlab_ct_key *k, __u8 origin)
{
    if (map_ct_delete(k) == 0)
        ct_release(k, origin);
}

/* The live entry of flow `f` (the packet's, or the one an ICMP error quotes), or NULL; *reply
 * says whether the packet goes against the flow's origin. An expired entry is deleted here
 * (user space sweeps the rest). */
static __always_inline struct nlab_ct_entry *ct_find(const struct fw_ctx *c, const struct flow *f,
                                                     struct nlab_ct_key *key, int *reply)
{
    for (int r = 0; r < 2; r++) {
        ct_key_of(f, c->endpoint, r, key);
        struct nlab_ct_entry *e = map_ct(key);
        if (!e || !ct_role_fits(f, r))
            continue;
        /* signed: another CPU may have refreshed last_seen after `now` was read */
        if ((__s64)(c->now - e->last_seen) > (__s64)ct_timeout(c->cfg, key, e->state)) {
            ct_delete(key, e->origin);
            return NULL;
        }
        *reply = r;
        return e;
    }
    return NULL;
}

/* Only a clean SYN may open a TCP connection; a lone ACK, FIN or RST (or a SYN with them)
 * creates no state (scans, ACK tunnelling, injected resets). Nor does an ICMP reply: as the
 * origin of a flow it would let the requests it "answers" pass as replies, past the policy
 * of their own direction (a tunnel out through an inbound ICMP rule). */
static __always_inline int ct_may_open(const struct flow *f)
{
    if (is_icmp(f->family, f->proto))
        return icmp_request_of(f) == f->icmp_type;
    if (f->proto != NLAB_IPPROTO_TCP)
        return 1;
    return (f->tcp_flags & (NLAB_TCP_SYN | NLAB_TCP_ACK | NLAB_TCP_FIN | NLAB_TCP_RST)) == NLAB_TCP_SYN;
}

static __always_inline void ct_update(const struct fw_ctx *c, struct nlab_ct_entry *e, int reply)
{
    const struct flow *f = c->f;

    /* written once per tick, not per packet: both directions of a flow run on different CPUs,
     * and a store on every packet would bounce the entry's cache line between them */
    if (e->last_seen != c->now)
        e->last_seen = c->now;
    if (f->proto == NLAB_IPPROTO_TCP) {
        if (f->tcp_flags & (NLAB_TCP_RST | NLAB_TCP_FIN))
            e->state = NLAB_CT_CLOSING;
        else if (reply && e->state == NLAB_CT_NEW && (f->tcp_flags & NLAB_TCP_ACK))
            e->state = NLAB_CT_ESTABLISHED;
    } else if (reply) {
        e->state = NLAB_CT_ESTABLISHED;
    }
}

/* Insert a new flow; a negative reason if not. Every entry counts against one of two shares of
 * its endpoint: flows the VM opened (quota) or flows opened towards it (inbound quota), and an
 * inbound one also against its peer's bucket (peer quota), so that one client cannot use up a
 * server's inbound share. Counting both directions against one share would let any client use up
 * a server's whole share, its own outbound flows included; counting only outbound ones let any
 * peer fill the host's table through a VM. Every share is taken before the insert and given back
 * if anything after it fails: counts equal the entries whenever no insert is under way. */
static __always_inline int ct_create(const struct fw_ctx *c, struct nlab_ct_key *key)
{
    __u32 idx = ct_share(key->endpoint, c->dir);
    __u32 *count = map_ct_count(&idx);
    __u32 *peer = NULL;
    struct nlab_ct_entry e = {
        .last_seen = c->now, .rule = c->rule, .generation = c->cfg->generation,
        .state = NLAB_CT_NEW, .origin = c->dir,
    };

    if (!count)
        return -NLAB_DROP_CT_QUOTA;
    if (c->dir == NLAB_FW_IN) {
        __u32 bucket = ct_peer_bucket(key);
        peer = map_ct_peer_count(&bucket);
        if (!peer || !ct_take(peer, c->cfg->ct_quota_peer))
            return -NLAB_DROP_CT_QUOTA;
    }
    if (!ct_take(count, c->dir == NLAB_FW_OUT ? c->cfg->ct_quota : c->cfg->ct_quota_in)) {
        ct_give(peer);
        return -NLAB_DROP_CT_QUOTA;
    }
    if (map_ct_insert(key, &e) < 0) {  /* BPF_NOEXIST */
        ct_give(count);
        ct_give(peer);
        return -NLAB_DROP_CT_FULL;  /* E2BIG (full) or a racing twin: fail closed either way */
    }
    return 0;
}

#endif
