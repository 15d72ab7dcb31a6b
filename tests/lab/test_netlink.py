"""The rtnetlink door (netns_lab/kernel/netlink.py) against the real kernel, in throwaway namespaces.

    zzfastXXXXXX ("host")                      zzfastYYYYYY ("vm")
    br0 ── p0 ═══════════ veth ═══════════ eth0  02:00:5e:00:53:01
    (master + up in the one                     192.0.2.2/24, 2001:db8::2/64
     request that creates p0)                   198.51.100.0/24 via 192.0.2.1
                                                default via 192.0.2.1 / 2001:db8::1

Every namespace is made here with its own random `zzfast` name and deleted in a `finally`;
the root namespace's interfaces must be the same after each test as before it.
"""

from __future__ import annotations

import errno
import secrets
import socket
import struct
from collections.abc import Callable, Iterator

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from dataplane import nlwire
from netns_lab.kernel import netns, rtnl
from netns_lab.kernel.netlink import Link, Netlink

MAC = "02:00:5e:00:53:01"
AF_INET6 = 10


@pytest.fixture
def make_ns() -> Iterator[Callable[[], str]]:
    """Factory of fresh namespaces; exactly those it made are deleted afterwards."""
    made: list[str] = []
    root_links = socket.if_nameindex()

    def factory() -> str:
        name = "zzfast" + secrets.token_hex(3)
        netns.create(name)  # EEXIST on a clash: never adopt a namespace we did not make
        made.append(name)
        return name

    try:
        yield factory
    finally:
        for name in made:
            netns.delete(name)
    assert socket.if_nameindex() == root_links, "the root namespace's interfaces changed"


@pytest.fixture
def pair(make_ns: Callable[[], str]) -> Iterator[tuple[Netlink, Netlink]]:
    """("host", "vm") sockets; the host has bridge br0 and port p0 whose peer is the vm's eth0."""
    host, vm = Netlink(make_ns()), Netlink(make_ns())
    try:
        host.bridge("br0")
        host.veth("p0", "eth0", vm.ns, mac=MAC, master="br0", up=True)
        yield host, vm
    finally:
        host.close()
        vm.close()


def requests_of(nl: Netlink, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The message types `nl` sends from now on."""
    sent: list[int] = []
    send = nl._send

    def spy(kind: int, flags: int, body: bytes) -> int:
        sent.append(kind)
        return send(kind, flags, body)

    monkeypatch.setattr(nl, "_send", spy)
    return sent


def by_name(nl: Netlink) -> dict[str, Link]:
    return {link.name: link for link in nl.links()}


def test_veth_enslaved_and_up_in_one_request(make_ns, monkeypatch) -> None:
    with Netlink(make_ns()) as host, Netlink(make_ns()) as vm:
        bridge = host.bridge("br0")
        sent = requests_of(host, monkeypatch)
        port = host.veth("p0", "eth0", vm.ns, master="br0", up=True)
        assert len(sent) == 1
        assert host.index("p0") == port and host.index("br0") == bridge and host.index("lo") == 1
        assert len(sent) == 1, "indexes of created links come back with the creation"
        links = by_name(host)
        assert links["br0"] == Link(bridge, "br0", "bridge", links["br0"].mac, up=True, master=None)
        assert links["p0"] == Link(port, "p0", "veth", links["p0"].mac, up=True, master=bridge)


def test_peer_is_born_in_its_namespace_with_its_mac_and_down(pair) -> None:
    host, vm = pair
    eth0 = by_name(vm)["eth0"]
    assert (eth0.kind, eth0.mac, eth0.up, eth0.master) == ("veth", MAC, False, None)
    assert "eth0" not in by_name(host)
    vm.up("eth0")
    assert by_name(vm)["eth0"].up


def test_veth_without_master_then_enslave_and_up(pair) -> None:
    host, vm = pair
    port = host.veth("p1", "eth1", vm.ns)
    assert by_name(host)["p1"].master is None and not by_name(host)["p1"].up
    host.enslave("p1", "br0")
    host.up("p1")
    assert by_name(host)["p1"] == Link(port, "p1", "veth", by_name(host)["p1"].mac, True, host.index("br0"))


def test_links_reads_a_dump_of_several_datagrams(make_ns, monkeypatch) -> None:
    with Netlink(make_ns()) as host, Netlink(make_ns()) as vm:
        names = {host.veth(f"p{i}", f"e{i}", vm.ns): f"p{i}" for i in range(60)}
        receive, datagrams = host._receive, []
        monkeypatch.setattr(host, "_receive", lambda what: datagrams.append(1) or receive(what))
        found = {link.index: link.name for link in host.links()}
        assert found == {1: "lo", **names}
        assert len(datagrams) > 1, "60 links should not fit one datagram: multipart untested"


def test_addresses_and_routes(pair) -> None:
    _, vm = pair
    vm.up("eth0")
    vm.address("eth0", "192.0.2.2/24")
    vm.address("eth0", "2001:db8::2/64")
    vm.route("198.51.100.0/24", "192.0.2.1")
    vm.route("default", "192.0.2.1")
    vm.route("default", "2001:db8::1")
    ipr, eth0 = vm.iproute(), vm.index("eth0")
    addresses = {(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=eth0)}
    assert {("192.0.2.2", 24), ("2001:db8::2", 64)} <= addresses
    routes = {
        (r.get("RTA_DST"), r["dst_len"], r.get("RTA_GATEWAY"))
        for family in (socket.AF_INET, AF_INET6)
        for r in ipr.get_routes(family=family, table=254)
        if r.get("RTA_GATEWAY")
    }
    assert routes == {("198.51.100.0", 24, "192.0.2.1"), (None, 0, "192.0.2.1"), (None, 0, "2001:db8::1")}


@pytest.mark.parametrize(
    "call, code, names",
    [
        (lambda h, v: h.bridge("br0"), errno.EEXIST, ["'br0'"]),
        (lambda h, v: h.veth("p0", "eth9", v.ns), errno.EEXIST, ["'p0'", "'eth9'"]),
        (lambda h, v: h.up("nosuch0"), errno.ENODEV, ["'nosuch0'"]),
        (lambda h, v: h.enslave("nosuch0", "br0"), errno.ENODEV, ["'nosuch0'"]),
        (lambda h, v: h.enslave("p0", "nobridge"), errno.ENODEV, ["'nobridge'"]),
        (lambda h, v: h.veth("p9", "eth9", v.ns, master="nobridge"), errno.ENODEV, ["'nobridge'"]),
        (lambda h, v: v.address("nosuch0", "192.0.2.9/24"), errno.ENODEV, ["'nosuch0'"]),
        (lambda h, v: h.index("nosuch0"), errno.ENODEV, ["'nosuch0'"]),
    ],
)
def test_errors_name_the_interface_and_namespace(pair, call, code: int, names: list[str]) -> None:
    host, vm = pair
    with pytest.raises(NetlinkError) as caught:
        call(host, vm)
    assert caught.value.code == code
    message = str(caught.value)
    for name in names:
        assert name in message
    assert host.ns in message or vm.ns in message


def test_kernel_extended_ack_text_is_in_the_error(pair) -> None:
    _, vm = pair
    vm.up("eth0")
    vm.address("eth0", "192.0.2.2/24")
    with pytest.raises(NetlinkError) as caught:
        vm.route("198.51.100.1/24", "192.0.2.1")  # host bits set: the kernel explains why not
    assert caught.value.code == errno.EINVAL
    assert "prefix" in str(caught.value)


def test_a_failed_request_leaves_the_socket_usable(pair) -> None:
    host, _ = pair
    with pytest.raises(NetlinkError):
        host.up("nosuch0")
    host.up("p0")
    assert by_name(host)["p0"].up


def test_iproute_in_the_same_namespace_runs_tc(pair) -> None:
    host, _ = pair
    ipr = host.iproute()
    assert ipr is host.iproute()
    # Before touching tc: this IPRoute must see exactly the lab namespace's links, not the root's.
    assert {link.get("ifname") for link in ipr.get_links()} == set(by_name(host))
    port = host.index("p0")
    ipr.tc("add", "clsact", port)
    assert "clsact" in {q.get("TCA_KIND") for q in ipr.get_qdiscs(index=port)}
    ipr.tc("del", "clsact", port)
    assert "clsact" not in {q.get("TCA_KIND") for q in ipr.get_qdiscs(index=port)}


# -- replies the kernel rarely gives, played by a fake socket ------------------------------------
Reply = list[tuple[int, int, bytes]]  # one datagram: (type, flags, payload) of each message


class ScriptedSocket:
    """Answers the n-th request with the n-th script entry: datagrams stamped with its seq."""

    def __init__(self, script: list[list[Reply]]) -> None:
        self.script = script
        self.queue: list[bytes] = []

    def send(self, data: bytes) -> int:
        (seq,) = struct.unpack_from("=I", data, 8)
        for datagram in self.script.pop(0):
            self.queue.append(b"".join(nlwire.request(t, f, seq, p) for t, f, p in datagram))
        return len(data)

    def recv_into(self, buf: bytearray, nbytes: int, flags: int) -> int:
        data = self.queue.pop(0)
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        pass


def link_msg(index: int, name: str, flags: int = 0) -> tuple[int, int, bytes]:
    body = rtnl.ifinfo(index, up=True, attrs=rtnl.name(rtnl.IFLA_IFNAME, name))
    return rtnl.RTM_NEWLINK, rtnl.F_MULTI | flags, body


def done(code: int = 0) -> tuple[int, int, bytes]:
    return nlwire.NLMSG_DONE, rtnl.F_MULTI, struct.pack("=i", -code)


@pytest.fixture
def scripted(make_ns) -> Iterator[Callable[[list[list[Reply]]], Netlink]]:
    nl = Netlink(make_ns())
    real = nl._sock

    def play(script: list[list[Reply]]) -> Netlink:
        nl._sock = ScriptedSocket(script)  # type: ignore[assignment]
        return nl

    try:
        yield play
    finally:
        real.close()


def test_links_retries_a_dump_the_kernel_flagged_inconsistent(scripted) -> None:
    intr = [[link_msg(1, "lo"), link_msg(2, "gone0", rtnl.F_DUMP_INTR)], [done()]]
    clean = [[link_msg(1, "lo"), link_msg(3, "new0")], [done()]]
    nl = scripted([intr, clean])
    assert [(link.index, link.name) for link in nl.links()] == [(1, "lo"), (3, "new0")]


def test_links_gives_up_on_a_dump_that_keeps_changing(scripted) -> None:
    intr = [[link_msg(1, "lo", rtnl.F_DUMP_INTR), done()]]
    nl = scripted([intr, intr, intr])
    with pytest.raises(NetlinkError) as caught:
        nl.links()
    assert caught.value.code == errno.EAGAIN


def test_an_error_ending_a_dump_is_raised(scripted) -> None:
    nl = scripted([[[link_msg(1, "lo"), done(errno.EMSGSIZE)]]])
    with pytest.raises(NetlinkError) as caught:
        nl.links()
    assert caught.value.code == errno.EMSGSIZE


def test_answers_to_an_earlier_request_are_skipped(scripted) -> None:
    ack = struct.pack("=i", 0) + nlwire.request(rtnl.RTM_NEWLINK, 0, 0, b"")
    nl = scripted([[[(nlwire.NLMSG_ERROR, nlwire.F_CAPPED, ack)]]])
    stale = nlwire.request(nlwire.NLMSG_ERROR, 0, 0, struct.pack("=i", -errno.EPERM) + bytes(16))
    nl._sock.queue.append(stale)  # seq 0: never one of ours (ours start at 1)
    nl.up("lo")
