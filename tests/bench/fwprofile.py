"""Where the ns of the NIC firewall go: port_from_vm built with parts left out (-DNLAB_PROF_SKIP,
ebpf/include/prof.h), each variant loaded once, all measured in rotation with the empty floor.

    .venv/bin/python -m tests.bench.fwprofile [--rounds N]

Established: the kernel's mean of REPEAT warm iterations of an ACK of an open flow (untagged trunk
port, as test_fw_cost.py's repeat method), median over rounds. New flow: repeat=1 runs of a SYN,
the connection forgotten (through ct_reap) between runs, mean over rounds. A part's cost is the
full path minus the variant without it. Variants are wrong by construction (they skip state and
counters); none is ever attached. Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from ipaddress import ip_address

from dataplane import abi, fwpolicy, syscalls, testrun
from dataplane.firewall import Settings
from dataplane.switch import PortVlans, SwitchDataplane
from tests.bench import fwbench

PORT = 1
VLAN = 10
RULES = 100
REPEAT = 20_000
PROF = {
    "mirror": 0x01,
    "counters": 0x02,
    "clock": 0x04,
    "ct": 0x08,
    "policy": 0x10,
    "event": 0x20,
    "ct_new": 0x40,
    "rulehit": 0x80,
    "portsec": 0x100,
    "cache": 0x200,
}
ESTABLISHED = {
    "full": (),
    "- mirror": ("mirror",),
    "- counters": ("counters",),
    "- clock": ("clock",),
    "- portsec": ("portsec",),
    "- cache": ("cache",),
    "- ct lookup": ("ct",),
    "- mirror counters clock ct": ("mirror", "counters", "clock", "ct"),
}
NEW = {
    "full": (),
    "- event": ("event",),
    "- policy": ("policy",),
    "- ct insert": ("ct_new",),
    "- rule hit": ("rulehit",),
    "- event policy insert hit": ("event", "policy", "ct_new", "rulehit"),
}


@dataclass
class Variant:
    name: str
    dp: SwitchDataplane
    drain: fwbench.RingDrain | None = None


def load(parts: tuple[str, ...]) -> SwitchDataplane:
    dp = fwbench.load_dataplane(sum(PROF[p] for p in parts))
    dp.firewall.set_settings(Settings())
    dp.configure(PORT, PortVlans(allowed=frozenset({VLAN}), untagged=True, guard=True))
    dp.firewall.set_vnic(
        PORT, fwbench.VM_MAC, fwbench.ENDPOINT, True, False, True, [ip_address(fwbench.VM_IP)]
    )
    dp.firewall.install(fwpolicy.compile(fwbench.policy(RULES)))
    return dp


def forget_all(dp: SwitchDataplane) -> None:
    for key, _ in list(syscalls.map_items(dp.maps["conntrack"], abi.CtKey, abi.CtEntry)):
        dp.firewall.forget(key)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--new-rounds", type=int, default=2000)
    ap.add_argument("--only", choices=("established", "new"))
    args = ap.parse_args()
    dst = fwbench.peer(RULES)
    syn, synack, ack = (
        fwbench.tcp_frame(dst, "S"),
        fwbench.tcp_frame(dst, "SA", reply=True),
        fwbench.tcp_frame(dst, "A"),
    )
    sets = {"established": ESTABLISHED, "new": NEW}
    for flow, table in sets.items():
        if args.only and flow != args.only:
            continue
        variants = [Variant(name, load(parts)) for name, parts in table.items()]
        for v in variants:
            v.drain = fwbench.RingDrain(v.dp.maps["fw_events"])
        floor_fd = variants[0].dp.programs["nlab_empty"]
        ns: dict[str, list[float]] = {v.name: [] for v in variants}
        floor: list[float] = []
        try:
            if flow == "established":
                for v in variants:
                    forget_all(v.dp)
                    assert testrun.run(v.dp.programs["port_from_vm"], syn, ifindex=PORT).passed
                    testrun.run(v.dp.programs["port_to_vm"], synack, ifindex=PORT)
                for i in range(args.rounds):
                    floor.append(testrun.run(floor_fd, ack, ifindex=PORT, repeat=REPEAT).ns_per_run)
                    for v in variants[i % len(variants) :] + variants[: i % len(variants)]:
                        r = testrun.run(v.dp.programs["port_from_vm"], ack, ifindex=PORT, repeat=REPEAT)
                        assert r.passed, v.name
                        ns[v.name].append(r.ns_per_run)
                agg = statistics.median
            else:
                for i in range(args.new_rounds):
                    floor.append(testrun.run(floor_fd, syn, ifindex=PORT).ns_per_run)
                    for v in variants[i % len(variants) :] + variants[: i % len(variants)]:
                        forget_all(v.dp) if "ct_new" not in table[v.name] else None
                        r = testrun.run(v.dp.programs["port_from_vm"], syn, ifindex=PORT)
                        assert r.passed, v.name
                        ns[v.name].append(r.ns_per_run)
                        if i % 256 == 0 and v.drain:
                            v.drain.drain()
                agg = statistics.fmean
        finally:
            for v in variants:
                if v.drain:
                    v.drain.close()
                v.dp.close()
        f = agg(floor)
        full = agg(ns["full"])
        print(f"{flow}: floor {f:.1f} ns, full {full:.1f} ns ({full / f:.2f}x)")
        for name, samples in ns.items():
            x = agg(samples)
            print(f"  {name:<30} {x:7.1f} ns  {x / f:5.2f}x  part {full - x:6.1f} ns")


if __name__ == "__main__":
    main()
