"""What a lab owns, recorded on disk as it is created, under /run/netns-lab/<lab>/.

The journal is written *before* each namespace is made, so a `kill -9` at any point leaves a
record that covers everything in the kernel: teardown reads it and deletes exactly those names,
never anything found by pattern.

    /run/netns-lab/<lab>/lab.json        lab name, topology source, builder pid, phase
    /run/netns-lab/<lab>/topology.yaml   the topology text the lab was built from
    /run/netns-lab/<lab>/namespaces      journal: one namespace name per line, in creation order
    /run/netns-lab/<lab>/code/<node>.json the instructions of a node's loaded dataplane (trace)
    /run/netns-lab/<lab>/events.sock     the event hub's socket (eventhub.py), with its .lock and .log
    /run/netns-lab/<lab>/<process>.log    the log of each lab process (sweeper-<host>, eventhub, ...)
    /run/netns-lab/<lab>/<record>.json    what a feature keeps between live changes (mirror-ids.json)

Every module writes these through this one: records and the topology copy are replaced
atomically (write, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netns_lab.topology.model import Topology

STATE_ROOT = Path(os.environ.get("NETNS_LAB_STATE", "/run/netns-lab"))
PIN_ROOT = Path("/sys/fs/bpf/netns-lab")

PHASE_BUILDING = "building"
PHASE_UP = "up"


class LabExists(Exception):
    pass


class NotRunning(Exception):
    """The lab has no state on this machine (never built, or taken down)."""


PART_FILE = "machine.json"  # {"machine", "links"} of one machine's part


def state_dir(lab: str) -> Path:
    return STATE_ROOT / lab


def pin_dir(lab: str) -> Path:
    return PIN_ROOT / lab


def code_file(lab: str, node: str) -> Path:
    """The instructions a switching node's dataplane was loaded with, for private copies."""
    return state_dir(lab) / "code" / f"{node}.json"


def log_path(lab: str, process: str) -> Path:
    """The log file of one of the lab's processes."""
    return state_dir(lab) / f"{process}.log"


def read_record(lab: str, name: str) -> Any:
    """A feature's record (`name`.json) of a running lab; None if it has none."""
    try:
        return json.loads((state_dir(lab) / f"{name}.json").read_text())
    except FileNotFoundError:
        return None


def write_record(lab: str, name: str, value: Any) -> None:
    _replace(state_dir(lab) / f"{name}.json", json.dumps(value, indent=2, sort_keys=True))


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def labs() -> list[str]:
    """Names of the labs that have state on this machine (up, building or crashed)."""
    if not STATE_ROOT.is_dir():
        return []
    return sorted(p.name for p in STATE_ROOT.iterdir() if p.is_dir())


def _proc_start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time since boot


@dataclass
class LabState:
    lab: str
    source: str
    phase: str
    pid: int | None = None
    pid_start: int | None = None
    created: float = 0.0

    @property
    def dir(self) -> Path:
        return state_dir(self.lab)

    @classmethod
    def begin(cls, lab: str, source: str, topology_text: str) -> LabState:
        """Claim the lab name; mkdir is atomic, so two `nlab up` of one lab cannot both win."""
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        try:
            state_dir(lab).mkdir()
        except FileExistsError:
            raise LabExists(lab) from None
        pid = os.getpid()
        state = cls(lab, source, PHASE_BUILDING, pid, _proc_start_time(pid), time.time())
        (state.dir / "topology.yaml").write_text(topology_text)
        (state.dir / "namespaces").touch()
        state.save()
        return state

    @classmethod
    def read(cls, lab: str) -> LabState | None:
        try:
            data = json.loads((state_dir(lab) / "lab.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            if state_dir(lab).is_dir():  # killed before lab.json was complete
                return cls(lab, "", PHASE_BUILDING)
            return None
        return cls(**data)

    def save(self) -> None:
        _replace(self.dir / "lab.json", json.dumps(self.__dict__, indent=2))

    def mark_up(self) -> None:
        self.phase = PHASE_UP
        self.pid = self.pid_start = None
        self.save()

    def record_namespace(self, name: str) -> None:
        with open(self.dir / "namespaces", "a") as journal:
            journal.write(name + "\n")

    def namespaces(self) -> list[str]:
        try:
            lines = (self.dir / "namespaces").read_text().splitlines()
        except FileNotFoundError:
            return []
        return list(dict.fromkeys(line for line in lines if line))

    def record_part(self, machine: str, links: dict[str, str]) -> None:
        """This lab is one machine's part of the recorded topology (topology/machines.py)."""
        _replace(self.dir / PART_FILE, json.dumps({"machine": machine, "links": links}))

    def part(self) -> tuple[str, dict[str, str]] | None:
        """(machine, links) of a machine's part; None for a whole lab."""
        try:
            doc = json.loads((self.dir / PART_FILE).read_text())
        except FileNotFoundError:
            return None
        return doc["machine"], doc["links"]

    def topology(self, text: str, source: str) -> Topology:
        """The lab's topology from `text` (its recorded one, or a change of it): one machine's
        part of it for a part."""
        from netns_lab.topology import loader, machines

        topo = loader.load_text(text, source, lab=self.lab)
        part = self.part()
        return topo if part is None else machines.part(topo, *part)

    def topology_text(self) -> str | None:
        try:
            return (self.dir / "topology.yaml").read_text()
        except FileNotFoundError:
            return None

    def replace_topology(self, text: str) -> None:
        """The running lab's topology after a live change that every host took."""
        _replace(self.dir / "topology.yaml", text)

    def builder_alive(self) -> bool:
        """Is the `nlab up` that is building this lab still running? (pid + start time, not name)."""
        return self.pid is not None and _proc_start_time(self.pid) == self.pid_start
