"""The model against the dataplane: every entry the kernel holds compared with what the topology
compiles to, each difference named by its place (node, port, map, key).

Read only: maps are looked up, TC filters and FDB tables dumped; nothing is written.
  - ports: every switch port of every host and physical switch exists, runs the programs of
    its role on both hooks, and holds its VLAN policy (`ports` map);
  - firewall: every vNIC's settings and the firewall's maps (fwmaps.py);
  - mirror sessions and the mirror settings of every port; team members (one active per team);
  - overlay tables of every VTEP (the check of `nlab overlay check`).
"""

from __future__ import annotations

from dataplane import abi, tc
from dataplane.mirror import port_entry, session_entry
from dataplane.switch import SwitchDataplane
from netns_lab.features.compliance.verify import fwmaps
from netns_lab.features.compliance.verify.finding import Finding, finding
from netns_lab.features.mirror import live as mirror_live
from netns_lab.features.mirror import plan as mirror_plan
from netns_lab.features.team import plan as team_plan
from netns_lab.features.vlan import plan as vlan_plan
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab.running import HostPlane, RunningLab
from netns_lab.lab.state import pin_dir
from netns_lab.lab.status import expected_programs
from netns_lab.topology import names
from netns_lab.topology.model import Topology


# -- ports, programs and VLAN policy -----------------------------------------------------------------
def _vlan_text(port: abi.Port) -> str:
    if port.mode == abi.Mode.ACCESS:
        text = f"access {port.access_vid}"
    else:
        allowed = [v for v in range(1, 4095) if port.allowed[v >> 6] >> (v & 63) & 1]
        text = f"trunk [{', '.join(map(str, allowed))}]" if allowed else "plain"
        text += " untagged" if port.flags & abi.PORT_F_UNTAGGED else " tagged only"
    return text + (" guard" if port.flags & abi.PORT_F_GUARD else "")


def _ports(topo: Topology, node: str, plan: list[vlan_plan.SwitchPort], dp: SwitchDataplane) -> list[Finding]:
    found = []
    with Netlink(names.namespace(topo.lab, node)) as nl:
        links = {link.name: link for link in nl.links()}
        sock = nl.tc_socket()
        for p in plan:
            where = f"{node} port {p.name}"
            link = links.get(p.name)
            if link is None:
                found.append(finding("port missing", where, "present", "absent"))
                continue
            for hook, want in expected_programs(p.role).items():
                have = tc.attached(sock, link.index, hook)
                if have != want:
                    found.append(
                        finding("program not attached", f"{where} {hook}", want or "none", have or "none")
                    )
            live, model = dp.port(link.index), p.vlans.to_abi()
            if bytes(live) != bytes(model):
                found.append(
                    finding(
                        "VLAN policy",
                        f"{where} (map ports, key {link.index})",
                        _vlan_text(model),
                        _vlan_text(live),
                    )
                )
    return found


def ports(lab: RunningLab) -> list[Finding]:
    topo = lab.topo
    found = []
    for h in lab.hosts:
        found += _ports(topo, h.host, vlan_plan.host_ports(topo, h.host), h.dataplane)
        found += _mirror_port(topo, h)
    for sw in topo.switches:
        with SwitchDataplane.open(pin_dir(topo.lab) / sw.name) as dp:
            found += _ports(topo, sw.name, vlan_plan.switch_ports(topo, sw.name), dp)
    return found


def _mirror_port(topo: Topology, h: HostPlane) -> list[Finding]:
    far = names.MIRROR_PORT[1]
    if far not in h.ifindexes:
        return [finding("port missing", f"{h.host} mirror port {far}", "present", "absent")]
    with Netlink(names.namespace(topo.lab, h.host)) as nl:
        sock = nl.tc_socket()
        found = []
        for hook, want in expected_programs("mirror").items():
            have = tc.attached(sock, h.ifindexes[far], hook)
            if have != want:
                found.append(
                    finding(
                        "program not attached", f"{h.host} port {far} {hook}", want or "none", have or "none"
                    )
                )
    return found


# -- mirrors, teams, overlay ------------------------------------------------------------------------------
def mirrors(lab: RunningLab, h: HostPlane) -> list[Finding]:
    topo = lab.topo
    planned = mirror_plan.plan(topo)[h.host]
    ids = mirror_live.read_ids(topo.lab)
    m = h.dataplane.mirrors
    found = []
    for s in planned.sessions:
        want = session_entry(mirror_live.planned_session(s, lambda port: h.ifindexes[port]))
        have = m.session(ids[s.name])
        if bytes(want) != bytes(have):
            where = f"{h.host} map mirror_sessions, key {ids[s.name]} (session {s.name})"
            found.append(finding("mirror session", where, _session_text(want), _session_text(have)))
    ports = planned.ports(ids)
    for port, ifindex in sorted(h.ifindexes.items()):
        if not 0 < ifindex < abi.MAX_IFINDEX:
            continue
        want_port = port_entry(ports.get(port, []), analyzer=port in planned.analyzers)
        have_port = m.port(ifindex)
        if bytes(want_port) != bytes(have_port):
            where = f"{h.host} port {port} (map mirror_ports, key {ifindex})"
            found.append(finding("mirror port", where, _port_text(want_port), _port_text(have_port)))
    return found


def _session_text(s: abi.MirrorSession) -> str:
    return (
        f"dest ifindex {s.dest} via {s.ifindex} taps {s.taps:#x} snaplen {s.snaplen}"
        f" sample {s.sample} vlan {s.vlan} flags {s.flags:#x}"
    )


def _port_text(p: abi.MirrorPort) -> str:
    sessions = [p.session[i] for i in range(p.nr)]
    return f"sessions {sessions} taps {p.taps:#x}" + (
        " analyzer" if p.flags & abi.MIRROR_PORT_ANALYZER else ""
    )


def teams(lab: RunningLab, h: HostPlane) -> list[Finding]:
    members = h.dataplane.team.members()
    found = []
    planned: set[int] = set()
    for t in team_plan.teams(lab.topo, h.host):
        indexes = {m: h.ifindexes.get(m) for m in t.members}
        planned |= {i for i in indexes.values() if i is not None}
        for m, i in indexes.items():
            if i is None or i not in members:
                found.append(
                    finding(
                        "team member",
                        f"{h.host} team {t.name} member {m} (map team_state)",
                        "member",
                        "not a member",
                    )
                )
        active = [m for m, i in indexes.items() if members.get(i or -1)]
        if len(active) != 1:
            found.append(
                finding(
                    "team active member",
                    f"{h.host} team {t.name} (map team_state)",
                    "exactly one active",
                    active or "none",
                )
            )
    by_index = {i: name for name, i in h.ifindexes.items()}
    for i in sorted(set(members) - planned):
        found.append(
            finding(
                "team member",
                f"{h.host} port {by_index.get(i, i)} (map team_state, key {i})",
                "not a member",
                "member",
            )
        )
    return found


def overlay(lab: RunningLab) -> list[Finding]:
    if not lab.topo.segments:
        return []
    from netns_lab.features.overlay import controller, install

    drift = controller.check(lab.lab, install.plan_of(lab.topo)) + controller.check(
        lab.lab, install.evpn_plan(lab.topo)
    )
    return [
        finding(
            f"overlay {c.table} entry: {c.action}", f"{c.host} {c.dev} {c.table}, key {c.key}", c.want, c.have
        )
        for c in drift
    ]


def run(lab: RunningLab) -> list[Finding]:
    """Every difference between the model and the kernel, ports first."""
    found = ports(lab)
    for h in lab.hosts:
        found += fwmaps.firewall(lab, h) + mirrors(lab, h) + teams(lab, h)
    return found + overlay(lab)
