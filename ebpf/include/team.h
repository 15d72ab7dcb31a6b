/* NIC teaming and fault injection on the ports of a switching node: the first step of the
 * uplink / switch-port entry programs, both ways, before any VLAN decision.
 *
 *   fault gate   silent: drop everything, beacons too;  loss: drop with probability P
 *   member gate  beacon: consumed at ingress (the monitor's AF_PACKET socket has seen it),
 *                        passed at egress on every member; anything else on a standby member:
 *                        dropped, so the bridge never learns or floods through it
 *   edge         a host uplink in no team: beacons end at its ingress, everything else goes on
 *
 * A port that is no team member and has no fault pays two inlined array lookups and nothing
 * else. The including file defines map_team_member, map_port_fault and map_team_beacons (bcc
 * rewrites map calls in the main source file only). */
#ifndef NLAB_TEAM_H
#define NLAB_TEAM_H

#include "abi/port.h"
#include "abi/reasons.h"
#include "abi/team.h"
#include "parsing.h"

/* What port_gate returns besides 0 (on to the VLAN policy) and a negative drop reason. */
#define NLAB_GATE_BEACON 1

/* A beacon of this lab's teams (abi/team.h). At egress only one sent by this node itself: a
 * frame the bridge forwards (from a VM, from another port) has an ingress device, and would
 * otherwise cross a standby member dressed as a beacon. */
static __always_inline int is_beacon(struct __sk_buff *skb, int dir)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    __u64 magic;

    /* the EtherType first: it turns away nearly every frame */
    if (data + NLAB_BEACON_MIN_LEN > data_end || eth->h_proto != bpf_htons(NLAB_BEACON_ETHERTYPE))
        return 0;
    if (skb->vlan_present)
        return 0;
    if (dir == NLAB_DIR_EGRESS && skb->ingress_ifindex)
        return 0;
    __builtin_memcpy(&magic, data + sizeof(*eth), sizeof(magic));
    return magic == __builtin_bswap64(NLAB_BEACON_MAGIC);
}

/* The fault and team state of the port a frame crosses in direction `dir`: 0 (go on),
 * NLAB_GATE_BEACON, or a negative drop reason. */
static __always_inline int port_gate(struct __sk_buff *skb, int dir)
{
    __u32 ifindex = skb_ifindex(skb);

    if (ifindex >= NLAB_MAX_IFINDEX)
        return 0;  /* no such port: the VLAN policy fails it closed */
    const struct nlab_fault *fault = map_port_fault(&ifindex);
    const struct nlab_team_member *m = map_team_member(&ifindex);
    if (!fault || !m)
        return 0;
    if (fault->mode == NLAB_FAULT_SILENT)
        return -NLAB_DROP_FAULT_SILENT;
    if (fault->mode == NLAB_FAULT_LOSS && (__u64)bpf_get_prandom_u32() < fault->loss)
        return -NLAB_DROP_FAULT_LOSS;
    if (m->member == NLAB_TEAM_NONE)
        return 0;
    if (is_beacon(skb, dir))
        return NLAB_GATE_BEACON;
    if (m->member == NLAB_TEAM_EDGE)
        return 0;
    if (m->active != NLAB_TEAM_ACTIVE)
        return dir == NLAB_DIR_INGRESS ? -NLAB_DROP_TEAM_STANDBY_RX : -NLAB_DROP_TEAM_STANDBY_TX;
    return 0;
}

/* A beacon's exit: counted apart from the verdicts; consumed at ingress, sent at egress. */
static __always_inline int beacon_exit(struct __sk_buff *skb, __u32 len, int dir)
{
    __u32 ifindex = skb_ifindex(skb);
    __u32 idx = (ifindex < NLAB_MAX_IFINDEX ? ifindex : 0) * NLAB_NR_DIRS + (dir & 1);
    struct nlab_counter *c = map_team_beacons(&idx);

    if (c) {
        c->packets++;
        c->bytes += len;
    }
    return dir == NLAB_DIR_INGRESS ? TC_ACT_SHOT : TC_ACT_OK;
}

#endif
