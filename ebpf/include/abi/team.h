/* NIC teaming and fault injection: team members, port faults, beacons. Mirrored in
 * dataplane/abi/team.py. */
#ifndef NLAB_ABI_TEAM_H
#define NLAB_ABI_TEAM_H

/* A team member's state (team_state, by ifindex). An all-zero entry is no member at all: the
 * port is not gated, so a switching node without teams pays one inlined lookup. */
#define NLAB_TEAM_STANDBY 0
#define NLAB_TEAM_ACTIVE  1

/* What a port is to the teams (`member`). A host uplink in no team is an edge: beacons of other
 * hosts' teams, flooded to it by the physical switch, end there (counted as beacons) instead of
 * entering its bridge and reaching VM ports as unsupported frames. A physical switch's ports stay
 * NONE: they carry beacons between the members of a team. */
#define NLAB_TEAM_NONE   0
#define NLAB_TEAM_MEMBER 1
#define NLAB_TEAM_EDGE   2

struct nlab_team_member {
    __u8 member;   /* NLAB_TEAM_MEMBER: gated by `active`; NLAB_TEAM_EDGE: ends beacons only */
    __u8 active;   /* NLAB_TEAM_ACTIVE or NLAB_TEAM_STANDBY: one byte, so one write flips it */
    __u16 _pad;
};

/* Fault modes of a port (port_faults, by ifindex; all zero: none). */
#define NLAB_FAULT_NONE   0
#define NLAB_FAULT_SILENT 1  /* every frame dropped both ways, beacons too; carrier stays up */
#define NLAB_FAULT_LOSS   2  /* each frame dropped with probability loss / 2^32, either way */

/* loss of a certain drop: loss is compared with a 32-bit random number, so 2^32 (it needs the
 * 64 bits) drops every frame and 0 none, both exactly */
#define NLAB_FAULT_LOSS_ALL 0x100000000

struct nlab_fault {
    __u64 loss;  /* NLAB_FAULT_LOSS: drop when bpf_get_prandom_u32() < loss (0..2^32) */
    __u8  mode;  /* NLAB_FAULT_* */
    __u8  _pad[7];
};

/* A beacon: an untagged frame of EtherType 0x88B5 (IEEE 802 local experimental) whose payload
 * starts with the 8 bytes "NLABTEAM" (here as the big-endian number they spell). The mirror
 * encapsulation uses the same EtherType, always tagged: a tagged 0x88B5 frame is an ordinary
 * frame, and so is an untagged one without the magic. */
#define NLAB_BEACON_ETHERTYPE 0x88B5
#define NLAB_BEACON_MAGIC     0x4e4c41425445414d  /* "NLABTEAM" */
#define NLAB_BEACON_MIN_LEN   22                  /* Ethernet header + magic */

/* Beacons seen per port and direction (team_beacons, index ifindex * NLAB_NR_DIRS + dir):
 * consumed at ingress, sent at egress. Not in the verdict counters: a beacon is the team's own
 * traffic, neither a frame of the switch nor a drop. Per-CPU, of struct nlab_counter. */

#endif
