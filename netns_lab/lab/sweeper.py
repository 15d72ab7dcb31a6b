"""The connection sweeper of one hypervisor: deletes expired connection entries every few seconds.

The datapath deletes an expired entry only when a packet of its flow comes back; a flow that
simply stops would keep its entry, and its VM's quota share, until someone sweeps. A hypervisor
kernel does that itself; here one small process per hypervisor does, living in the hypervisor's
namespace, so the lab owns it like everything else (`nlab down` ends the processes of its
namespaces) and it ends by itself once the lab's pins are gone.

    python -m netns_lab.lab.sweeper --netns nist-hv1 --pins /sys/fs/bpf/netns-lab/nist/hv1 --interval 10

The deletes go through the kernel (`Firewall.gc` runs `ct_reap`), which checks each entry's age
again: a flow refreshed between the read and the delete stays.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

from dataplane.switch import SwitchDataplane
from netns_lab.kernel import netns
from netns_lab.lab import processes

log = logging.getLogger("netns_lab.lab.sweeper")


def start(lab: str, host: str, namespace: str, pins: Path, interval: int) -> subprocess.Popen[bytes]:
    """A sweeper for the dataplane pinned at `pins`, in `namespace` (see lab/processes.py)."""
    args = ["--netns", namespace, "--pins", str(pins), "--interval", str(interval)]
    return processes.spawn(lab, "netns_lab.lab.sweeper", args, f"sweeper-{host}")


stop = processes.stop


def sweep_forever(pins: Path, interval: float) -> None:
    dp = SwitchDataplane.open(pins)
    try:
        fw = dp.firewall
        while (pins / "conntrack").exists():
            removed = fw.gc()
            if removed:
                log.info("%s: %d expired connection entries removed", pins.name, removed)
            time.sleep(interval)
    finally:
        dp.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns_lab.lab.sweeper", description=__doc__.splitlines()[0])
    p.add_argument("--netns", required=True, help="the hypervisor's namespace, to live in")
    p.add_argument("--pins", required=True, type=Path, help="the hypervisor's dataplane pin directory")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between two sweeps")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sweeper %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        netns.enter(args.netns)
        sweep_forever(args.pins, args.interval)
    except (OSError, KeyboardInterrupt) as err:
        if (args.pins / "conntrack").exists():  # the lab is still up: say why we stop
            log.error("%s: stopped: %s", args.pins, err)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
