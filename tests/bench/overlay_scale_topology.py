"""The overlay scale topology: N VXLAN segments over 4 hosts on one flat underlay subnet.

Segment i (VNI 100000 + i) has a NIC on two neighbouring hosts, hv(i % 4) and hv((i + 1) % 4),
so every host hosts N / 2 segments and has N / 2 remote MACs to know. The NICs belong to one VM
per host (vm0..vm3, a NIC per segment the host hosts): a VM namespace per NIC would make the
benchmark measure namespaces, not VNIs. Each segment is its own /24 (10.A.B.1 and .2).
"""

from __future__ import annotations

HOSTS = 4
VNI_BASE = 100000
PCI = '"0000:01:00.0"'


def segment_hosts(i: int) -> tuple[int, int]:
    return i % HOSTS, (i + 1) % HOSTS


def topology(lab: str, segments: int, mode: str = "controller") -> str:
    lines = [
        f"lab: {lab}",
        f"description: overlay scale, {segments} VNIs over {HOSTS} hosts",
        f"overlay: {{mode: {mode}}}",
        "segments:",
    ]
    lines += [f"  s{i}: {{vni: {VNI_BASE + i}, tenant: t}}" for i in range(segments)]
    lines += ["switches:", "  tor1: {}", "hosts:"]
    for h in range(HOSTS):
        lines += [
            f"  hv{h}:",
            "    vtep: eth0",
            "    pnics:",
            f"      eth0: {{switch: tor1, driver: virtio_net, pci_bus: {PCI}, ip: 10.255.0.{11 + h}/24}}",
        ]
    lines.append("vms:")
    nics: dict[int, list[str]] = {h: [] for h in range(HOSTS)}
    for i in range(segments):
        a, b = 1 + i // 256, i % 256
        for last, h in enumerate(segment_hosts(i), start=1):
            nics[h].append(f"      - {{segment: s{i}, ip: 10.{a}.{b}.{last}/24}}")
    for h in range(HOSTS):
        lines += [f"  vm{h}:", f"    host: hv{h}", "    nics:", *nics[h]]
    return "\n".join(lines) + "\n"
