"""The user-space side of the underlay guard's maps (dataplane/overlay.py), without the kernel:
which addresses count as this host's, the address keys, the VNI range."""

from __future__ import annotations

from ipaddress import IPv4Interface, ip_address

import pytest

from dataplane import abi
from dataplane.overlay import OverlayError, addr_key, check_vni, key_address, local_addresses


def test_an_interface_address_brings_its_subnet_broadcast() -> None:
    found = local_addresses(
        ["10.255.1.11/24", IPv4Interface("10.9.9.9/31"), "fd00::1/64", ip_address("10.1.1.1")]
    )
    expected = {"10.255.1.11", "10.255.1.255", "10.9.9.9", "fd00::1", "10.1.1.1"}
    assert found == {ip_address(a) for a in expected}


@pytest.mark.parametrize("address", ["10.255.1.11", "fd00:255::11", "255.255.255.255"])
def test_address_key_round_trip(address: str) -> None:
    key = addr_key(address)
    assert key.family == ip_address(address).version
    assert key_address(key) == ip_address(address)
    if key.family == 4:
        assert bytes(key.addr[4:]) == bytes(12), "the guard compares all 16 bytes: IPv4 pads with zeros"


def test_vni_range() -> None:
    assert check_vni(1) == 1 and check_vni(abi.VNI_MAX) == abi.VNI_MAX
    for vni in (0, abi.VNI_MAX + 1, -1):
        with pytest.raises(OverlayError, match=rf"VNI {vni} is not in 1\.\.16777215"):
            check_vni(vni)
