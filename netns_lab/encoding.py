"""How every command writes the things several of them show: rules, directions, NICs, ICMP
fields and the class of a drop. One function each, so that `status`, `fw`, `mirror`, `watch`,
`fw events` and `trace` cannot drift apart; docs/cli.md describes the encoding for users.

- **rule**: the id of the rule that decided (an integer), ``"default"`` when the default policy
  decided (a NIC with rules denies, one without allows), ``null`` when no rule was involved
  (port security, connection tracking, VLAN checks). In text: ``rule 30``, ``default policy``.
- **direction**: ``out`` / ``in`` are always seen from the device at the far end of a port: for a
  VM port, ``out`` is what the VM sent and ``in`` what goes to it, as in firewall rules. A
  switch port's ingress hook sees its peer's ``out``.
- **NIC**: a VM NIC is ``VM.ethN`` (key ``nic``); the vSwitch port behind it (``VM-N``) appears
  only under the key ``port``, where the port itself matters.
- **ICMP**: ``sport`` and ``dport`` are null for ICMP; ``icmp_type`` and ``icmp_id`` (the
  identifier of a query) carry what it has, and are null for other protocols.
- **drop class**: ``expected`` for what a switch filters in normal operation (flooded frames of
  other VLANs, broadcasts towards an analyzer), ``violation`` for everything a sender should not
  have sent (attacks, policy denials, frames no port carries).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from dataplane.abi import Reason

DEFAULT_RULE = "default"
RuleField = int | Literal["default"] | None
ICMP_PROTOS = ("icmp", "icmpv6")
_VM_PORT = re.compile(r"(?P<vm>[a-z][a-z0-9]*)-(?P<index>[0-9]+)")

# Reasons that are routine filtering when the frame goes towards the peer (the switch floods a
# broadcast, or a unicast frame for a MAC it has not learned, to every port and the port keeps
# what its peer must not see). Any reason in the other direction, and every other reason, is
# something a sender should not have sent.
_EXPECTED_TOWARDS_PEER = frozenset(
    {Reason.VLAN_MISMATCH, Reason.VLAN_NOT_ALLOWED, Reason.UNTAGGED, Reason.ANALYZER_RX, Reason.DST_MAC}
)
# A standby team member and an injected fault drop by design, both ways: nobody sent wrong.
_EXPECTED_BOTH_WAYS = frozenset(
    {Reason.TEAM_STANDBY_RX, Reason.TEAM_STANDBY_TX, Reason.FAULT_SILENT, Reason.FAULT_LOSS}
)


# -- rules ---------------------------------------------------------------------------------------
def rule_field(rule: int | None, *, by_policy: bool = True) -> RuleField:
    """The ``rule`` of a document from a kernel rule id (0: no rule matched).

    ``by_policy`` says whether the policy was consulted at all: a port-security or conntrack
    verdict also carries rule 0, and no rule (not the default) decided it.
    """
    if rule:
        return int(rule)
    return DEFAULT_RULE if by_policy else None


def rule_text(rule: RuleField) -> str:
    """``rule 30``, ``default policy``, or ``-``."""
    if rule is None:
        return "-"
    return "default policy" if rule == DEFAULT_RULE else f"rule {rule}"


# -- directions ----------------------------------------------------------------------------------
def direction_of_hook(hook: str) -> Literal["in", "out"]:
    """The direction of a frame at a port's ``ingress`` or ``egress`` hook, seen from its peer."""
    if hook not in ("ingress", "egress"):
        raise ValueError(f"not a TC hook: {hook!r}")
    return "out" if hook == "ingress" else "in"


# -- NICs ----------------------------------------------------------------------------------------
def nic_name(vm: str, index: int) -> str:
    """``web1.eth0``."""
    return f"{vm}.eth{index}"


def nic_of_port(port: str) -> str | None:
    """The VM NIC behind a vSwitch port (``app1-1`` -> ``app1.eth1``), None for other ports."""
    match = _VM_PORT.fullmatch(port)
    return nic_name(match["vm"], int(match["index"])) if match else None


# -- flows ---------------------------------------------------------------------------------------
def flow_fields(
    proto: str, sport: int | None, dport: int | None, icmp_type: int | None = None, icmp_id: int | None = None
) -> dict[str, int | None]:
    """``sport, dport, icmp_type, icmp_id`` of a flow: ports for TCP/UDP, the ICMP pair for ICMP."""
    if proto in ICMP_PROTOS:
        return {"sport": None, "dport": None, "icmp_type": icmp_type, "icmp_id": icmp_id}
    return {"sport": sport, "dport": dport, "icmp_type": None, "icmp_id": None}


def flow_text(doc: dict[str, Any]) -> str:
    """``10.0.0.1:1234 -> 10.0.0.2:80``, or ``10.0.0.1 -> 10.0.0.2 icmp type 8 id 77``."""

    def side(addr: Any, port: Any) -> str:
        if addr is None:
            return "-"
        if port is None:
            return str(addr)
        return f"[{addr}]:{port}" if ":" in str(addr) else f"{addr}:{port}"

    text = f"{side(doc.get('src'), doc.get('sport'))} -> {side(doc.get('dst'), doc.get('dport'))}"
    icmp = [f"{k} {doc[f'icmp_{k}']}" for k in ("type", "id") if doc.get(f"icmp_{k}") is not None]
    return text + (" " + " ".join(icmp) if icmp else "")


# -- drops ---------------------------------------------------------------------------------------
def drop_class(reason: Reason, direction: str) -> Literal["expected", "violation"]:
    """``expected`` filtering or a ``violation``, for a drop seen in ``direction`` (from the peer)."""
    if reason in _EXPECTED_BOTH_WAYS or (direction == "in" and reason in _EXPECTED_TOWARDS_PEER):
        return "expected"
    return "violation"
