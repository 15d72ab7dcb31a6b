"""The on-disk journal of what a lab owns (no root: the state root is a temp dir)."""

from __future__ import annotations

import pytest

from netns_lab.lab import state


@pytest.fixture(autouse=True)
def state_root(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "STATE_ROOT", tmp_path)
    return tmp_path


def test_begin_claims_the_name_once() -> None:
    st = state.LabState.begin("lab1", "f.yaml", "lab: lab1\n")
    assert st.phase == state.PHASE_BUILDING and st.builder_alive()
    with pytest.raises(state.LabExists):
        state.LabState.begin("lab1", "f.yaml", "lab: lab1\n")
    assert state.labs() == ["lab1"]


def test_journal_keeps_order_and_survives_rereading() -> None:
    st = state.LabState.begin("lab1", "f.yaml", "text")
    for name in ("lab1-a", "lab1-b", "lab1-a"):
        st.record_namespace(name)
    again = state.LabState.read("lab1")
    assert again is not None and again.namespaces() == ["lab1-a", "lab1-b"]
    assert again.topology_text() == "text"


def test_mark_up_forgets_the_builder() -> None:
    st = state.LabState.begin("lab1", "f.yaml", "text")
    st.mark_up()
    again = state.LabState.read("lab1")
    assert again is not None and again.phase == state.PHASE_UP and not again.builder_alive()


def test_a_crash_before_lab_json_still_reads_as_building(state_root) -> None:
    (state_root / "lab2").mkdir()
    st = state.LabState.read("lab2")
    assert st is not None and st.phase == state.PHASE_BUILDING and st.namespaces() == []
    assert state.LabState.read("nothere") is None
