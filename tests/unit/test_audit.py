"""`nlab audit`: the 13 recommendations of NIST SP 800-125B and the switch-security settings of a
topology, statically: the reference lab, each violating example lab of labs/, the audit's own
rules (one row per id, merged; a gap in the features is an error) and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from netns_lab.features.compliance import audit, settings
from netns_lab.features.compliance.recommendations import IDS, RECOMMENDATIONS
from netns_lab.features.registry import FEATURES
from netns_lab.topology import loader
from netns_lab.topology.model import Topology
from tests.helpers import nlab

REPO = Path(__file__).resolve().parents[2]
LABS = REPO / "labs"
REFERENCE = LABS / "nist-800-125b.yaml"
ROW_KEYS = {"id", "status", "reason", "objects"}


def variant(edits: dict[str, str], path: Path = REFERENCE) -> Topology:
    """A lab file with each `old` text (there exactly once) replaced by `new`, loaded."""
    text = path.read_text()
    for old, new in edits.items():
        assert text.count(old) == 1, f"{path} no longer has `{old}` exactly once: update the test"
        text = text.replace(old, new)
    return loader.load_text(text, path.name)


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in rows}


def not_met(doc: dict[str, Any], *, firewall: bool = False) -> set[str]:
    """Recommendations not met; the firewall's (VM-FW-*) left out unless asked for."""
    return {
        r["id"]
        for r in doc["recommendations"]
        if r["status"] == "not met" and (firewall or not r["id"].startswith("VM-FW-"))
    }


def test_the_thirteen_recommendations_in_the_publications_order() -> None:
    assert (
        *(f"VM-VN-R{i}" for i in (1, 2, 3)),
        *(f"VM-MP-R{i}" for i in (1, 2, 3)),
        *(f"VM-FW-R{i}" for i in (1, 2, 3, 4)),
        *(f"VM-TM-R{i}" for i in (1, 2, 3)),
    ) == IDS
    sections = {r.id[:5]: r.section for r in RECOMMENDATIONS}
    assert sections == {"VM-VN": "2.6", "VM-MP": "3.3", "VM-FW": "4.4", "VM-TM": "5.3"}
    assert all(r.title and r.area for r in RECOMMENDATIONS)


def test_reference_lab_has_exactly_the_13_ids_each_with_a_status_and_a_reason() -> None:
    proc = nlab("audit", str(REFERENCE), "--json")
    assert proc.returncode == 3, proc.stderr  # VM-VN-R2: four VLANs span all three hosts
    doc = json.loads(proc.stdout)
    assert set(doc) == {"lab", "recommendations", "settings"} and doc["lab"] == "nist"
    assert [r["id"] for r in doc["recommendations"]] == list(IDS)
    assert [s["id"] for s in doc["settings"]] == list(settings.SETTINGS)
    for row in (*doc["recommendations"], *doc["settings"]):
        assert set(row) == ROW_KEYS, row
        assert row["status"] in audit.STATUSES and row["reason"], row
        assert isinstance(row["objects"], list) and (row["objects"] or row["status"] != "not met"), row
    rows = by_id(doc["recommendations"])
    assert rows["VM-VN-R1"]["status"] == "met"
    assert rows["VM-VN-R2"]["status"] == "not met"
    assert "VLAN app (120) on hv1, hv2, hv3" in rows["VM-VN-R2"]["objects"]
    assert [rows[f"VM-TM-R{i}"]["status"] for i in (1, 2, 3)] == ["met", "not applicable", "met"]
    assert "app1-wire -> uplink monitor" in rows["VM-TM-R3"]["reason"]
    # hv2's and hv3's eth0 are their teams' standby members: no switch port is left unused
    assert [rows[f"VM-MP-R{i}"]["status"] for i in (1, 2, 3)] == ["met", "met", "met"]
    assert {s["id"] for s in doc["settings"] if s["status"] == "not met"} == set()


def test_reference_lab_human_table() -> None:
    proc = nlab("audit", str(REFERENCE))
    assert proc.returncode == 3, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("audit of lab nist: NOT compliant (")
    for rid in (*IDS, *settings.SETTINGS):
        assert sum(line.split("│")[1].strip() == rid for line in lines if line.count("│") > 2) == 1, rid


# each violating example: the recommendations it does not meet (the firewall's aside), and
# objects each must name
EXAMPLES: dict[str, dict[str, list[str]]] = {
    "audit-vlan-mismatch.yaml": {"VM-VN-R1": ["hv2.eth0 <-> tor1.hv2-eth0"]},
    "audit-flood-overlay.yaml": {
        "VM-VN-R2": ["VLAN legacy (100) on hv1, hv2, hv3"],
        "VM-VN-R3": ["segment web (VNI 10010, tenant blue)"],
    },
    "teams.yaml": {
        "VM-MP-R1": ["hv2.vs1", "hv2.eth0", "hv2.eth1"],
        "VM-MP-R2": ["hv3.vs1", "hv3.eth0", "hv3.eth1"],
        "VM-MP-R3": ["hv4.vs1", "hv4.eth0", "hv4.eth1"],
    },
    "audit-promiscuous-vswitch.yaml": {"VM-TM-R2": ["hv1.vs1", "ids.eth0", "ids.eth1"]},
    "audit-one-way-mirror.yaml": {"VM-TM-R1": ["web1.eth0", "mirror web1-rx"]},
}


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_lab_violates_its_group_and_names_the_objects(name: str) -> None:
    doc = audit.audit(loader.load(LABS / name))
    expected = EXAMPLES[name]
    assert not_met(doc) == set(expected), [r for r in doc["recommendations"] if r["status"] == "not met"]
    rows = by_id(doc["recommendations"])
    for rid, objects in expected.items():
        assert rows[rid]["objects"] == objects, rows[rid]
        assert rows[rid]["reason"], rows[rid]


PHYSICAL_FIREWALL = LABS / "audit-physical-firewall.yaml"


@pytest.mark.skipif(
    not PHYSICAL_FIREWALL.exists(), reason="comes with the firewall placements (traits, appliances)"
)
def test_physical_firewall_example_violates_vm_fw_r1() -> None:
    """A delay-sensitive VM whose tier is placed behind the physical appliance; web1, delay-
    sensitive too, is filtered in the kernel and is not named."""
    doc = audit.audit(loader.load(PHYSICAL_FIREWALL))
    assert not_met(doc, firewall=True) == {"VM-FW-R1"}
    assert by_id(doc["recommendations"])["VM-FW-R1"]["objects"] == ["trade1"]


def test_example_labs_name_only_what_violates() -> None:
    """The compliant half of each example stays out of the objects: hv1's wider trunk (a
    warning), hv1's team, ids2 promiscuous in one port group, web2 mirrored both ways."""
    docs = {name: by_id(audit.audit(loader.load(LABS / name))["recommendations"]) for name in EXAMPLES}
    assert docs["audit-vlan-mismatch.yaml"]["VM-VN-R1"]["objects"] == ["hv2.eth0 <-> tor1.hv2-eth0"]
    assert not any(o.startswith("hv1") for r in docs["teams.yaml"].values() for o in r["objects"])
    r2 = docs["audit-promiscuous-vswitch.yaml"]["VM-TM-R2"]
    assert "ids2" not in " ".join(r2["objects"]) and "hv1.vs2" not in r2["objects"]
    r1 = docs["audit-one-way-mirror.yaml"]["VM-TM-R1"]
    assert "web2" not in " ".join(r1["objects"])
    assert "copied in only (by web1-rx): its outgoing traffic is not" in r1["reason"]


def test_fixing_each_example_meets_its_recommendation() -> None:
    """The positive controls: the one edit that repairs each example."""
    fixed = {
        "audit-vlan-mismatch.yaml": (
            {"hv2-eth0: {trunk: [web]}": "hv2-eth0: {trunk: [web, app]}"},
            "VM-VN-R1",
        ),
        "audit-flood-overlay.yaml": ({"  mode: flood\n": "  mode: controller\n"}, "VM-VN-R3"),
        "audit-promiscuous-vswitch.yaml": (
            {"      - {vswitch: vs1, vlan: app, promiscuous: true}\n": ""},
            "VM-TM-R2",
        ),
        "audit-one-way-mirror.yaml": (
            {"dest: analyzer, direction: in}": "dest: analyzer, direction: both}"},
            "VM-TM-R1",
        ),
    }
    for name, (edits, rid) in fixed.items():
        row = by_id(audit.audit(variant(edits, LABS / name))["recommendations"])[rid]
        assert row["status"] == "met", (name, row)
        if rid == "VM-VN-R1":  # hv1's port carries db, which hv1 does not use: a warning only
            assert (
                "wider than needed on the switch side: hv1.eth0 <-> tor1.hv1-eth0 (VLAN db (130))"
                in row["reason"]
            )


def test_the_example_files_carry_a_picture() -> None:
    for name in [*EXAMPLES, *([PHYSICAL_FIREWALL.name] if PHYSICAL_FIREWALL.exists() else [])]:
        head = (LABS / name).read_text().split("\nlab:")[0]
        assert head.count("\n#") >= 8 and ("+--" in head or "---" in head), name


def test_promiscuous_on_a_segment_sees_its_segment_not_a_vswitch() -> None:
    """A segment's bridge on a host holds that segment only: promiscuous there is scoped to the
    port group (the segment), though it sees every port of that bridge."""
    nic = "    nics: [{segment: blue-web, ip: 10.0.0.12/24"
    topo = variant({nic + "}]": nic + ", promiscuous: true}]"}, LABS / "overlay.yaml")
    row = by_id(audit.audit(topo)["recommendations"])["VM-TM-R2"]
    assert (row["status"], row["objects"]) == ("met", []), row
    assert (
        "bweb2.eth0 sees port group segment blue-web on hv2.sg-10010 (1 of 1 other VM ports)" in row["reason"]
    )


# -- the audit's own rules ------------------------------------------------------------------------
class _Fake:
    def __init__(self, name: str, rows: list[dict[str, Any]]) -> None:
        self.name, self.rows = name, rows

    def checks(self, topo: Topology) -> list[dict[str, Any]]:
        return self.rows


def _row(rid: str, status: str = "met", objects: list[str] | None = None) -> dict[str, Any]:
    return {"id": rid, "status": status, "reason": f"{rid} {status}", "objects": objects or []}


def test_an_id_no_feature_checks_is_an_internal_error() -> None:
    topo = loader.load(REFERENCE)
    rows = [_row(rid) for rid in IDS if rid != "VM-FW-R3"]
    with pytest.raises(audit.AuditError, match="no feature checks VM-FW-R3"):
        audit.audit(topo, [_Fake("f", rows)])
    with pytest.raises(audit.AuditError, match="VM-XX-R9"):
        audit.audit(topo, [_Fake("f", [*rows, _row("VM-FW-R3"), _row("VM-XX-R9")])])
    with pytest.raises(audit.AuditError, match="feature g"):
        audit.audit(topo, [_Fake("f", rows), _Fake("g", [{"id": "VM-FW-R3", "status": "fine"}])])
    doc = audit.audit(topo, [_Fake("f", rows), _Fake("g", [_row("VM-FW-R3")])])
    assert [r["id"] for r in doc["recommendations"]] == list(IDS)


def test_every_id_is_checked_by_the_registered_features() -> None:
    topo = loader.load(REFERENCE)
    checked = {r["id"] for f in FEATURES for r in f.checks(topo)}
    assert checked == set(IDS)


def test_several_results_of_one_id_become_one() -> None:
    rows = [
        _row("VM-MP-R1", "met", ["hv1.vs1"]),
        _row("VM-MP-R1", "not met", ["hv2.vs1", "hv2.eth0"]),
        _row("VM-MP-R1", "not applicable", ["hv3.vs1"]),
        _row("VM-MP-R1", "not met", ["hv4.vs1", "hv2.eth0"]),
    ]
    merged = audit.merge("VM-MP-R1", rows)
    assert merged == {
        "id": "VM-MP-R1",
        "status": "not met",
        "reason": "VM-MP-R1 not met",
        "objects": ["hv2.vs1", "hv2.eth0", "hv4.vs1"],
    }
    assert audit.merge("VM-MP-R1", rows[::2])["status"] == "met"
    assert audit.merge("VM-MP-R1", rows[2:3] * 2)["status"] == "not applicable"


# -- settings -------------------------------------------------------------------------------------
def test_port_security_off_is_mac_changes_and_forged_transmits_accepted() -> None:
    nic = "      - {vswitch: vs2, vlan: web, ip: 10.20.0.11/24"
    topo = variant({nic + "}": nic + ", port_security: false}"})
    rows = by_id(settings.check(topo))
    for sid in ("mac-address-changes", "forged-transmits"):
        assert (rows[sid]["status"], rows[sid]["objects"]) == ("not met", ["web1.eth0"])
    reference = by_id(settings.check(loader.load(REFERENCE)))
    assert reference["forged-transmits"]["status"] == reference["mac-address-changes"]["status"] == "met"


def test_native_vlan_on_a_trunk_is_named() -> None:
    port = "hv3-eth1: {trunk: [app, db, desktop, management, migration, logging, storage]"
    topo = variant({port + "}": port + ", untagged: true}"})
    row = by_id(settings.check(topo))["native-vlan"]
    assert (row["status"], row["objects"]) == ("not met", ["tor2.hv3-eth1"])


def test_switch_control_frames_are_read_from_the_port_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The setting follows what the builder installs: a VM port planned without the guard flag
    (the flag that makes the eBPF drop 01:80:c2:00:00:0X and 01:00:0c:cc:cc:cc/cd) is named."""
    topo = loader.load(REFERENCE)
    assert by_id(settings.check(topo))["switch-control-frames"]["status"] == "met"
    from dataclasses import replace

    from netns_lab.features.vlan import plan

    planned = plan.host_ports

    def unguarded(t: Topology, host: str) -> list[plan.SwitchPort]:
        return [
            replace(p, vlans=replace(p.vlans, guard=False)) if p.name == "web1-0" else p
            for p in planned(t, host)
        ]

    monkeypatch.setattr(plan, "host_ports", unguarded)
    row = by_id(settings.check(topo))["switch-control-frames"]
    assert (row["status"], row["objects"]) == ("not met", ["hv1.web1-0 (web1.eth0)"])


def test_promiscuous_nics_are_named_in_the_settings() -> None:
    row = by_id(settings.check(loader.load(LABS / "audit-promiscuous-vswitch.yaml")))["promiscuous-mode"]
    assert (row["status"], row["objects"]) == ("not met", ["ids.eth0", "ids.eth1", "ids2.eth0"])


# -- README ------------------------------------------------------------------------------------------
README = REPO / "README.md"


def _readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_shows_the_reference_lab_audit_as_it_is() -> None:
    """The statuses in README's output of `nlab audit labs/nist-800-125b.yaml` are today's."""
    block = _readme_section("Auditing a lab").split("```")[1]
    shown = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) == 7 and cells[1] in IDS:
            shown[cells[1]] = cells[4]
        elif len(cells) == 5 and cells[1] in settings.SETTINGS:
            shown[cells[1]] = cells[2]
    doc = audit.audit(loader.load(REFERENCE))
    assert shown == {r["id"]: r["status"] for r in (*doc["recommendations"], *doc["settings"])}


def test_readme_coverage_table_names_every_recommendation() -> None:
    table = _readme_section("Where each NIST SP 800-125B recommendation is covered")
    for rec in RECOMMENDATIONS:
        family, number = rec.id.rsplit("R", 1)
        ranges = [f"{family}R{a}..R{b}" for a in "1" for b in "34" if int(a) <= int(number) <= int(b)]
        assert rec.id in table or any(r in table for r in ranges), rec.id


# -- the command line -----------------------------------------------------------------------------
def test_bad_input_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        REFERENCE.read_text().replace(
            "dest: analyzer, direction: both", "dest: analyzer, direction: sideways"
        )
    )
    proc = nlab("audit", str(bad), "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["error"]["problems"] == [
        {
            "file": str(bad),
            "path": "mirrors.web1-ids.direction",
            "reason": "'sideways' is not one of: in, out, both",
        }
    ]
    assert f"{bad}: mirrors.web1-ids.direction: " in proc.stderr
    ghost = nlab("audit", env_lab="nosuchlab1")
    assert ghost.returncode == 2 and "lab 'nosuchlab1' (from $NLAB_LAB) is not up" in ghost.stderr


def test_exit_0_when_nothing_is_not_met() -> None:
    proc = nlab("audit", str(REPO / "tests" / "lab" / "two_vms.yaml"), "--json")
    doc = json.loads(proc.stdout)
    assert not_met(doc) == set() and not any(s["status"] == "not met" for s in doc["settings"])
    vn_r1 = by_id(doc["recommendations"])["VM-VN-R1"]  # one untagged trunk: no VLAN deployment
    assert vn_r1["status"] == "not applicable" and "untagged frames only" in vn_r1["reason"]
    assert proc.returncode == (3 if not_met(doc, firewall=True) else 0), proc.stderr
