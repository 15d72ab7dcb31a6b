"""The real firewall program against the reference evaluator (hypothesis): random small policies
and random new flows, through BPF_PROG_TEST_RUN, must get exactly `fwpolicy.evaluate`'s verdict.

    random Policy ──fwpolicy.compile──> Firewall.install ──> port_from_vm / port_to_vm (vNIC, port 1)
         └──────────────fwpolicy.evaluate (a linear scan: the specification)──────────────┘

A new flow is a TCP SYN, a UDP datagram, an ICMP echo request or another ICMP message that is
neither an error nor a reply, or another IP protocol, over IPv4 or IPv6, either way. ICMP numbers
are sometimes crossed with the family (protocol 58 in IPv4, 1 in IPv6): no ICMP to any receiver,
so the program must judge those as another protocol (only rules for any protocol match them).
Port security is off (the vNIC's own address does not matter) and the connection table is
emptied before every packet, so each one is a new flow.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet, Raw

from dataplane.abi import Reason, Verdict
from dataplane.fwpolicy import Cidr, Endpoint, Policy, Rule, evaluate
from tests.bpf.fwtools import COUNTED, IN, OUT, Harness, Vnic, forget, harness_on
from tests.fwgen import HOSTS, ICMP_TYPES, OTHER_IPS, PORTS, peer_address, policies

if TYPE_CHECKING:
    from dataplane.switch import SwitchDataplane

UNKNOWN_ENDPOINT = 7
VM = {4: "10.9.9.9", 6: "2001:db8:9::9"}

# ICMP messages that are no new flow: errors (judged by the flow they quote), replies,
# and IPv6 neighbour discovery / MLD (the link layer of IPv6, passed like ARP)
NOT_NEW = {1: {0, 3, 4, 5, 11, 12, 14, 16, 18}, 58: {1, 2, 3, 4, 129}}
LINK6 = {130, 131, 132, 133, 134, 135, 136, 143}
IPV6_EXT = {0, 43, 44, 51, 60}  # walked by the parser (tests/bpf/pktref.py), never a protocol of their own
OTHER_PROTOS = [4, 41, 47, 50, 51, 89, 103, 132, 255]


@dataclass(frozen=True)
class NewFlow:
    direction: str
    peer: str
    proto: int  # IP protocol number
    port: int  # what the policy matches: destination port, ICMP type, or 0

    @property
    def family(self) -> int:
        return ip_address(self.peer).version

    def packet(self) -> Packet:
        vm = VM[self.family]
        src, dst = (vm, self.peer) if self.direction == OUT else (self.peer, vm)
        head = (
            IPv6(src=src, dst=dst, nh=self.proto)
            if self.family == 6
            else IP(src=src, dst=dst, proto=self.proto)
        )
        if self.proto == 6:
            return head / TCP(sport=40000, dport=self.port, flags="S")
        if self.proto == 17:
            return head / UDP(sport=40000, dport=self.port) / Raw(b"x" * 8)
        if self.proto in (1, 58):
            return head / Raw(bytes([self.port, 0, 0, 0, 0x12, 0x34, 0, 1]) + b"ping")
        return head / Raw(b"data")


def _icmp_type(proto: int, family: int, rnd: random.Random, near: list[int]) -> int | None:
    kind = rnd.choice(near + ICMP_TYPES) if rnd.random() < 0.8 else rnd.randrange(256)
    skip = NOT_NEW[proto] | (LINK6 if (proto, family) == (58, 6) else set())
    return None if kind in skip else kind


def new_flows(policy: Policy, rnd: random.Random, count: int) -> Iterator[NewFlow]:
    """Half aimed at a rule (its direction, protocol, a peer it matches, a port at or next to
    its range's ends), half from the pools."""
    made = 0
    while made < count:
        direction = rnd.choice([IN, OUT])
        peer = (
            rnd.choice(HOSTS + OTHER_IPS)
            if rnd.random() < 0.8
            else str(
                ip_address(rnd.getrandbits(32)) if rnd.random() < 0.5 else ip_address(rnd.getrandbits(128))
            )
        )
        proto = rnd.choice([6, 17, 1, 58, 0])
        near: list[int] = []
        if policy.rules and rnd.random() < 0.5:
            rule = rnd.choice(policy.rules)
            direction, peer = rule.direction, peer_address(policy, rule.peer, rnd)
            proto = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}.get(rule.proto, proto)
            if rule.ports:
                near = [p for p in (rule.ports[0] - 1, *rule.ports, rule.ports[1] + 1) if 0 <= p <= 0xFFFF]
        family = ip_address(peer).version
        if proto in (1, 58) and rnd.random() < 0.8:  # mostly the family's own ICMP
            proto = 1 if family == 4 else 58
        if proto == 0:
            proto = rnd.choice([p for p in OTHER_PROTOS if family == 4 or p not in IPV6_EXT])
            port = 0
        elif proto in (6, 17):
            port = rnd.choice(near + PORTS) if rnd.random() < 0.8 else rnd.randrange(65536)
        else:
            port = _icmp_type(proto, family, rnd, [p for p in near if p < 256])
            if port is None:
                continue
        made += 1
        yield NewFlow(direction, peer, proto, port)


@pytest.fixture(scope="module")
def harness(dataplane: SwitchDataplane) -> Iterator[Harness]:
    with harness_on(dataplane) as h:
        h.start(Policy(), Vnic(port_security=False))
        yield h


PACKETS_PER_POLICY = 30


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_new_flows_get_the_evaluators_verdict(harness: Harness, data: st.DataObject) -> None:
    policy = data.draw(policies(), label="policy")
    endpoint = data.draw(
        st.sampled_from([ep.id for ep in policy.endpoints] + [UNKNOWN_ENDPOINT]), label="vnic"
    )
    harness.install(policy)  # beside the previous example's policy, then flipped
    Vnic(endpoint=endpoint, port_security=False, addresses=()).apply(harness.fw)
    rnd = data.draw(st.randoms(use_true_random=False))

    for flow in new_flows(policy, rnd, PACKETS_PER_POLICY):
        expected = evaluate(policy, endpoint, flow.direction, flow.peer, flow.proto, flow.port)
        forget(harness.dp, endpoint)
        sent = harness.send(flow.direction, flow.packet())

        reason = Reason.PASS if expected.allowed else Reason.POLICY
        wire = len(sent.wire)
        assert sent.result.passed == expected.allowed, (flow, expected)
        assert sent.counted == {(COUNTED[flow.direction], reason): (1, wire)}, (flow, expected)
        [event] = sent.events
        verdict = Verdict.ALLOW if expected.allowed else Verdict.DENY
        assert (event.verdict, event.reason, event.rule, event.proto) == (
            verdict,
            reason,
            expected.rule_id or 0,
            flow.proto,
        ), (flow, expected)
        assert sent.hits == {expected.rule_id or 0: 1}, (flow, expected)


def test_generator_reaches_every_kind() -> None:
    """The packets cover both families, directions, every protocol kind and crossed ICMP."""
    policy = Policy(
        (Endpoint(1, ("10.1.2.3",), {"web"}),), (Rule(1, {1}, IN, Cidr("10.1.2.0/24"), "tcp", (80, 80)),)
    )
    flows = list(new_flows(policy, random.Random(4), 3000))
    kinds = {(f.family, f.direction, f.proto if f.proto in (1, 6, 17, 58) else 0) for f in flows}
    assert kinds == {(fam, d, p) for fam in (4, 6) for d in (IN, OUT) for p in (0, 1, 6, 17, 58)}
    assert any(ip_address(f.peer) in ip_network("10.1.2.0/24") and f.port in (79, 80, 81) for f in flows)
