"""PNG plots drawn from benchmark results documents (bench.py), never from a live session: the
report redraws them from the JSON alone.

Each plot looks for the figures of the suites that measure it and is skipped when none ran:

- firewall-cost.png: ns per packet of our firewall against the rule count (test_fw_cost), and
  64-byte UDP delivered at 10k rules by ours, iptables and nftables against no filter (test_fw_traffic)
- placement.png: throughput and RTT per firewall placement (a result whose figures carry
  ``per_placement: {placement: {"gbps": x, "rtt_us": y}}``, or test_placement's ``figures``)
- mirror-cost.png: throughput of a mirrored VM and the fraction of copies delivered by load
- segmentation.png: VLAN vs VXLAN vs plain bridge, throughput and RTT (test_overlay_traffic; without
  it, test_vlan_traffic's VLAN dataplane vs plain bridge)
- failover.png: failover time per detection policy (figures ``failover_ms: {policy: ms | [ms]}``,
  or test_team_failover's results, one per policy, with ``detect_flip_ms``)
- lab-build.png: lab build time against size (test_scale, test_overlay_scale)
- ratios.png: every headline ratio of every suite, one bar each
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from netns_lab.features.compliance.report import bench

log = logging.getLogger(__name__)

Docs = list[dict[str, Any]]
PLOTS_DIR = "plots"
DPI = 90


def _pyplot() -> Any:
    import matplotlib  # heavy, and only the plots need it

    matplotlib.use("Agg")  # files only: no display on a lab machine
    import matplotlib.pyplot as plt

    return plt


def figures(docs: Docs, suite: str, name: str | None = None) -> dict[str, Any] | None:
    """The figures of result ``name`` (the first one when None) of ``suite``, if it ran."""
    for doc in docs:
        if doc.get("suite") != suite:
            continue
        for result in doc.get("results", []):
            if name is None or result.get("name") == name:
                return result.get("figures") or {}
    return None


def _with_key(docs: Docs, key: str) -> Iterable[tuple[str, dict[str, Any]]]:
    for doc in docs:
        for result in doc.get("results", []):
            figs = result.get("figures") or {}
            if isinstance(figs.get(key), dict) and figs[key]:
                yield f"{doc.get('suite')}: {result.get('name')}", figs[key]


def _value(v: Any) -> float | None:
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, list) and v and all(isinstance(x, int | float) for x in v):
        return float(statistics.median(v))
    return None


def _save(fig: Any, path: Path, *, tight: bool = True) -> Path:
    if tight:  # measures every label: seconds for a chart of a hundred bars
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


def firewall_cost(docs: Docs, plt: Any, path: Path) -> Path | None:
    cost, traffic = figures(docs, "test_fw_cost"), figures(docs, "test_fw_traffic")
    if not cost and not traffic:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    left, right = axes
    rows = (cost or {}).get("rows", [])
    for flow in ("new", "established"):
        for packet in ("first", "last"):
            line = sorted(
                (r["rules"], r["path_ns"])
                for r in rows
                if r.get("method") == "single" and r.get("flow") == flow and r.get("packet") == packet
            )
            if line:
                left.plot(*zip(*line, strict=True), marker="o", label=f"ours, {flow} flow ({packet} rule)")
    floors = sorted((r["rules"], r["floor_ns"]) for r in rows if r.get("method") == "single")
    if floors:
        left.plot(*zip(*floors, strict=True), linestyle=":", color="grey", label="empty TC program")
    left.set(xscale="log", xlabel="rules", ylabel="ns per packet (kernel test-run)")
    left.set_title("NIC firewall cost against rule count", fontsize=10)
    if rows:
        left.legend(fontsize=7)
    metrics = (traffic or {}).get("metrics", {}).get("udp_kpps", {})
    configs = [c for c in ("none", "ours", "iptables", "nft-linear", "nft-set") if c in metrics]
    if configs:
        bars = right.bar(configs, [metrics[c]["median"] for c in configs], color="#4c72b0")
        for bar, c in zip(bars, configs, strict=True):
            ratio = metrics[c].get("ratio")
            if ratio is not None:
                right.annotate(
                    f"{ratio:.2f}x",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    rules = (traffic or {}).get("rules", 10_000)
    right.set(ylabel="64-byte UDP delivered, kpps")
    right.set_title(f"{rules:,} rules on a veth: ours vs iptables vs nftables", fontsize=10)
    return _save(fig, path)


def _two_bars(
    plt: Any, path: Path, title: str, series: dict[str, dict[str, float]], units: dict[str, str]
) -> Path:
    fig, axes = plt.subplots(1, len(units), figsize=(4.5 * len(units), 3.5), squeeze=False)
    for ax, (metric, unit) in zip(axes[0], units.items(), strict=True):
        kinds = [k for k, v in series.items() if _value(v.get(metric)) is not None]
        ax.bar(kinds, [_value(series[k][metric]) for k in kinds], color="#55a868")
        ax.set(ylabel=unit)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def placement(docs: Docs, plt: Any, path: Path) -> Path | None:
    found = next(iter(_with_key(docs, "per_placement")), None)
    if found is None:  # test_placement records `nlab placement compare`'s document
        series = (figures(docs, "test_placement") or {}).get("figures")
        found = ("test_placement", series) if isinstance(series, dict) and series else None
    if found is None:
        return None
    source, series = found
    return _two_bars(
        plt, path, f"per firewall placement ({source})", series, {"gbps": "TCP Gbit/s", "rtt_us": "RTT µs"}
    )


def mirror_cost(docs: Docs, plt: Any, path: Path) -> Path | None:
    figs = figures(docs, "test_mirror_traffic")
    if not figs:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    gbps = figs.get("throughput", {}).get("gbps", {})
    left.bar(list(gbps), list(gbps.values()), color="#8172b2")
    left.set(ylabel="TCP Gbit/s of the mirrored VM")
    left.set_title("throughput, mirrored both ways", fontsize=10)
    rows = figs.get("copies", {}).get("rows", [])
    if rows:
        right.plot([r["offered_kpps"] for r in rows], [r["fraction"] for r in rows], marker="o")
    right.set(xlabel="offered kpps", ylabel="copies delivered / packets sent", ylim=(0, 1.05))
    right.set_title("mirror copies delivered by load", fontsize=10)
    return _save(fig, path)


def segmentation(docs: Docs, plt: Any, path: Path) -> Path | None:
    """VXLAN vs VLAN vs plain bridge when the overlay traffic benchmark ran, else (a quick run)
    the VLAN dataplane vs a plain bridge across hosts."""
    median = (figures(docs, "test_overlay_traffic") or {}).get("median")
    if median:
        kinds = ("vxlan", "vlan", "plain")
        series = {k: {m: median.get(m, {}).get(k) for m in ("gbps", "rtt_us")} for k in kinds}
        title = "VM to VM across two hosts: VXLAN vs VLAN vs plain bridge"
    else:
        paths = (figures(docs, "test_vlan_traffic") or {}).get("paths", {}).get("cross-host")
        if not paths:
            return None
        series = {
            kind: {m: paths.get(m, {}).get(side) for m in ("gbps", "rtt_us")}
            for kind, side in (("vlan (ours)", "ours"), ("plain bridge", "plain"))
        }
        title = "VM to VM across two hosts: VLAN dataplane vs plain bridge"
    return _two_bars(plt, path, title, series, {"gbps": "TCP Gbit/s", "rtt_us": "RTT µs (mean)"})


def failover(docs: Docs, plt: Any, path: Path) -> Path | None:
    found = next(iter(_with_key(docs, "failover_ms")), None)
    if found is not None:
        source, by_policy = found
        series = {policy: {"ms": v} for policy, v in by_policy.items()}
    else:  # test_team_failover records one result per detection policy, named after it
        source = "test_team_failover"
        series = {
            str(r.get("name")).removeprefix("team failover: "): {
                "ms": (r.get("figures") or {}).get("detect_flip_ms")
            }
            for doc in docs
            if doc.get("suite") == source
            for r in doc.get("results", [])
            if not r.get("ratios")
        }
        if not any(_value(v["ms"]) is not None for v in series.values()):
            return None
    return _two_bars(plt, path, f"failover time per detection policy ({source})", series, {"ms": "ms"})


def lab_build(docs: Docs, plt: Any, path: Path) -> Path | None:
    scale, overlay = figures(docs, "test_scale"), figures(docs, "test_overlay_scale")
    if not scale and not overlay:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.8))
    rows = (scale or {}).get("rows", [])
    for impl, key in (("nlab up", "ours_ms"), ("one ip -batch", "batch_ms")):
        line = [(r["vms"], r["up"][key] / 1e3) for r in rows if r.get("up", {}).get(key) is not None]
        if line:
            ax.plot(*zip(*line, strict=True), marker="o", label=f"{impl}, VMs on 4 hosts")
    seg = [(r["segments"], r["up_s"]) for r in (overlay or {}).get("rows", [])]
    if seg:
        ax.plot(*zip(*seg, strict=True), marker="s", label="nlab up, VXLAN segments on 4 hosts")
    ax.set(xlabel="VMs or segments", ylabel="seconds to build")
    ax.set_title("lab build time against size", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def ratios(docs: Docs, plt: Any, path: Path) -> Path | None:
    bars = [
        (f"{doc.get('suite', '?').removeprefix('test_')}: {name}", float(value))
        for doc in docs
        for result in doc.get("results", [])
        for name, value in (result.get("ratios") or {}).items()
        if isinstance(value, int | float) and value > 0
    ]
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(bars) + 1.2))
    ax.barh([b[0] for b in bars], [b[1] for b in bars], color="#c44e52")
    ax.set_xscale("log")  # ratios of 0.05 and of 20 side by side
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_ylim(len(bars) - 0.5, -0.5)  # first bar on top, no blank rows
    ax.tick_params(axis="y", labelsize=7)
    ax.set(xlabel="ratio (see each suite's baseline)")
    ax.set_title("headline ratios, one run", fontsize=10)
    inches = fig.get_size_inches()[1]
    fig.subplots_adjust(left=0.5, right=0.97, top=1 - 0.45 / inches, bottom=0.6 / inches)
    return _save(fig, path, tight=False)


PLOTS: dict[str, Callable[[Docs, Any, Path], Path | None]] = {
    "firewall-cost": firewall_cost,
    "placement": placement,
    "mirror-cost": mirror_cost,
    "segmentation": segmentation,
    "failover": failover,
    "lab-build": lab_build,
    "ratios": ratios,
}


def draw(docs: Docs, out: Path) -> list[Path]:
    """Every plot the documents have figures for, as out/<plot>.png; the files written."""
    if not docs:
        return []
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    for name, plot in PLOTS.items():
        try:
            path = plot(docs, plt, out / f"{name}.png")
        except (KeyError, TypeError, ValueError) as err:  # figures of an older or other shape
            log.warning("plot %s skipped: %s", name, err)
            plt.close("all")
            continue
        if path is not None:
            drawn.append(path)
    return drawn


def plots(results_dir: Path, out: Path | None = None) -> list[Path]:
    """Redraw the plots of the results in ``results_dir`` into ``out`` (default results_dir/plots)."""
    return draw(bench.load(results_dir), out or results_dir / PLOTS_DIR)
