"""Drop reasons (ebpf/include/abi/reasons.h): stable numbers, never reused, a range per feature."""

from __future__ import annotations

import enum

NR_REASONS = 64

# first number of each feature's reserved range (NLAB_REASONS_*); see reasons.h for the plan
REASONS_SWITCH = 32
REASONS_PORTSEC = 36
REASONS_FIREWALL = 40
REASONS_MIRROR = 48
REASONS_OVERLAY = 52
REASONS_TEAM = 58
REASONS_FREE = 62


class Reason(enum.IntEnum):
    PASS = 0
    NO_PORT = 1
    MALFORMED = 2
    TAGGED_ON_ACCESS = 3
    QINQ = 4
    CONTROL_FRAME = 5
    VLAN_MISMATCH = 6
    VLAN_NOT_ALLOWED = 7
    UNTAGGED = 8
    VLAN_HELPER = 9
    SPOOF_MAC = 10
    SPOOF_IP = 11
    SPOOF_ARP = 12
    DHCP_SERVER = 13
    ROUTER_ADVERT = 14
    POLICY = 15
    CT_INVALID = 16
    CT_FULL = 17
    CT_QUOTA = 18
    ICMP_UNRELATED = 19
    FRAG_TINY = 20
    FRAG_ORPHAN = 21
    FRAG_OVERLAP = 22
    FRAG_DUP = 23
    L3_MALFORMED = 24
    UNSUPPORTED = 25
    ANALYZER_TX = 26
    ANALYZER_RX = 27
    IPV6_CHAIN = 28
    SPOOF_ND = 29
    DST_MAC = 30
    FRAG_REORDERED = 31
    # overlay (REASONS_OVERLAY)
    VXLAN_UNKNOWN_VTEP = 52
    VXLAN_UNKNOWN_VNI = 53
    VXLAN_MALFORMED = 54
    VXLAN_FRAGMENT = 55
    TEAM_STANDBY_RX = 58
    TEAM_STANDBY_TX = 59
    FAULT_SILENT = 60
    FAULT_LOSS = 61

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


REASON_TEXT = {
    Reason.PASS: "passed",
    Reason.NO_PORT: "port not configured (fail closed)",
    Reason.MALFORMED: "frame too short for its headers",
    Reason.TAGGED_ON_ACCESS: "802.1Q-tagged frame on an access port, from a guarded vNIC, on a VTEP underlay",
    Reason.QINQ: "802.1ad or double-tagged frame",
    Reason.CONTROL_FRAME: "switch-control frame (STP/LLDP/CDP/DTP) from an edge port",
    Reason.VLAN_MISMATCH: "frame of another VLAN towards an access port",
    Reason.VLAN_NOT_ALLOWED: "VLAN not allowed on the trunk",
    Reason.UNTAGGED: "untagged frame on a port that carries none",
    Reason.VLAN_HELPER: "VLAN push/pop helper failed",
    Reason.SPOOF_MAC: "source MAC is not the vNIC's (forged transmit)",
    Reason.SPOOF_IP: "source address is not one of the vNIC's",
    Reason.SPOOF_ARP: "ARP for an address that is not the vNIC's",
    Reason.DHCP_SERVER: "DHCP or DHCPv6 server message from a VM that is no DHCP server",
    Reason.ROUTER_ADVERT: "IPv6 router advertisement, or a redirect from a VM that does not forward",
    Reason.POLICY: "denied by the firewall policy",
    Reason.CT_INVALID: "no connection and not a valid start (lone ACK/FIN/RST, odd flags)",
    Reason.CT_FULL: "connection table full: new flow refused",
    Reason.CT_QUOTA: "the VM's connection quota is used up",
    Reason.ICMP_UNRELATED: "ICMP error about no tracked flow",
    Reason.FRAG_TINY: "first fragment too short for its transport header",
    Reason.FRAG_ORPHAN: "fragment without a first fragment",
    Reason.FRAG_OVERLAP: "overlapping fragment",
    Reason.FRAG_DUP: "duplicate first fragment",
    Reason.L3_MALFORMED: "malformed IP header",
    Reason.UNSUPPORTED: "protocol the firewall does not pass (not IP or ARP)",
    Reason.ANALYZER_TX: "sent by a receive-only analyzer port",
    Reason.ANALYZER_RX: "towards an analyzer port but not a mirror copy",
    Reason.IPV6_CHAIN: "IPv6 extension-header chain too long, out of order, cut or not walkable",
    Reason.SPOOF_ND: "neighbour discovery for an address or MAC that is not the vNIC's",
    Reason.DST_MAC: "unicast frame for another MAC (flooded)",
    Reason.FRAG_REORDERED: "first fragment after later ones (its datagram was lost to reordering)",
    Reason.VXLAN_UNKNOWN_VTEP: "VXLAN from an underlay source that is not a registered VTEP",
    Reason.VXLAN_UNKNOWN_VNI: "VXLAN for a VNI this host does not host",
    Reason.VXLAN_MALFORMED: "VXLAN header cut, I flag clear or a reserved bit set",
    Reason.VXLAN_FRAGMENT: "outer IP fragment to this host's VTEP",
    Reason.TEAM_STANDBY_RX: "from a standby team member (not a beacon)",
    Reason.TEAM_STANDBY_TX: "towards a standby team member (not a beacon)",
    Reason.FAULT_SILENT: "injected silent fault: everything dropped, carrier up",
    Reason.FAULT_LOSS: "injected random loss",
}
