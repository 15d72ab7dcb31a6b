"""labs/overlay.yaml built by `nlab up` in its two other modes: flood (head-end replication
written once at build, MACs learned from traffic, no controller) and evpn (FRR on every VTEP and on
the spine as route reflector, the tables filled by BGP). One lab per mode, one after the other
(the module fixture is parametrized), each with a few read-only tests and its teardown last;
isolation and the overlay attacks are proved in controller mode (test_overlay_lab.py): the
dataplane is the same in every mode.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from netns_lab.features.overlay import frr, install
from netns_lab.topology import loader
from netns_lab.topology.model import Topology
from tests.lab.conftest import REPO, Lab, leftovers, nlab, running, unique_name
from tests.lab.test_overlay_lab import BLUE_WEB, RED_WEB, alive, ping

OVERLAY = REPO / "labs" / "overlay.yaml"


def variant(directory: Path, mode: str) -> Path:
    text = OVERLAY.read_text()
    assert text.count("\n  mode: controller\n") == 1, "labs/overlay.yaml changed: update the test"
    path = directory / f"overlay-{mode}.yaml"
    path.write_text(text.replace("\n  mode: controller\n", f"\n  mode: {mode}\n"))
    return path


@pytest.fixture(scope="module", params=["flood", "evpn"])
def moded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Lab, Topology]]:
    mode = request.param
    if mode == "evpn" and frr.available() is not None:
        pytest.skip(f"FRR: {frr.available()}")
    path = variant(tmp_path_factory.mktemp(mode), mode)
    with running(path) as lab:
        yield mode, lab, loader.load_text(path.read_text(), str(path), lab=lab.name)


def entries(lab: Lab, host: str, vni: int) -> list[dict]:
    proc = nlab("overlay", "show", "--lab", lab.name, "--json", check=True)
    (segment,) = [s for s in json.loads(proc.stdout)["hosts"][host] if s["vni"] == vni]
    return segment["fdb"]


def test_each_mode_reaches_across_hosts_keeps_tenants_apart_and_checks_clean(
    moded: tuple[str, Lab, Topology],
) -> None:
    mode, lab, topo = moded
    assert ping(lab, "bweb1", "10.0.0.13").returncode == 0
    assert ping(lab, "rweb1", "10.0.0.13").returncode == 0
    assert ping(lab, "bweb3", "10.0.1.21").returncode == 0
    check = nlab("overlay", "check", "--lab", lab.name, "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["clean"]
    fdb = entries(lab, "hv1", BLUE_WEB)
    replication = {e["dst"]: e["origin"] for e in fdb if e["mac"] == "00:00:00:00:00:00"}
    assert sorted(replication) == ["10.255.1.12", "10.255.2.13"]
    remote = {
        e["mac"]: (e["dst"], e["origin"])
        for e in fdb
        if e["table"] == "vxlan" and e["mac"] != "00:00:00:00:00:00"
    }
    # who put bweb3's MAC there: the vxlan device learning it (flood), BGP (evpn)
    assert remote[topo.vm("bweb3").nics[0].mac] == ("10.255.2.13", "learned" if mode == "flood" else "bgp")
    red = {e["mac"]: e["dst"] for e in entries(lab, "hv1", RED_WEB) if e["table"] == "vxlan"}
    assert topo.vm("bweb3").nics[0].mac not in red  # a blue MAC never in red's table
    assert install.controller_pid(lab.name) is None  # neither mode runs the controller


def test_evpn_sessions_run_through_the_underlay_guard(moded: tuple[str, Lab, Topology]) -> None:
    mode, lab, _ = moded
    if mode != "evpn":
        pytest.skip("evpn only")
    states = frr.sessions(frr.Node(lab.name, "spine"))["peers"]
    assert {ip: p["state"] for ip, p in states.items()} == {
        "10.255.1.11": "Established",
        "10.255.1.12": "Established",
        "10.255.2.13": "Established",
    }


def test_down_ends_every_daemon(moded: tuple[str, Lab, Topology]) -> None:
    mode, lab, _ = moded
    daemons = {n: frr.running(frr.Node(lab.name, n)) for n in ("spine", "hv1", "hv2", "hv3")}
    assert all(daemons.values()) == (mode == "evpn")
    assert lab.down().returncode == 0
    assert not leftovers(lab.name, lab.inodes)
    pids = [pid for d in daemons.values() for pid in d.values()]
    assert not [pid for pid in pids if alive(pid)]
    # FRR's crash-log directories go with a daemon that ends on SIGTERM (teardown sends it first)
    assert not [p for pid in pids for p in Path("/var/tmp/frr").glob(f"*.{pid}")]


def test_a_host_mixing_evpn_with_another_mode_is_refused_and_nothing_remains(tmp_path: Path) -> None:
    text = variant(tmp_path, "evpn").read_text()
    red = "  red-web: {vni: 20010, tenant: red}\n"
    assert text.count(red) == 1, "labs/overlay.yaml changed: update the test"
    path = tmp_path / "mixed.yaml"
    path.write_text(text.replace(red, "  red-web: {vni: 20010, tenant: red, mode: controller}\n"))
    lab = Lab(unique_name(), path)
    try:
        proc = lab.up()
        assert proc.returncode == 2
        assert proc.stderr.strip() == f"{path}: hosts.hv1: hosts evpn segments and red-web in another mode"
        assert not leftovers(lab.name, lab.inodes)
    finally:
        lab.down()
