"""A flapping cable: the lab process of `nlab fail LINK --flap HZ`, in the switch's namespace
(so `nlab down` ends it with the lab), taking the switch's end of the cable down and up again
HZ times a second until it is stopped (`nlab heal`) or the lab's state is gone. It leaves the
end down or up as it was when stopped: `nlab heal` brings it up.

    python -m netns_lab.features.team.flap --lab nist --netns nist-tor1 --ifname hv1-eth0 --hz 10
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from netns_lab.kernel import netns
from netns_lab.kernel.netlink import Netlink
from netns_lab.lab.state import state_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns_lab.features.team.flap")
    p.add_argument("--lab", required=True)
    p.add_argument("--netns", required=True)
    p.add_argument("--ifname", required=True)
    p.add_argument("--hz", type=float, required=True)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    netns.enter(args.netns)
    half = 0.5 / args.hz
    alive = state_dir(args.lab)
    with Netlink(None) as nl:
        due = time.monotonic()
        while alive.exists():
            nl.down(args.ifname)
            due += half
            time.sleep(max(0.0, due - time.monotonic()))
            nl.up(args.ifname)
            due += half
            time.sleep(max(0.0, due - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
