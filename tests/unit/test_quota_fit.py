"""Connection quotas left to their defaults fit the busiest host's table; given ones are kept.

hv1: [vs1] -- vm0 .. vm{N-1}, every NIC firewalled (one rule applies to all)
"""

from __future__ import annotations

import pytest

from netns_lab.topology.errors import TopologyError
from netns_lab.topology.limits import CT_SIZE
from netns_lab.topology.loader import load_text
from netns_lab.topology.names import default_mac


def lab(vms: int, connections: str = "") -> str:
    nodes = "".join(
        f"  vm{i}:\n    host: hv1\n    nics: [{{vswitch: vs1, ip: 10.0.0.{i + 1}/24}}]\n" for i in range(vms)
    )
    settings = f"  connections: {{{connections}}}\n" if connections else ""
    return (
        "lab: q\nhosts:\n  hv1:\n    pnics: {}\n    vswitches: {vs1: {}}\n"
        f"vms:\n{nodes}"
        "security_groups:\n  all: [" + ", ".join(f"vm{i}" for i in range(vms)) + "]\n"
        "firewall:\n" + settings + "  rules:\n"
        "    - {id: 1, apply: group:all, direction: in, peer: any, proto: tcp, ports: [22], action: allow}\n"
    )


def test_few_nics_keep_the_defaults() -> None:
    fw = load_text(lab(3), "q.yaml").firewall
    assert (fw.ct_quota, fw.ct_quota_in, fw.ct_quota_peer) == (4096, 4096, 4096)


def test_defaults_shrink_to_fit_many_nics_on_one_host() -> None:
    fw = load_text(lab(20), "q.yaml").firewall
    each = CT_SIZE // 20 // 2
    assert (fw.ct_quota, fw.ct_quota_in, fw.ct_quota_peer) == (each, each, each)
    assert 20 * (fw.ct_quota + fw.ct_quota_in) <= CT_SIZE


def test_a_given_quota_is_kept_and_the_other_takes_the_rest() -> None:
    fw = load_text(lab(10, "quota: 4096"), "q.yaml").firewall
    assert (fw.ct_quota, fw.ct_quota_in, fw.ct_quota_peer) == (4096, CT_SIZE // 10 - 4096, 4096)


def test_given_quotas_that_do_not_fit_are_an_error() -> None:
    with pytest.raises(TopologyError) as err:
        load_text(lab(10, "quota: 4096, inbound_quota: 4096"), "q.yaml")
    assert "firewall.connections" in str(err.value) and "more than its table" in str(err.value)


def test_a_name_that_is_not_valid_text_still_gets_a_mac() -> None:
    assert default_mac("q", "\ud800", 0).startswith("02:")
