"""The feature contract: the registry's order, the builder and the running lab knowing no
feature by name, and a live change as a transaction (all hosts or none, then recorded once)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from netns_lab.features import base, registry
from netns_lab.features.base import Feature, HostPlane
from netns_lab.lab import running
from netns_lab.topology import loader
from netns_lab.topology.errors import TopologyError

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO / "tests" / "lab" / "two_vms.yaml"


def test_registry_names_are_unique_and_each_feature_follows_what_it_requires() -> None:
    names = [f.name for f in registry.FEATURES]
    assert len(set(names)) == len(names) and names[:3] == ["vlan", "firewall", "mirror"]
    for i, feature in enumerate(registry.FEATURES):
        assert isinstance(feature, Feature)
        assert set(feature.requires) <= set(names[:i]), feature.name


def test_every_feature_implements_at_least_one_moment() -> None:
    hooks = [n for n, v in vars(Feature).items() if callable(v) and not n.startswith("_")]
    for feature in registry.FEATURES:
        assert any(getattr(type(feature), h) is not getattr(Feature, h) for h in hooks), feature.name


@pytest.mark.parametrize("module", ["lab/builder.py", "lab/running.py"])
def test_the_lab_calls_features_only_through_the_registry(module: str) -> None:
    tree = ast.parse((REPO / "netns_lab" / module).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    features = {m for m in imported if m.startswith("netns_lab.features")}
    assert features <= {"netns_lab.features.registry", "netns_lab.features.base"}, features


class _Recorder(Feature):
    def __init__(self, name: str, fail_on: str | None = None) -> None:
        self.name, self.fail_on, self.calls = name, fail_on, []

    def live_install(self, lab: base.LiveContext, host: HostPlane, old: Any, new: Any) -> None:
        self.calls.append(("install", host.host, len(old.firewall.rules), len(new.firewall.rules)))
        lab.memo(f"{self.name}.seen", list).append(host.host)
        if host.host == self.fail_on and len(new.firewall.rules) > len(old.firewall.rules):
            raise RuntimeError(f"{host.host} refused")

    def live_commit(self, lab: base.LiveContext, new: Any) -> None:
        self.calls.append(("commit", lab.memo(f"{self.name}.seen", list)))


class _State:
    def __init__(self) -> None:
        self.recorded: list[str] = []

    def replace_topology(self, text: str) -> None:
        self.recorded.append(text)


def _lab(features: list[Feature], monkeypatch: pytest.MonkeyPatch) -> running.RunningLab:
    monkeypatch.setattr(running, "FEATURES", tuple(features))
    lab = object.__new__(running.RunningLab)
    text = TOPOLOGY.read_text()
    lab.lab, lab.text, lab.state = "tc", text, _State()  # type: ignore[assignment]
    lab.topo = loader.load_text(text, str(TOPOLOGY), lab="tc")
    lab.hosts = [HostPlane(h, None, {}) for h in ("hva", "hvb")]  # type: ignore[arg-type]
    lab._txn = {}
    return lab


def _add_rule(data: dict[str, Any]) -> None:
    data.setdefault("firewall", {}).setdefault("rules", []).append(
        {"id": 77, "apply": "servers", "direction": "in", "peer": "any", "action": "allow"}
    )


def test_a_change_reaches_every_host_through_every_feature_then_is_recorded_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = _Recorder("first"), _Recorder("second")
    lab = _lab([first, second], monkeypatch)
    before = len(lab.topo.firewall.rules)
    new = lab.change(_add_rule)
    assert len(new.firewall.rules) == before + 1 and lab.topo is new
    step = ("install", before, before + 1)
    assert first.calls == [
        (step[0], "hva", *step[1:]),
        (step[0], "hvb", *step[1:]),
        ("commit", ["hva", "hvb"]),
    ]
    assert second.calls == first.calls
    assert len(lab.state.recorded) == 1 and "77" in lab.state.recorded[0]  # type: ignore[attr-defined]


def test_a_host_that_refuses_gets_nothing_recorded_and_the_hosts_done_get_the_old_topology_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good, picky = _Recorder("good"), _Recorder("picky", fail_on="hvb")
    lab = _lab([good, picky], monkeypatch)
    old_topo, old_text, n = lab.topo, lab.text, len(lab.topo.firewall.rules)
    with pytest.raises(RuntimeError, match="hvb refused"):
        lab.change(_add_rule)
    # hva took it from both, hvb from `good` only (then `picky` refused): both are put back
    expected = [("install", h, n, n + 1) for h in ("hva", "hvb")] + [
        ("install", h, n + 1, n) for h in ("hva", "hvb")
    ]
    assert good.calls == expected and picky.calls == expected
    assert lab.state.recorded == [] and lab.topo is old_topo and lab.text == old_text  # type: ignore[attr-defined]


def test_bad_input_is_refused_before_any_host_is_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    feature = _Recorder("f")
    lab = _lab([feature], monkeypatch)
    with pytest.raises(TopologyError):
        lab.change(lambda data: data["vms"].__setitem__("ghost", {"host": "nowhere", "nics": []}))
    assert feature.calls == [] and lab.state.recorded == []  # type: ignore[attr-defined]
