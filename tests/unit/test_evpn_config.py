"""BGP EVPN without root: FRR configs from plain data, routes read from bgpd's JSON, file layout."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from netns_lab.features.overlay import evpn, frr
from netns_lab.lab.state import state_dir
from netns_lab.topology import loader
from netns_lab.topology.model import Topology

RR = IPv4Address("10.255.0.254")
H1 = evpn.Vtep("h1", IPv4Address("10.255.0.11"), 65000, RR)

VTEP_BGPD = """\
frr defaults datacenter
hostname h1
log timestamp precision 3
!
router bgp 65000
 bgp router-id 10.255.0.11
 no bgp default ipv4-unicast
 neighbor 10.255.0.254 remote-as 65000
 neighbor 10.255.0.254 update-source 10.255.0.11
 neighbor 10.255.0.254 timers connect 1
 !
 address-family l2vpn evpn
  neighbor 10.255.0.254 activate
  advertise-all-vni
 exit-address-family
exit
!
"""

REFLECTOR_BGPD = """\
frr defaults datacenter
hostname spine
log timestamp precision 3
!
router bgp 65000
 bgp router-id 10.255.0.254
 no bgp default ipv4-unicast
 neighbor vteps peer-group
 neighbor vteps remote-as 65000
 neighbor vteps update-source 10.255.0.254
 neighbor vteps timers connect 1
 bgp listen range 10.255.2.0/24 peer-group vteps
 neighbor 10.255.0.11 peer-group vteps
 neighbor 10.255.0.12 peer-group vteps
 !
 address-family l2vpn evpn
  neighbor vteps activate
  neighbor vteps route-reflector-client
 exit-address-family
exit
!
"""


def test_vtep_config_peers_with_the_reflector_and_advertises_every_vni() -> None:
    config = evpn.vtep_config(H1)
    assert config["bgpd"] == VTEP_BGPD
    # zebra gets no BGP commands: it would log each as a config error
    assert config["zebra"] == (
        "frr defaults datacenter\nhostname h1\nlog timestamp precision 3\n!\nip nht resolve-via-default\n!\n"
    )


def test_reflector_config_reflects_to_every_client_and_hosts_no_vni() -> None:
    clients = (IPv4Address("10.255.0.12"), IPv4Address("10.255.0.11"), IPv4Address("10.255.0.12"))
    rr = evpn.Reflector("spine", RR, 65000, clients, (IPv4Network("10.255.2.0/24"),))
    config = evpn.reflector_config(rr)
    assert config["bgpd"] == REFLECTOR_BGPD  # clients sorted, once each
    assert "advertise-all-vni" not in config["bgpd"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: evpn.vtep_config(evpn.Vtep("h1", H1.ip, 0, RR)), "host h1.asn: 0 is not in 1..4294967295"),
        (lambda: evpn.vtep_config(evpn.Vtep("h1", H1.ip, 2**32, RR)), "host h1.asn: 4294967296 is not in"),
        (
            lambda: evpn.vtep_config(evpn.Vtep("h1\nrouter bgp 1", H1.ip, 65000, RR)),
            "not usable as an FRR hostname",
        ),
        (lambda: evpn.vtep_config(evpn.Vtep("h1", RR, 65000, RR)), "is the route reflector's address"),
        (lambda: evpn.reflector_config(evpn.Reflector("rr", RR, 65000)), "needs clients or a listen range"),
        (
            lambda: evpn.reflector_config(evpn.Reflector("rr", RR, 65000, (RR,))),
            "its own address, not a client",
        ),
    ],
)
def test_values_frr_cannot_take_are_refused_with_the_field(make, message: str) -> None:
    with pytest.raises(evpn.EvpnConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        make()


def _path(route_type: int, rt: str, hop: str, peer: str, **fields: object) -> dict[str, object]:
    return {
        "valid": True,
        "bestpath": True,
        "routeType": route_type,
        "peerId": peer,
        "extendedCommunity": {"string": f"ET:8 RT:{rt}"},
        "nexthops": [{"ip": hop, "afi": "ipv4", "used": True}],
        **fields,
    }


# the shape of FRR 8.4's `show bgp l2vpn evpn route json` (trimmed from a real run)
ROUTE_JSON = {
    "10.255.0.11:2": {
        "rd": "10.255.0.11:2",
        "[2]:[0]:[48]:[02:0b:00:00:00:01]": {
            "prefix": "[2]:[0]:[48]:[02:0b:00:00:00:01]",
            "paths": [[_path(2, "65000:10010", "10.255.0.11", "(unspec)", mac="02:0b:00:00:00:01")]],
        },
        "[3]:[0]:[32]:[10.255.0.11]": {
            "prefix": "[3]:[0]:[32]:[10.255.0.11]",
            "paths": [[_path(3, "65000:10010", "10.255.0.11", "(unspec)", ip="10.255.0.11")]],
        },
    },
    "10.255.0.13:3": {
        "rd": "10.255.0.13:3",
        "[2]:[0]:[48]:[02:0a:00:00:00:03]": {
            "prefix": "[2]:[0]:[48]:[02:0a:00:00:00:03]",
            "paths": [
                [{**_path(2, "65000:20020", "10.255.0.13", "10.255.0.99"), "bestpath": False}],
                [_path(2, "65000:20020", "10.255.0.13", "10.255.0.254", mac="02:0a:00:00:00:03")],
            ],
        },
    },
    "numPrefix": 3,
    "numPaths": 4,
}


def test_routes_are_read_from_the_best_paths_with_their_vni_and_vtep() -> None:
    routes = evpn.parse_routes(ROUTE_JSON)
    assert [r.as_json() for r in routes] == [
        {
            "type": 2,
            "vni": 10010,
            "vtep": "10.255.0.11",
            "rd": "10.255.0.11:2",
            "mac": "02:0b:00:00:00:01",
            "ip": None,
            "origin": "local",
        },
        {
            "type": 3,
            "vni": 10010,
            "vtep": "10.255.0.11",
            "rd": "10.255.0.11:2",
            "mac": None,
            "ip": None,
            "origin": "local",
        },
        {
            "type": 2,
            "vni": 20020,
            "vtep": "10.255.0.13",
            "rd": "10.255.0.13:3",
            "mac": "02:0a:00:00:00:03",
            "ip": None,
            "origin": "bgp",
        },
    ]


def test_session_states_of_the_peers_asked_for() -> None:
    summary = {"peers": {"10.255.0.11": {"state": "Established"}, "10.255.0.12": {"state": "Active"}}}
    asked = [IPv4Address("10.255.0.11"), IPv4Address("10.255.0.12"), IPv4Address("10.255.0.13")]
    assert evpn.established(summary, asked) == {
        "10.255.0.11": "Established",
        "10.255.0.12": "Active",
        "10.255.0.13": "",
    }


def test_every_file_of_a_node_is_in_the_labs_state_dir() -> None:
    node = frr.Node("lab1", "hv1")
    assert node.ns == "lab1-hv1"
    assert node.dir == state_dir("lab1") / "frr" / "hv1"
    for daemon in frr.DAEMONS:
        argv = frr._command(node, daemon)
        assert argv[:2] == ["nsenter", "--net=/run/netns/lab1-hv1"]
        paths = [a.removeprefix("file:") for a in argv[3:] if "/" in a]
        assert len(paths) == 5  # config, zserv socket, pid file, vty socket dir, log
        assert all(p.startswith(str(node.dir)) for p in paths), paths
        assert "-N" not in argv  # a pathspace would leave /var/run/frr/<name> behind


def test_zebra_fdb_is_remote_vteps_and_remote_macs_per_vni() -> None:
    vnis = {
        "10010": {"vni": 10010, "type": "L2", "remoteVteps": ["10.255.0.12"]},
        "20020": {"vni": 20020, "type": "L2", "remoteVteps": []},
    }
    macs = {
        "10010": {
            "numMacs": 2,
            "macs": {
                "02:0b:00:00:00:02": {"type": "remote", "remoteVtep": "10.255.0.12"},
                "02:0b:00:00:00:01": {"type": "local", "intf": "b1-0"},
            },
        }
    }
    assert evpn.zebra_fdb(macs, vnis) == {
        10010: {
            (evpn.ZERO_MAC, IPv4Address("10.255.0.12")),
            ("02:0b:00:00:00:02", IPv4Address("10.255.0.12")),
        },
        20020: set(),
    }


def test_a_part_gets_its_vteps_and_the_reflector_only_where_it_is_placed() -> None:
    vteps = {"h1": IPv4Address("10.255.0.11"), "h2": IPv4Address("10.255.0.12")}
    here = evpn.part_configs(65000, ("spine", RR), vteps, True, [IPv4Network("10.255.2.0/24")])
    assert sorted(here) == ["h1", "h2", "spine"]
    assert here["h1"] == evpn.vtep_config(H1)
    assert " bgp listen range 10.255.2.0/24 peer-group vteps" in here["spine"]["bgpd"]
    elsewhere = evpn.part_configs(65000, ("spine", RR), {"h3": IPv4Address("10.255.2.13")}, False)
    assert sorted(elsewhere) == ["h3"]


OVERLAY_LAB = Path(__file__).resolve().parents[2] / "labs" / "overlay.yaml"


def _overlay_lab(**edits: str) -> Topology:
    text = OVERLAY_LAB.read_text()
    for old, new in {"  mode: controller": "  mode: evpn", **edits}.items():
        assert text.count(old) == 1, f"{OVERLAY_LAB} no longer has {old!r} once: update the test"
        text = text.replace(old, new)
    return loader.load_text(text, str(OVERLAY_LAB))


def test_the_overlay_lab_in_evpn_mode_peers_every_vtep_with_the_spine() -> None:
    configs = evpn.from_topology(_overlay_lab())
    assert sorted(configs) == ["hv1", "hv2", "hv3", "spine"]
    assert configs["hv3"] == evpn.vtep_config(
        evpn.Vtep("hv3", IPv4Address("10.255.2.13"), 65000, IPv4Address("10.255.1.1"))
    )
    spine = configs["spine"]["bgpd"]
    assert [line for line in spine.splitlines() if line.startswith(" neighbor 10.")] == [
        " neighbor 10.255.1.11 peer-group vteps",
        " neighbor 10.255.1.12 peer-group vteps",
        " neighbor 10.255.2.13 peer-group vteps",
    ]
    assert "advertise-all-vni" not in spine


def test_a_machine_gets_its_own_vteps_and_the_reflector_only_if_it_hosts_it() -> None:
    topo = _overlay_lab(**{"  hv3:\n    vtep: eth0": "  hv3:\n    machine: m2\n    vtep: eth0"})
    assert sorted(evpn.from_topology(topo, "m2")) == ["hv3"]
    assert evpn.from_topology(topo, "m1") == {}  # hv1/hv2 name no machine; the spine is a router


def test_a_host_as_reflector_also_advertises_its_own_vnis() -> None:
    configs = evpn.from_topology(_overlay_lab(**{"route_reflector: spine": "route_reflector: hv1"}))
    assert sorted(configs) == ["hv1", "hv2", "hv3"]
    hv1 = configs["hv1"]["bgpd"]
    assert " bgp router-id 10.255.1.11" in hv1 and "  advertise-all-vni" in hv1
    assert "  neighbor vteps route-reflector-client" in hv1 and " neighbor 10.255.1.11 peer-group" not in hv1


def test_only_evpn_segments_make_evpn_nodes() -> None:
    assert evpn.from_topology(loader.load(OVERLAY_LAB)) == {}  # the shipped lab is in controller mode
