"""A stand-in for `netns_lab.mirror` in a `nlab watch` subprocess, for the watch tests ONLY.

It serves taps built by the test itself on interfaces that are no session's destination (a VM's
own NIC, a host's trunk, a socket with a tiny buffer), so that `nlab watch --mirror` is tested
end to end there: sessions resolved, sockets opened in the namespaces, pcap written. Run as
`python -m tests.lab.watch_shim TAPS_JSON ARGS...`: installs itself as `netns_lab.mirror`, then
runs `nlab ARGS...`. Never imported by product code.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import asdict

import netns_lab
from netns_lab.mirror import Tap


def encode(taps: list[Tap]) -> str:
    return json.dumps([asdict(t) for t in taps])


def install(taps: list[Tap]) -> None:
    module = types.ModuleType("netns_lab.mirror")

    def taps_of(lab: str, session: str | None = None) -> list[Tap]:
        if session is not None and session not in {t.session for t in taps}:
            raise KeyError(session)
        return [t for t in taps if session is None or t.session == session]

    module.Tap = Tap  # type: ignore[attr-defined]
    module.taps = taps_of  # type: ignore[attr-defined]
    module.decapsulate = lambda frame: None  # type: ignore[attr-defined]
    sys.modules["netns_lab.mirror"] = module
    netns_lab.mirror = module  # type: ignore[attr-defined]  # `from netns_lab import mirror` reads this


if __name__ == "__main__":
    given = [Tap(**{**t, "sources": tuple(t["sources"])}) for t in json.loads(sys.argv[1])]
    install(given)
    from netns_lab.cli import main

    raise SystemExit(main(sys.argv[2:]))
