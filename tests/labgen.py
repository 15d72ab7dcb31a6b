"""Generated topologies of any size, for the crash test and the scale benchmarks.

tor1 ---- hv1..hvN (eth0) ---- vs0 ---- vm0 .. vmK   (VMs spread round-robin over hosts)
"""

from __future__ import annotations

import yaml


def scale_topology(vms: int, hosts: int = 4, lab: str = "scale") -> str:
    """YAML text of `hosts` hosts on one switch, `vms` VMs spread evenly, one /16 subnet."""
    doc: dict = {
        "lab": lab,
        "description": f"{vms} VMs over {hosts} hosts",
        "switches": {"tor1": {}},
        "hosts": {
            f"hv{h}": {
                "pnics": {
                    "eth0": {"switch": "tor1", "driver": "virtio_net", "pci_bus": f"0000:{h:02x}:00.0"}
                },
                "vswitches": {"vs0": {"uplinks": ["eth0"]}},
            }
            for h in range(hosts)
        },
        "vms": {
            f"vm{i}": {
                "host": f"hv{i % hosts}",
                "nics": [{"vswitch": "vs0", "ip": f"10.99.{i // 250}.{i % 250 + 1}/16"}],
            }
            for i in range(vms)
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)
