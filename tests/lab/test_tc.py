"""TC over raw rtnetlink (dataplane/tc.py) against the real kernel, in throwaway namespaces.

    zzattXXXXXX ("host")                          zzattYYYYYY ("vm")
    p0 ═══════════════════ veth ═══════════════════ eth0
    clsact: ingress ffff:fff2 → vlan_from_port
            egress  ffff:fff3 → vlan_to_port
    (one SwitchDataplane loaded without pins; handle 1, prio 1, protocol all, direct action)

Every namespace is made here with its own random `zzatt` name and deleted in a `finally`;
pyroute2 (through `Netlink.iproute()`) is the independent reader that checks what was sent.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
from collections.abc import Iterator

import pytest

from dataplane import nlwire, rtnl_tc, tc
from netns_lab.kernel import netns, rtnl
from netns_lab.kernel.netlink import Netlink

if os.geteuid() == 0:
    pytest.importorskip("bcc", reason="needs bcc (Debian python3-bpfcc, seen through the venv)")

NO_SUCH_INDEX = 999_999


@pytest.fixture
def port() -> Iterator[tuple[Netlink, int]]:
    """The host's Netlink and the ifindex of its port p0 (peer eth0 in the vm namespace)."""
    root_links = socket.if_nameindex()
    made: list[str] = []
    try:
        for _ in range(2):
            name = "zzatt" + secrets.token_hex(3)
            netns.create(name)  # EEXIST on a clash: never adopt a namespace we did not make
            made.append(name)
        with Netlink(made[0]) as host:
            ifindex = host.veth("p0", "eth0", made[1], up=True)
            # p0's ifindex may well be taken in the root namespace too: before any tc write,
            # make sure (read-only) that the tc socket sits where p0 is.
            assert "p0" not in {name for _, name in root_links} and sees_link(host.tc_socket(), "p0")
            yield host, ifindex
    finally:
        for name in made:
            netns.delete(name)
    assert socket.if_nameindex() == root_links, "the root namespace's interfaces changed"


def sees_link(sock: socket.socket, name: str) -> bool:
    """Is link `name` in the namespace of `sock`? (one RTM_GETLINK; seq 0 is never tc's)"""
    sock.send(nlwire.request(rtnl.RTM_GETLINK, nlwire.F_REQUEST, 0, rtnl.get_link(name)))
    kind, _, _, _ = next(nlwire.messages(memoryview(sock.recv(65536))))
    return kind == rtnl.RTM_NEWLINK


def filters(host: Netlink, ifindex: int, hook: tc.Hook) -> list[dict]:
    """The bpf filters of a hook as pyroute2 decodes them (not the entry of the chain itself)."""
    parent = {"ingress": "ffff:fff2", "egress": "ffff:fff3"}[hook]
    found = []
    for msg in host.iproute().get_filters(index=ifindex, parent=parent):
        options = msg.get("TCA_OPTIONS")
        if msg.get("TCA_KIND") == "bpf" and options:
            flags, name = options.get_attr("TCA_BPF_FLAGS"), options.get_attr("TCA_BPF_NAME")
            found.append({"handle": msg["handle"], "info": msg["info"], "flags": flags, "name": name})
    return found


def test_tc_socket_is_one_socket_of_the_namespace(port) -> None:
    host, _ = port
    sock = host.tc_socket()
    assert sock is host.tc_socket() and sock.fileno() != host._sock.fileno()
    assert sees_link(sock, "p0") and not sees_link(sock, "eth0"), "eth0 is in the vm namespace"
    host.close()
    assert sock.fileno() == -1, "close() closes the tc socket too"


def test_attach_both_hooks(port, dataplane) -> None:
    host, ifindex = port
    sock = host.tc_socket()
    dataplane.attach(sock, ifindex)
    assert tc.attached(sock, ifindex, "ingress") == ["vlan_from_port"]
    assert tc.attached(sock, ifindex, "egress") == ["vlan_to_port"]
    for hook in ("ingress", "egress"):
        (only,) = filters(host, ifindex, hook)
        assert only["handle"] == tc.HANDLE and only["name"] == tc.attached(sock, ifindex, hook)[0]
        assert only["info"] == tc.PRIO << 16 | socket.htons(rtnl_tc.ETH_P_ALL)
        assert only["flags"] == rtnl_tc.TCA_BPF_FLAG_ACT_DIRECT


def test_attach_again_is_harmless(port, dataplane) -> None:
    host, ifindex = port
    sock = host.tc_socket()
    dataplane.attach(sock, ifindex)
    dataplane.attach(sock, ifindex)  # clsact kept, each filter replaced by itself
    assert tc.attached(sock, ifindex, "ingress") == ["vlan_from_port"]
    assert len(filters(host, ifindex, "egress")) == 1


def test_replace_swaps_the_program_under_the_same_handle(port, dataplane) -> None:
    host, ifindex = port
    sock = host.tc_socket()
    dataplane.attach(sock, ifindex)
    tc.attach(sock, ifindex, "ingress", dataplane.programs["nlab_empty"], "nlab_empty")
    (only,) = filters(host, ifindex, "ingress")
    assert only["handle"] == tc.HANDLE and tc.attached(sock, ifindex, "ingress") == ["nlab_empty"]
    assert tc.attached(sock, ifindex, "egress") == ["vlan_to_port"], "the other hook is untouched"


def test_detach_removes_both_hooks_and_may_repeat(port, dataplane) -> None:
    host, ifindex = port
    sock = host.tc_socket()
    dataplane.attach(sock, ifindex)
    dataplane.detach(sock, ifindex)
    assert tc.attached(sock, ifindex, "ingress") == tc.attached(sock, ifindex, "egress") == []
    assert "clsact" not in {q.get("TCA_KIND") for q in host.iproute().get_qdiscs(index=ifindex)}
    dataplane.detach(sock, ifindex)
    dataplane.detach(sock, NO_SUCH_INDEX)
    assert tc.attached(sock, NO_SUCH_INDEX, "egress") == []


@pytest.mark.parametrize(
    "call, code, words",
    [
        (
            lambda s, i, dp: tc.add_clsact(s, NO_SUCH_INDEX),
            errno.ENODEV,
            [f"ifindex {NO_SUCH_INDEX}", "clsact"],
        ),
        (
            lambda s, i, dp: tc.attach(s, NO_SUCH_INDEX, "egress", dp.programs["nlab_empty"], "nlab_empty"),
            errno.ENODEV,
            [f"ifindex {NO_SUCH_INDEX}", "egress", "nlab_empty"],
        ),
        (  # no clsact yet: the kernel says why
            lambda s, i, dp: tc.attach(s, i, "ingress", dp.programs["nlab_empty"], "nlab_empty"),
            errno.EINVAL,
            ["ifindex {port}", "ingress", "Qdisc"],
        ),
        (  # a map is not a program
            lambda s, i, dp: tc.add_clsact(s, i) or tc.attach(s, i, "egress", dp.maps["ports"], "ports"),
            errno.EINVAL,
            ["ifindex {port}", "egress", "ports"],
        ),
    ],
)
def test_errors_name_the_port_and_the_hook(port, dataplane, call, code: int, words: list[str]) -> None:
    host, ifindex = port
    sock = host.tc_socket()
    with pytest.raises(tc.TcError) as caught:
        call(sock, ifindex, dataplane)
    assert isinstance(caught.value, OSError) and caught.value.errno == code
    for word in words:
        assert word.format(port=ifindex) in str(caught.value)
    tc.add_clsact(sock, ifindex)  # the socket stays usable after a refusal
    assert tc.attached(sock, ifindex, "ingress") == []


def test_a_late_answer_to_an_earlier_request_is_skipped(port, dataplane) -> None:
    host, ifindex = port
    sock = host.tc_socket()
    # A request whose answer nobody read (as after an interrupted call): seq 0 is never ours.
    sock.send(rtnl_tc.request(rtnl_tc.RTM_NEWQDISC, nlwire.F_ACK, 0, rtnl_tc.clsact(NO_SUCH_INDEX)))
    dataplane.attach(sock, ifindex)
    assert tc.attached(sock, ifindex, "ingress") == ["vlan_from_port"]
