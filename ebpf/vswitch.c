/* The switch-port dataplane of a vSwitch (in a hypervisor namespace) or of a physical switch:
 * VLAN access and trunk ports, with every verdict counted per port, direction and reason.
 * Loaded once per switching namespace by dataplane/bpf.py; ports are configured in `ports`.
 *
 * Compile-time settings: -DNLAB_MAX_IFINDEX=N (capacity of the port and counter arrays). */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "abi.h"
#include "parsing.h"
#include "vlan.h"

/* Port configuration by ifindex. An array: the lookup is inlined by the JIT, and a lab
 * namespace numbers its interfaces from 1, so ifindex fits as an index. Written by user space
 * only; an all-zero entry (mode UNCONFIGURED) drops everything: a port fails closed. */
BPF_ARRAY(ports, struct nlab_port, NLAB_MAX_IFINDEX);

/* Verdict counters, index ((ifindex * NLAB_NR_DIRS) + dir) * NLAB_NR_REASONS + reason.
 * Per-CPU so that counting needs no atomic operation; user space sums the CPUs. */
BPF_PERCPU_ARRAY(counters, struct nlab_counter, NLAB_MAX_IFINDEX * NLAB_NR_DIRS * NLAB_NR_REASONS);

/* The one exit of every program: count the verdict, turn a negative reason into a drop. */
static __always_inline int verdict(struct __sk_buff *skb, __u32 len, int dir, int rc)
{
    __u32 reason = rc < 0 ? -rc : NLAB_PASS;
    __u32 ifindex = skb->ifindex < NLAB_MAX_IFINDEX ? skb->ifindex : 0;
    __u32 idx = (ifindex * NLAB_NR_DIRS + dir) * NLAB_NR_REASONS + (reason & (NLAB_NR_REASONS - 1));
    struct nlab_counter *c = counters.lookup(&idx);

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
    __u32 ifindex = skb->ifindex;

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

/* attach: TC ingress of every switch port (frames from the port's device into the switch) */
int vlan_from_port(struct __sk_buff *skb)
{
    __u32 len = skb->len;

    return verdict(skb, len, NLAB_DIR_INGRESS, classify(skb, NLAB_DIR_INGRESS));
}

/* attach: TC egress of every switch port (frames from the switch out to the port's device) */
int vlan_to_port(struct __sk_buff *skb)
{
    __u32 len = skb->len;

    return verdict(skb, len, NLAB_DIR_EGRESS, classify(skb, NLAB_DIR_EGRESS));
}

/* The floor of benchmarks: an empty TC program, loaded from the same object. */
int nlab_empty(struct __sk_buff *skb)
{
    return TC_ACT_OK;
}
