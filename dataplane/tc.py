"""Attach and detach programs on the clsact hooks of a port (pyroute2 tc, in the port's namespace).

Callers pass an IPRoute already bound to the port's namespace: dataplane knows ports and
ifindexes, not namespaces or topologies. bcc never detaches TC filters: this module does.
"""

from __future__ import annotations

import errno
from typing import Any, Literal

from pyroute2.netlink.exceptions import NetlinkError

Hook = Literal["ingress", "egress"]
PARENT = {"ingress": "ffff:fff2", "egress": "ffff:fff3"}
HANDLE = 1  # one filter per hook: replacing it is atomic for packets in flight


def ensure_clsact(ipr: Any, ifindex: int) -> None:
    try:
        ipr.tc("add", "clsact", ifindex)
    except NetlinkError as err:
        if err.code != errno.EEXIST:
            raise


def attach(ipr: Any, ifindex: int, hook: Hook, fd: int, name: str) -> None:
    """Attach (or atomically replace) the direct-action program on a hook of the port."""
    ensure_clsact(ipr, ifindex)
    ipr.tc(
        "replace-filter",
        "bpf",
        ifindex,
        handle=HANDLE,
        fd=fd,
        name=name,
        parent=PARENT[hook],
        classid=1,
        direct_action=True,
        prio=1,
        protocol=0x0003,
    )


def detach(ipr: Any, ifindex: int) -> None:
    """Remove the clsact qdisc and with it every filter on both hooks; fine if already gone."""
    try:
        ipr.tc("del", "clsact", ifindex)
    except NetlinkError as err:
        if err.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            raise


def attached(ipr: Any, ifindex: int, hook: Hook) -> list[str]:
    """Names of the programs on a hook."""
    try:
        filters = ipr.get_filters(index=ifindex, parent=PARENT[hook])
    except NetlinkError:
        return []
    names = []
    for msg in filters:
        opts = msg.get("TCA_OPTIONS") or {}
        name = opts.get("TCA_BPF_NAME") if hasattr(opts, "get") else None
        if name:
            names.append(name)
    return names
