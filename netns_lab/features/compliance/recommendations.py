"""The thirteen recommendations of NIST SP 800-125B, in the publication's order: the canonical
list every audit, verification and report walks. ``title`` is quoted from the publication (its
words, shortened to the clause that carries the recommendation)."""

from __future__ import annotations

from typing import NamedTuple


class Recommendation(NamedTuple):
    id: str
    area: str
    section: str
    title: str


_SEGMENTATION = "Network Segmentation"
_REDUNDANCY = "Network Path Redundancy"
_FIREWALL = "Firewall Deployment Architecture"
_MONITORING = "VM Traffic Monitoring"

RECOMMENDATIONS: tuple[Recommendation, ...] = (
    Recommendation("VM-VN-R1", _SEGMENTATION, "2.6", "port configuration should be VLAN aware"),
    Recommendation("VM-VN-R2", _SEGMENTATION, "2.6", "should deploy an overlay-based virtual networking"),
    Recommendation(
        "VM-VN-R3",
        _SEGMENTATION,
        "2.6",
        "should always include either centralized or federated SDN controllers",
    ),
    Recommendation(
        "VM-MP-R1", _REDUNDANCY, "3.3", "use physical NICs that use different drivers in the NIC team"
    ),
    Recommendation(
        "VM-MP-R2",
        _REDUNDANCY,
        "3.3",
        "each physical NIC in the NIC team should be placed on a separate PCI bus",
    ),
    Recommendation(
        "VM-MP-R3",
        _REDUNDANCY,
        "3.3",
        "members of the NIC team (i.e., the two or more physical NICs) connected to different "
        "physical switches",
    ),
    Recommendation(
        "VM-FW-R1", _FIREWALL, "4.4", "virtual firewalls instead of physical firewalls should be deployed"
    ),
    Recommendation(
        "VM-FW-R2",
        _FIREWALL,
        "4.4",
        "Kernel-based virtual firewalls should be deployed instead of Subnet-level virtual firewalls",
    ),
    Recommendation(
        "VM-FW-R3", _FIREWALL, "4.4", "the firewall integrates with a virtualization management platform"
    ),
    Recommendation(
        "VM-FW-R4",
        _FIREWALL,
        "4.4",
        "the firewall supports rules using higher-level components or abstractions (e.g., security group)",
    ),
    Recommendation(
        "VM-TM-R1",
        _MONITORING,
        "5.3",
        "Traffic Monitoring for a VM should be applied to both incoming and outgoing traffic",
    ),
    Recommendation(
        "VM-TM-R2",
        _MONITORING,
        "5.3",
        "activated only for the required VM port group and not for the entire virtual switch",
    ),
    Recommendation(
        "VM-TM-R3",
        _MONITORING,
        "5.3",
        "choices in destination ports (either the virtual port or uplink port)",
    ),
)

IDS: tuple[str, ...] = tuple(r.id for r in RECOMMENDATIONS)
BY_ID: dict[str, Recommendation] = {r.id: r for r in RECOMMENDATIONS}
