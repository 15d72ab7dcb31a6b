"""Mirror taps made up by a test for a `nlab watch` subprocess, for the watch tests ONLY.

It serves taps built by the test itself on interfaces that are no session's destination (a VM's
own NIC, a host's trunk, a socket with a tiny buffer), so that `nlab watch --mirror` is tested
end to end there: sessions resolved, sockets opened in the namespaces, pcap written. Run as
`python -m tests.lab.watch_shim TAPS_JSON ARGS...`: puts its taps in place of
`netns_lab.features.mirror.live.taps`, then runs `nlab ARGS...`. Never imported by product code.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from netns_lab.features.mirror import live
from netns_lab.features.mirror.plan import Tap


def encode(taps: list[Tap]) -> str:
    return json.dumps([asdict(t) for t in taps])


def install(taps: list[Tap]) -> None:
    def taps_of(lab: str, session: str | None = None) -> list[Tap]:
        if session is not None and session not in {t.session for t in taps}:
            raise KeyError(session)
        return [t for t in taps if session is None or t.session == session]

    live.taps = taps_of  # `nlab watch` looks the function up on the module when it resolves taps


if __name__ == "__main__":
    given = [Tap(**{**t, "sources": tuple(t["sources"])}) for t in json.loads(sys.argv[1])]
    install(given)
    from netns_lab.cli import main

    raise SystemExit(main(sys.argv[2:]))
