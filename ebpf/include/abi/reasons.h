/* Drop reasons: why the dataplane dropped a packet (0 counts passes). Helpers return the
 * negative value; the verdict counters are indexed by it and user space names it, so a number is
 * never reused nor renumbered: a reason that goes away leaves a hole.
 *
 * 0..31 were handed out as the features came (each is marked with its feature below). New
 * reasons take the next free number of their feature's reserved range:
 *   32..35  VLAN and switching          36..39  port security
 *   40..47  firewall (conntrack, policy, fragments)
 *   48..51  mirroring                   52..57  overlay (VXLAN, EVPN)
 *   58..61  NIC teaming                 62..63  unassigned
 * A feature whose range is full, or a new feature, raises NLAB_NR_REASONS to the next power of
 * two (the counters array grows with it: NLAB_MAX_IFINDEX * NLAB_NR_DIRS * NLAB_NR_REASONS
 * per-CPU entries) and takes a range above 63. Mirrored in dataplane/abi/reasons.py. */
#ifndef NLAB_ABI_REASONS_H
#define NLAB_ABI_REASONS_H

/* one past the highest reason; a power of two: the counter index masks the reason with it */
#define NLAB_NR_REASONS 64

#define NLAB_PASS                   0
/* VLAN and switching */
#define NLAB_DROP_NO_PORT           1  /* port not configured (fail closed) */
#define NLAB_DROP_MALFORMED         2  /* too short for its headers */
#define NLAB_DROP_TAGGED_ON_ACCESS  3  /* 802.1Q tag on an access port, from a guarded vNIC, on a VTEP's underlay */
#define NLAB_DROP_QINQ              4  /* 802.1ad or double tag: never carried */
#define NLAB_DROP_CONTROL_FRAME     5  /* STP/LLDP/CDP/DTP/VTP from an edge (guarded) port */
#define NLAB_DROP_VLAN_MISMATCH     6  /* towards an access port, not of its VLAN */
#define NLAB_DROP_VLAN_NOT_ALLOWED  7  /* tag not in the trunk's allowed list */
#define NLAB_DROP_UNTAGGED          8  /* untagged frame on a port that carries none */
#define NLAB_DROP_VLAN_HELPER       9  /* bpf_skb_vlan_push/pop failed */
/* port security (a VM sends only as itself) */
#define NLAB_DROP_SPOOF_MAC        10  /* source MAC is not the port's */
#define NLAB_DROP_SPOOF_IP         11  /* IPv4/IPv6 source is not one of the port's */
#define NLAB_DROP_SPOOF_ARP        12  /* ARP or gratuitous ARP for an address not the port's */
#define NLAB_DROP_DHCP_SERVER      13  /* DHCP server reply from a VM */
#define NLAB_DROP_ROUTER_ADVERT    14  /* IPv6 router advertisement or redirect from a VM */
/* firewall */
#define NLAB_DROP_POLICY           15  /* a rule or the default policy denies the flow */
#define NLAB_DROP_CT_INVALID       16  /* no state and not a valid start (e.g. lone ACK/FIN/RST) */
#define NLAB_DROP_CT_FULL          17  /* connection table full: new flows fail closed */
#define NLAB_DROP_CT_QUOTA         18  /* the VM's share of the connection table is used up */
#define NLAB_DROP_ICMP_UNRELATED   19  /* ICMP error about no tracked flow */
#define NLAB_DROP_FRAG_TINY        20  /* first fragment too short for its L4 header */
#define NLAB_DROP_FRAG_ORPHAN      21  /* non-first fragment with no first fragment seen */
#define NLAB_DROP_FRAG_OVERLAP     22  /* fragment overlapping one already seen */
#define NLAB_DROP_FRAG_DUP         23  /* first fragment seen twice */
#define NLAB_DROP_L3_MALFORMED     24  /* bad IP header (length, version, options) */
#define NLAB_DROP_UNSUPPORTED      25  /* an L3 protocol the firewall does not pass (not IP/ARP) */
/* port mirroring (NIST 5) */
#define NLAB_DROP_ANALYZER_TX      26  /* a frame sent by a receive-only analyzer port */
#define NLAB_DROP_ANALYZER_RX      27  /* a frame towards an analyzer port that is not a mirror copy */
/* IPv6 parsing and port security of neighbour discovery */
#define NLAB_DROP_IPV6_CHAIN       28  /* extension-header chain too long, out of order, cut or unwalkable */
#define NLAB_DROP_SPOOF_ND         29  /* neighbour solicitation/advertisement for an address or MAC not the port's */
/* port security, towards the VM */
#define NLAB_DROP_DST_MAC          30  /* unicast frame for another MAC (flooded) towards a port-secured vNIC */
/* firewall: fragments */
#define NLAB_DROP_FRAG_REORDERED   31  /* first fragment after later ones of its datagram (dropped as orphans) */
/* overlay: the underlay guard of a VTEP (VXLAN to this host) */
#define NLAB_DROP_VXLAN_UNKNOWN_VTEP 52  /* source is not a registered VTEP */
#define NLAB_DROP_VXLAN_UNKNOWN_VNI  53  /* VNI not hosted on this host (VNI 0 included) */
#define NLAB_DROP_VXLAN_MALFORMED    54  /* VXLAN header cut, I flag clear or a reserved bit set */
#define NLAB_DROP_VXLAN_FRAGMENT     55  /* an outer IP fragment to this host's VTEP */
/* NIC teaming and fault injection */
#define NLAB_DROP_TEAM_STANDBY_RX  58  /* from the device of a standby team member (not a beacon) */
#define NLAB_DROP_TEAM_STANDBY_TX  59  /* towards the device of a standby team member (not a beacon) */
#define NLAB_DROP_FAULT_SILENT     60  /* injected silent fault: the port drops everything, carrier up */
#define NLAB_DROP_FAULT_LOSS       61  /* injected random loss on the port */

/* First number of each feature's reserved range (see above). */
#define NLAB_REASONS_SWITCH   32
#define NLAB_REASONS_PORTSEC  36
#define NLAB_REASONS_FIREWALL 40
#define NLAB_REASONS_MIRROR   48
#define NLAB_REASONS_OVERLAY  52
#define NLAB_REASONS_TEAM     58
#define NLAB_REASONS_FREE     62

#endif
