"""Decoding of firewall verdict events (`nlab fw events --json`), on records built by hand."""

from __future__ import annotations

import ctypes
from ipaddress import ip_address

from dataplane import abi
from dataplane.events import now_ns
from netns_lab.features.firewall.live import decode

FIELDS = {
    "time",
    "vm",
    "nic",
    "port",
    "direction",
    "verdict",
    "reason",
    "rule",
    "proto",
    "src",
    "dst",
    "sport",
    "dport",
    "icmp_type",
    "icmp_id",
}


def _event(**fields: object) -> abi.FwEvent:
    ev = abi.FwEvent(time_ns=now_ns())
    for name, value in fields.items():
        if name in ("saddr", "daddr"):
            ctypes.memmove(getattr(ev, name), ip_address(str(value)).packed, 4)
        else:
            setattr(ev, name, value)
    return ev


def test_new_flow_names_its_rule_and_five_tuple() -> None:
    ev = _event(
        saddr="10.20.0.11",
        daddr="10.30.0.21",
        sport=40000,
        dport=8080,
        proto=6,
        family=4,
        rule=12,
        verdict=abi.Verdict.ALLOW,
        reason=abi.Reason.PASS,
        direction=abi.FwDirection.OUT,
    )
    doc = decode(ev, "web1-0")
    assert set(doc) == FIELDS
    assert {k: doc[k] for k in FIELDS - {"time"}} == {
        "vm": "web1",
        "nic": "web1.eth0",
        "port": "web1-0",
        "direction": "out",
        "verdict": "allow",
        "reason": "new-flow",
        "rule": 12,
        "proto": "tcp",
        "src": "10.20.0.11",
        "dst": "10.30.0.21",
        "sport": 40000,
        "dport": 8080,
        "icmp_type": None,
        "icmp_id": None,
    }


def test_refusal_before_the_ip_header_has_no_addresses() -> None:
    """A forged MAC or a spoofed ARP is refused before any IP header is read: no made-up 0.0.0.0."""
    for reason, proto in ((abi.Reason.SPOOF_MAC, "ethernet"), (abi.Reason.SPOOF_ARP, "arp")):
        doc = decode(_event(family=0, verdict=abi.Verdict.DENY, reason=reason), "web2-0")
        assert (doc["verdict"], doc["rule"], doc["proto"]) == ("deny", None, proto)
        assert (doc["src"], doc["dst"], doc["sport"], doc["dport"]) == (None, None, None, None)
        assert doc["reason"] == reason.label


def test_the_default_policy_is_named_and_port_security_has_no_rule() -> None:
    """rule 0 is the default policy when the policy decided, and no rule when port security did."""
    policy = decode(_event(family=4, proto=6, verdict=abi.Verdict.DENY, reason=abi.Reason.POLICY), "db1-0")
    spoof = decode(_event(family=4, proto=6, verdict=abi.Verdict.DENY, reason=abi.Reason.SPOOF_IP), "db1-0")
    assert (policy["rule"], spoof["rule"]) == ("default", None)


def test_an_icmp_query_has_its_identifier_and_no_ports() -> None:
    ev = _event(saddr="10.20.0.11", daddr="10.20.0.12", sport=77, dport=77, proto=1, family=4, icmp_type=8)
    doc = decode(ev, "web1-0")
    assert (doc["sport"], doc["dport"], doc["icmp_id"], doc["icmp_type"]) == (None, None, 77, 8)
