"""nftables rulesets inside a lab namespace, through the real `nft` binary."""

from __future__ import annotations

import json
import subprocess

from netns_lab.kernel import netns


class NftError(Exception):
    pass


def _nft(ns: str, args: list[str], stdin: str | None = None) -> str:
    # fork() copies the calling thread's namespaces, so nft runs inside `ns`.
    with netns.inside(ns):
        proc = subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NftError(proc.stderr.strip() or f"nft exited with {proc.returncode}")
    return proc.stdout


def load(ns: str, ruleset: str) -> None:
    """Load a ruleset atomically (nft -f applies a file as one transaction)."""
    _nft(ns, ["-f", "-"], stdin=ruleset)


def ruleset(ns: str, as_json: bool = False, handles: bool = False) -> str:
    """The ruleset of `ns`; `handles`: each rule followed by `# handle N`."""
    flags = (["-j"] if as_json else []) + (["-a"] if handles else [])
    return _nft(ns, [*flags, "list", "ruleset"])


def counters(ns: str) -> dict[str, tuple[int, int]]:
    """(packets, bytes) counted by each rule of `ns` that has a comment and a counter, by comment."""
    found: dict[str, tuple[int, int]] = {}
    for item in json.loads(ruleset(ns, as_json=True)).get("nftables", []):
        rule = item.get("rule")
        if rule and "comment" in rule:
            for expr in rule.get("expr", []):
                if "counter" in expr:
                    packets, nbytes = found.get(rule["comment"], (0, 0))
                    counted = expr["counter"]
                    found[rule["comment"]] = (packets + counted["packets"], nbytes + counted["bytes"])
    return found
