"""Evidence of a check: the counters before and after it ran (JSON) and the frames it caused (pcap).

Counters are read, never reset: a snapshot is every port's verdict counters by reason and
direction on every switching node, every rule's hits and every mirror session's counters, and
the evidence of a check is the delta its own packets made (with whatever the lab's own traffic
added meanwhile: the lab is live).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dataplane.switch import SwitchDataplane
from netns_lab.features.firewall import live as fwlive
from netns_lab.features.mirror import live as mirror_live
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab.running import RunningLab
from netns_lab.lab.state import pin_dir
from netns_lab.observe.capture import Capture, Frame, PcapWriter
from netns_lab.topology import names

Snapshot = dict[str, Any]


def _node_counters(dp: SwitchDataplane, ifindexes: dict[str, int]) -> dict[str, dict[str, int]]:
    """Port -> {"ingress pass": packets, "egress spoof-mac": packets, ...} (non-zero only)."""
    found = {}
    for port, ifindex in sorted(ifindexes.items()):
        counts = dp.counters(ifindex)
        if counts:
            found[port] = {f"{d.name.lower()} {r.label}": c.packets for (d, r), c in sorted(counts.items())}
    return found


def snapshot(lab: RunningLab) -> Snapshot:
    ports: dict[str, Any] = {}
    for h in lab.hosts:
        ports[h.host] = _node_counters(h.dataplane, h.ifindexes)
    for sw in lab.topo.switches:
        with Netlink(names.namespace(lab.lab, sw.name)) as nl:
            ifindexes = {link.name: link.index for link in nl.links()}
        with SwitchDataplane.open(pin_dir(lab.lab) / sw.name) as dp:
            ports[sw.name] = _node_counters(dp, ifindexes)
    rules = {str(r): p for r, (p, _) in sorted(fwlive.rule_hits(lab).items())}
    mirrors = {name: s.packets for name, s in sorted(mirror_live.stats(lab).items())}
    return {"ports": ports, "rule_hits": rules, "mirror_packets": mirrors}


def delta(before: Snapshot, after: Snapshot) -> Snapshot:
    """What grew between two snapshots, in the same shape (zero deltas left out)."""

    def grown(a: Any, b: Any) -> Any:
        if isinstance(b, dict):
            found = {k: grown((a or {}).get(k), v) for k, v in b.items()}
            return {k: v for k, v in found.items() if v not in ({}, 0)}
        return b - (a or 0)

    return grown(before, after)


def port_delta(d: Snapshot, node: str, port: str) -> dict[str, int]:
    return dict(d.get("ports", {}).get(node, {}).get(port, {}))


def until(read: Callable[[], int], want: int, wait: float = 1.0) -> int:
    """`read()` once it reaches `want`, or after `wait` seconds (counters grow as frames pass)."""
    deadline = time.monotonic() + wait
    while (value := read()) < want and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


class Recorder:
    """The evidence of one check: captures on the given interfaces while it runs, counters
    around it; files `<check>.pcap` and `<check>.counters.json` in `folder` (None: counters only,
    kept in memory for the check's own judgement)."""

    def __init__(self, lab: RunningLab, folder: Path | None, check: str) -> None:
        self.lab, self.folder, self.check = lab, folder, check
        self.captures: list[Capture] = []
        self.before: Snapshot = {}
        self.delta: Snapshot = {}
        self.frames: list[tuple[Capture, Frame]] = []

    def capture(self, namespace: str, ifname: str, *, marked: bool = False) -> Capture:
        cap = Capture(namespace, ifname, marked=marked)
        self.captures.append(cap)
        return cap

    def start(self) -> None:
        self.before = snapshot(self.lab)

    def drain(self) -> None:
        for cap in self.captures:
            self.frames += [(cap, f) for f in cap.read(limit=1 << 20)]

    def frames_of(self, cap: Capture) -> list[Frame]:
        """What `cap` received so far (call `drain` first)."""
        return [f for c, f in self.frames if c is cap]

    def finish(self) -> dict[str, str]:
        """Close the captures, compute the delta; the files written, for the check's `evidence`."""
        self.drain()
        for cap in self.captures:
            cap.close()
        self.captures = []
        after = snapshot(self.lab)
        self.delta = delta(self.before, after)
        if self.folder is None:
            return {}
        files = {}
        counters = self.folder / f"{self.check}.counters.json"
        counters.write_text(
            json.dumps({"before": self.before, "after": after, "delta": self.delta}, indent=1)
        )
        files["counters"] = str(counters)
        if self.frames:
            pcap = self.folder / f"{self.check}.pcap"
            writer = PcapWriter(pcap.open("wb"))
            for _, frame in sorted(self.frames, key=lambda f: f[1].time_ns):
                writer.write(frame.time_ns, frame.data, frame.wire_len)
            writer.close()
            files["pcap"] = str(pcap)
        return files


def copy_as(files: dict[str, str], check: str) -> dict[str, str]:
    """The same evidence under another check's name (two checks judged from one round)."""
    found = {}
    for kind, path in files.items():
        src = Path(path)
        dst = src.with_name(check + "".join(src.suffixes))
        shutil.copyfile(src, dst)
        found[kind] = str(dst)
    return found


@contextlib.contextmanager
def recording(lab: RunningLab, folder: Path | None, check: str) -> Iterator[Recorder]:
    rec = Recorder(lab, folder, check)
    rec.start()
    try:
        yield rec
    finally:
        for cap in rec.captures:
            cap.close()
