"""Topology objects in words, the same in every command that shows them (``vlans``, ``graph``)."""

from __future__ import annotations

from netns_lab.topology.model import PortProfile, Topology


def profile_text(topo: Topology, profile: PortProfile) -> str:
    """A PortProfile in words: 'access app', 'trunk app,db +untagged', 'plain (untagged)'."""
    if profile.access is not None:
        return f"access {topo.vlan_name(profile.access)}"
    if not profile.trunk:
        return "plain (untagged)" if profile.untagged else "nothing"
    names = ",".join(topo.vlan_name(v) for v in sorted(profile.trunk))
    return f"trunk {names}" + (" +untagged" if profile.untagged else "")
