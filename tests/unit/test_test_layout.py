"""The suite's own layout: pytest imports tests/unit and tests/lab modules by their basename (those
folders are no packages), so two test files of one name in two folders make the second one fail to
collect, and only when both are collected together (as `make test` does)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_basename_of_its_own() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for folder in ("unit", "bpf", "lab"):
        for path in (TESTS / folder).glob("test_*.py"):
            where[path.name].append(folder)
    assert {name: folders for name, folders in where.items() if len(folders) > 1} == {}
