/* Port mirroring (NIST 5, VM-TM-R1..R3): copies of a VM port's frames to an analyzer port.
 *
 * The entry program of a VM port reads the port's mirror entry once (`mirror_enter`): an
 * unmirrored port pays that one array lookup and nothing else. The taps (`mirror_tap`) sit
 * before and after the firewall in both directions, and test a bit the entry step left in
 * skb->cb. A copy is a clone (`bpf_clone_redirect`) sent to the egress of the destination port,
 * marked in skb->mark so that the destination's own egress program delivers it untouched; the
 * original frame is never modified. A truncated copy (snaplen) first goes through the host's
 * mirror port, a veth pair whose far end (`mirror_port_rx`) cuts it and sends it on.
 *
 * Tag policy: VM ports are access or untagged ports, and every tap sits where the frame is
 * untagged (before the access VLAN is pushed, after it is popped), so a copy is byte for byte
 * the frame the VM sent or received, without an 802.1Q tag. */
#ifndef NLAB_MIRROR_H
#define NLAB_MIRROR_H

#include "abi/mirror.h"
#include "abi/port.h"
#include "abi/reasons.h"
#include "parsing.h"
#include "prof.h"

/* First step of a VM port's entry program, in direction `dir` (seen from the switch).
 * 0: go on with the normal checks; NLAB_MIRROR_DELIVER: a copy for this port, deliver it;
 * negative: a drop reason (an analyzer port is receive-only and receives copies only). */
static __always_inline int mirror_enter(struct __sk_buff *skb, int dir)
{
    if (PROF_SKIP(NLAB_PROF_MIRROR))
        return 0;
    ctx_opaque(skb);  /* the reads below too, not only ifindex */
    __u32 ifindex = skb->ifindex;
    const struct nlab_mirror_port *mp = ifindex < NLAB_MAX_IFINDEX ? map_mirror_port(&ifindex) : NULL;
    __u8 flags = mp ? mp->flags : 0;

    skb->cb[NLAB_CB_MIRROR] = mp ? mp->taps : 0;
    /* the mark stays: a capture on this port (it sees the frame after TC egress) reads the
     * session and direction from it; crossing the veth into the VM's namespace scrubs it */
    if (dir == NLAB_DIR_EGRESS && (skb->mark & NLAB_MIRROR_MARK_MASK) == NLAB_MIRROR_MARK)
        return NLAB_MIRROR_DELIVER;
    if (flags & NLAB_MIRROR_PORT_ANALYZER)
        return dir == NLAB_DIR_INGRESS ? -NLAB_DROP_ANALYZER_TX : -NLAB_DROP_ANALYZER_RX;
    return 0;
}

struct mirror_ctx {
    struct __sk_buff *skb;
    const struct nlab_mirror_session *s;
    __u32 id;
    __u32 tap;
};

/* Did the frame enter the switch through a port that session `id` taps? */
static __always_inline int mirror_entered_by_source(struct __sk_buff *skb, __u32 id)
{
    __u32 ifindex = skb->ingress_ifindex;
    const struct nlab_mirror_port *mp = ifindex < NLAB_MAX_IFINDEX ? map_mirror_port(&ifindex) : NULL;

    if (!mp)
        return 0;
/* a bounded loop, not unrolled: inlined at four taps, unrolling it made the compile much slower */
#pragma clang loop unroll(disable)
    for (int i = 0; i < NLAB_MIRROR_PER_PORT; i++)
        if (i < mp->nr && mp->session[i] == id)
            return 1;
    return 0;
}

/* A promiscuous NIC sees each frame of its port group once, as a port of a bridge would: not
 * those it gets anyway (to itself, broadcast, multicast), not its own, and a frame between two
 * members only where it leaves the first (not again where it enters the second). */
static __always_inline int mirror_promisc_wants(struct mirror_ctx *c)
{
    struct ethhdr *eth = eth_header(c->skb);

    if (!eth || (eth->h_dest[0] & 1) || mac_equal(eth->h_dest, c->s->dest_mac) ||
        mac_equal(eth->h_source, c->s->dest_mac))
        return 0;
    if (c->tap & (NLAB_TAP_IN_BEFORE | NLAB_TAP_IN_AFTER))
        return !mirror_entered_by_source(c->skb, c->id);
    return 1;
}

/* Should session `c->s` copy this frame at this tap? Counts what sampling leaves out. */
static __always_inline int mirror_wants(struct mirror_ctx *c, struct nlab_mirror_stats *st)
{
    if (!(c->s->taps & c->tap))
        return 0;
    if ((c->s->flags & NLAB_MIRROR_F_PROMISC) && !mirror_promisc_wants(c))
        return 0;
    if (c->s->sample > 1 && bpf_get_prandom_u32() % c->s->sample) {
        if (st)
            st->skipped++;
        return 0;
    }
    return 1;
}

/* Send one copy of the frame for session `c->s`; the original is left as it was. */
static __always_inline void mirror_copy(struct mirror_ctx *c)
{
    struct nlab_mirror_stats *st = map_mirror_stats(&c->id);
    __u32 len = c->skb->len;
    __u32 mark = c->skb->mark;

    if (!mirror_wants(c, st))
        return;
    __u32 dir = c->tap & (NLAB_TAP_OUT_BEFORE | NLAB_TAP_OUT_AFTER) ? NLAB_MIRROR_DIR_OUT : NLAB_MIRROR_DIR_IN;
    c->skb->mark = NLAB_MIRROR_MARK | dir << 8 | c->id;
    long err = bpf_clone_redirect(c->skb, c->s->ifindex, 0);
    c->skb->mark = mark;
    if (!st)
        return;
    if (err) {
        st->dropped++;
        return;
    }
    st->packets++;
    st->bytes += c->s->snaplen && len > c->s->snaplen ? c->s->snaplen : len;
}

/* A tap point: copies for every session of this port that taps here. Packet pointers are
 * invalid afterwards (bpf_clone_redirect may move data): callers reload them. */
static __always_inline void mirror_tap(struct __sk_buff *skb, __u32 tap)
{
    if (PROF_SKIP(NLAB_PROF_MIRROR))
        return;
    if (!(skb->cb[NLAB_CB_MIRROR] & tap))
        return;
    ctx_opaque(skb);  /* see mirror_enter */
    __u32 ifindex = skb->ifindex;
    const struct nlab_mirror_port *mp = ifindex < NLAB_MAX_IFINDEX ? map_mirror_port(&ifindex) : NULL;
    if (!mp)
        return;
    struct mirror_ctx c = {.skb = skb, .tap = tap};
/* a bounded loop, not unrolled: inlined at four taps, unrolling it made the compile much slower */
#pragma clang loop unroll(disable)
    for (int i = 0; i < NLAB_MIRROR_PER_PORT; i++) {
        if (i >= mp->nr)
            break;
        c.id = mp->session[i];
        c.s = c.id < NLAB_MAX_MIRRORS ? map_mirror_session(&c.id) : NULL;
        if (c.s && c.s->ifindex)
            mirror_copy(&c);
    }
}

/* Wrap a copy in the mirror encapsulation (see abi/mirror.h) and tag it with the mirror VLAN.
 * Packet pointers are invalid afterwards. */
static __always_inline int mirror_encapsulate(struct __sk_buff *skb, const struct nlab_mirror_session *s,
                                              __u32 mark, __u32 orig_len)
{
    struct nlab_mirror_trailer tr = {
        .version = NLAB_MIRROR_VERSION,
        .direction = (mark >> 8) & 3,
        .session = bpf_htons(mark & 0xff),
        .orig_len = bpf_htonl(orig_len),
        .magic = bpf_htonl(NLAB_MIRROR_MAGIC),
    };
    __be16 proto = bpf_htons(NLAB_MIRROR_ETHERTYPE);
    __u32 len = skb->len;

    if (len < 14 || len > 0xffff || bpf_skb_load_bytes(skb, 0, tr.inner, 14))
        return -1;
    if (bpf_skb_change_tail(skb, len + sizeof(tr), 0))
        return -1;
    if (bpf_skb_store_bytes(skb, len, &tr, sizeof(tr), 0) ||
        bpf_skb_store_bytes(skb, 0, (void *)s->outer_dst, 6, 0) ||
        bpf_skb_store_bytes(skb, 6, (void *)s->outer_src, 6, 0) ||
        bpf_skb_store_bytes(skb, 12, &proto, 2, 0))
        return -1;
    return bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), s->vlan) ? -1 : 0;
}

/* The far end of the host's mirror port: a copy to truncate and send to its destination port,
 * or to encapsulate and send out of a pNIC. */
static __always_inline int mirror_port_forward(struct __sk_buff *skb)
{
    __u32 mark = skb->mark;

    if ((mark & NLAB_MIRROR_MARK_MASK) != NLAB_MIRROR_MARK)
        return TC_ACT_SHOT;
    __u32 id = mark & 0xff;
    const struct nlab_mirror_session *s = id < NLAB_MAX_MIRRORS ? map_mirror_session(&id) : NULL;
    if (!s || !s->dest)
        return TC_ACT_SHOT;
    __u32 len = skb->len;
    int failed = s->snaplen && len > s->snaplen && bpf_skb_change_tail(skb, s->snaplen, 0);
    if (!failed && (s->flags & NLAB_MIRROR_F_ENCAP))
        failed = mirror_encapsulate(skb, s, mark, len) < 0;
    if (failed) {
        struct nlab_mirror_stats *st = map_mirror_stats(&id);
        if (st)
            st->dropped++;
        return TC_ACT_SHOT;
    }
    return bpf_redirect(s->dest, 0);
}

/* Is this frame, arrived on an uplink of a hypervisor, in the mirror encapsulation? */
static __always_inline int mirror_encapsulated(struct __sk_buff *skb)
{
    struct ethhdr *eth = eth_header(skb);

    return eth && skb->vlan_present && eth->h_proto == bpf_htons(NLAB_MIRROR_ETHERTYPE);
}

/* A frame of EtherType 0x88B5 arrived on an uplink. A copy of a session of this host's in its
 * mirror VLAN: restored byte for byte and delivered to the analyzer's port, or dropped when it is
 * for another host (the mirror VLAN floods). Anything else (0x88B5 is anyone's experimental
 * EtherType) goes on as an ordinary frame: TC_ACT_OK. */
static __always_inline int mirror_receive(struct __sk_buff *skb)
{
    struct nlab_mirror_trailer tr;
    __u32 len = skb->len;

    if (len < 14 + sizeof(tr) || len > 0xffff || bpf_skb_load_bytes(skb, len - sizeof(tr), &tr, sizeof(tr)))
        return TC_ACT_OK;
    __u32 id = bpf_ntohs(tr.session);
    const struct nlab_mirror_session *s = id < NLAB_MAX_MIRRORS ? map_mirror_session(&id) : NULL;
    struct ethhdr *eth = eth_header(skb);
    if (!s || !eth || !(s->flags & (NLAB_MIRROR_F_RX | NLAB_MIRROR_F_ENCAP)) || !s->vlan ||
        tr.magic != bpf_htonl(NLAB_MIRROR_MAGIC) || (skb->vlan_tci & 0x0fff) != s->vlan)
        return TC_ACT_OK;
    if (!(s->flags & NLAB_MIRROR_F_RX) || !mac_equal(eth->h_dest, s->outer_dst))
        return TC_ACT_SHOT;
    struct nlab_mirror_stats *st = map_mirror_stats(&id);
    if (bpf_skb_vlan_pop(skb) || bpf_skb_store_bytes(skb, 0, tr.inner, 14, 0) ||
        bpf_skb_change_tail(skb, len - sizeof(tr), 0)) {
        if (st)
            st->dropped++;
        return TC_ACT_SHOT;
    }
    skb->mark = NLAB_MIRROR_MARK | (tr.direction & 3) << 8 | id;
    return bpf_redirect(s->dest, 0);
}

#endif
