"""Medians, the issue-8 targets as ratios, and the files a run leaves: JSON, Markdown, SVG."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.suite.failover import GIVE_UP_S
from benchmarks.suite.scenarios import WRITE_CONCURRENCY, median_of
from benchmarks.suite.svg import line_chart, panels

LOAD_KEYS = ("ok_per_s", "p50_ms", "p99_ms", "entries_per_s")


def medians(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for system, scenarios in runs.items():
        for scenario, reps in scenarios.items():
            if scenario == "failover":
                # a trial with no successful write counts as the give-up time, not as missing
                values = [
                    {
                        "unavailable_ms": r["unavailable_ms"]
                        if r["unavailable_ms"] is not None
                        else GIVE_UP_S * 1000
                    }
                    for r in reps
                ]
                figures = {"unavailable_ms": median_of(values, "unavailable_ms")}
            else:
                figures = {k: median_of(reps, k) for k in LOAD_KEYS if k in reps[0]}
            figures["runs"] = len(reps)
            out.setdefault(system, {})[scenario] = figures
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    name: str
    graft: float | None
    reference_name: str
    reference: float | None
    unit: str
    ratio: float | None  # graft / reference
    want: str  # ">= 0.75" or "<= 1.0"
    met: bool | None  # None: a figure is missing


def _ceiling(med: dict[str, dict[str, Any]], scenario: str, c: int) -> tuple[str, str, str]:
    """The Klein figure to compare with: the one paired with this load if it was measured."""
    paired = f"paired_graft_{scenario}"
    if paired in med.get("klein", {}):
        return ("klein", paired, "ok_per_s")
    return ("klein", f"ceiling_c{c}", "ok_per_s")


def _target(
    name: str,
    med: dict[str, dict[str, Any]],
    graft: tuple[str, str, str],
    reference: tuple[str, str, str],
    unit: str,
    bound: float,
    at_least: bool,
) -> Target:
    g = med.get(graft[0], {}).get(graft[1], {}).get(graft[2])
    r = med.get(reference[0], {}).get(reference[1], {}).get(reference[2])
    ratio = round(g / r, 3) if g is not None and r else None
    met = None if ratio is None else (ratio >= bound if at_least else ratio <= bound)
    return Target(
        name=name,
        graft=g,
        reference_name=f"{reference[0]} {reference[1]}",
        reference=r,
        unit=unit,
        ratio=ratio,
        want=f"{'>=' if at_least else '<='} {bound}",
        met=met,
    )


def targets(med: dict[str, dict[str, Any]]) -> list[Target]:
    out = []
    for c in (16, 64):
        writes = ("graft", f"write_c{c}", "ok_per_s")
        for against, reference, bound in (
            ("Klein ceiling", _ceiling(med, f"write_c{c}", c), 0.75),
            ("PySyncObj (no fsync)", ("pysyncobj", f"write_c{c}", "ok_per_s"), 1.3),
            ("etcd (stretch)", ("etcd", f"write_c{c}", "ok_per_s"), 1.0),
        ):
            out.append(
                _target(f"writes c={c} vs {against}", med, writes, reference, "req/s", bound, True)
            )
    # name, scenario and figure (Graft's; etcd's unless a reference is given), unit, bound,
    # higher is better
    rows: list[tuple[str, str, str, tuple[str, str, str] | None, str, float, bool]] = [
        ("write p50 at c=1 vs etcd", "write_c1", "p50_ms", None, "ms", 1.0, False),
        (
            "strong reads c=16 over 3 nodes vs etcd linearizable",
            "read_strong_c16",
            "ok_per_s",
            None,
            "req/s",
            1.0,
            True,
        ),
        (
            "default reads c=16 on the leader vs Klein ceiling",
            "read_default_c16",
            "ok_per_s",
            _ceiling(med, "read_default_c16", 16),
            "req/s",
            0.8,
            True,
        ),
        (
            "batches of 100 at c=16 vs etcd txn of 100 puts",
            "batch100_c16",
            "entries_per_s",
            None,
            "entries/s",
            1.5,
            True,
        ),
    ]
    for name, scenario, figure, given, unit, bound, at_least in rows:
        out.append(
            _target(
                name,
                med,
                ("graft", scenario, figure),
                given or ("etcd", scenario, figure),
                unit,
                bound,
                at_least,
            )
        )
    failover = _target(
        "failover unavailability vs etcd",
        med,
        ("graft", "failover", "unavailable_ms"),
        ("etcd", "failover", "unavailable_ms"),
        "ms",
        1.0,
        False,
    )
    graft_ms = failover.graft
    absolute_ok = graft_ms is not None and graft_ms <= 1000
    out.append(failover)
    out.append(
        Target(
            name="failover unavailability <= 1 s",
            graft=graft_ms,
            reference_name="1000 ms",
            reference=1000.0,
            unit="ms",
            ratio=None if graft_ms is None else round(graft_ms / 1000, 3),
            want="<= 1.0",
            met=None if graft_ms is None else absolute_ok,
        )
    )
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Benchmark run {result['started']}", ""]
    m = result["machine"]
    if not result["medians"]:
        return _growth_only_markdown(result, lines)
    lines += [
        f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"kernel {m['kernel']}, data on {m['data_filesystem']}; fsync of a 4 KiB append "
        f"p50 {m['fsync']['p50_ms']} ms, p99 {m['fsync']['p99_ms']} ms. Load average "
        f"(1 min, 5 min) at start {m['load_average_at_start']}, at end "
        f"{m.get('load_average_at_end')}: other work on the machine shares the cores.",
        f"Each load ran {result['settings']['seconds']} s; figures are medians of "
        f"{result['settings']['repetitions']} runs.",
        "",
        "## Targets (issue 8)",
        "",
        "| target | Graft | reference | ratio | wanted | met |",
        "|---|---:|---:|---:|---:|:--:|",
    ]
    for t in result["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(
            f"| {t['name']} | {_fmt(t['graft'])} {t['unit']} | {t['reference_name']}: "
            f"{_fmt(t['reference'])} | {_fmt(t['ratio'])} | {t['want']} | {met} |"
        )
    lines += [
        "",
        "## All medians",
        "",
        "| system | scenario | req/s | entries/s | p50 ms | p99 ms | unavailable ms | runs |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for system, scenarios in result["medians"].items():
        for scenario, f in scenarios.items():
            lines.append(
                f"| {system} | {scenario} | {_fmt(f.get('ok_per_s'))} | "
                f"{_fmt(f.get('entries_per_s'))} | {_fmt(f.get('p50_ms'))} | "
                f"{_fmt(f.get('p99_ms'))} | {_fmt(f.get('unavailable_ms'))} | {f['runs']} |"
            )
    for system, error in result.get("errors", {}).items():
        lines += ["", f"**{system} stopped early**: {error}; its later figures are missing."]
    if result.get("growth"):
        lines += growth_markdown(result["growth"])
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in result["versions"].items()]
    lines += ["", "PySyncObj's journal is never fsynced: its writes are not durable.", ""]
    return "\n".join(lines)


def _series(med: dict[str, dict[str, Any]], key: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for system, scenarios in med.items():
        points = []
        for c in WRITE_CONCURRENCY:
            if system == "klein":
                # the ceiling paired with Graft's load when there is one (same background)
                names = [f"paired_graft_write_c{c}", f"ceiling_c{c}"]
            else:
                names = [f"write_c{c}"]
            value = next(
                (scenarios[n][key] for n in names if scenarios.get(n, {}).get(key) is not None),
                None,
            )
            if value is not None:
                points.append((float(c), float(value)))
        if points:
            label = "Klein ceiling (no Raft)" if system == "klein" else system
            out[label] = points
    return out


def write_files(result: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """The results file, its Markdown, and the plots of what ran: the write plots when short
    scenarios ran, ``<stem>-growth.svg`` (or ``<stem>.svg`` for a growth-only run, whose stem
    already ends in -growth) when the growth scenario did."""
    out_dir.mkdir(parents=True, exist_ok=True)
    med = result["medians"]
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    paths["md"].write_text(markdown(result))
    if result.get("growth"):
        name = f"{stem}.svg" if stem.endswith("-growth") else f"{stem}-growth.svg"
        paths["growth"] = out_dir / name
        paths["growth"].write_text(growth_svg(result["growth"]))
    if not med:
        return list(paths.values())
    paths["throughput"] = out_dir / f"{stem}-throughput.svg"
    paths["p50"] = out_dir / f"{stem}-latency-p50.svg"
    paths["p99"] = out_dir / f"{stem}-latency-p99.svg"
    paths["throughput"].write_text(
        line_chart(
            "Writes, one command per request",
            "concurrency (connections)",
            "acknowledged req/s",
            _series(med, "ok_per_s"),
        )
    )
    paths["p50"].write_text(
        line_chart("Write latency p50", "concurrency (connections)", "ms", _series(med, "p50_ms"))
    )
    paths["p99"].write_text(
        line_chart("Write latency p99", "concurrency (connections)", "ms", _series(med, "p99_ms"))
    )
    return list(paths.values())


def as_dicts(items: list[Target]) -> list[dict[str, Any]]:
    return [asdict(t) for t in items]


# -- growth ---------------------------------------------------------------------------------

GROWTH_FLAT = 0.9  # last minute's throughput at least this share of the first minute's
GROWTH_P99_VS_ETCD = 1.5  # Graft's last-minute p99 at most this multiple of etcd's


def growth_targets(growth: dict[str, dict[str, Any]]) -> list[Target]:
    """Issue 16's growth targets for each Graft system that ran: throughput flat from the
    first minute to the last, and the last minute's p99 against etcd's."""
    out = []
    etcd = growth.get("etcd", {}).get("summary", {})
    for system in (s for s in growth if s.startswith("graft")):
        summary = growth[system].get("summary", {})
        first, last = summary.get("first_ok_per_s"), summary.get("last_ok_per_s")
        ratio = summary.get("last_over_first")
        out.append(
            Target(
                name=f"growth {system}: last minute's throughput vs its first",
                graft=last,
                reference_name=f"{system} first minute",
                reference=first,
                unit="req/s",
                ratio=ratio,
                want=f">= {GROWTH_FLAT}",
                met=None if ratio is None else ratio >= GROWTH_FLAT,
            )
        )
        p99, etcd_p99 = summary.get("last_p99_ms"), etcd.get("last_p99_ms")
        p99_ratio = round(p99 / etcd_p99, 3) if p99 is not None and etcd_p99 else None
        out.append(
            Target(
                name=f"growth {system}: last minute's p99 vs etcd's",
                graft=p99,
                reference_name="etcd last minute",
                reference=etcd_p99,
                unit="ms",
                ratio=p99_ratio,
                want=f"<= {GROWTH_P99_VS_ETCD}",
                met=None if p99_ratio is None else p99_ratio <= GROWTH_P99_VS_ETCD,
            )
        )
    return out


def _nodes(values: dict[str, float | None] | None) -> str:
    if not values:
        return "n/a"
    return " / ".join(_fmt(v) for v in values.values())


def growth_markdown(growth: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["", "## Growth: writes of new keys, per minute", ""]
    lines += [
        "| target (issue 16) | Graft | reference | ratio | wanted | met |",
        "|---|---:|---:|---:|---:|:--:|",
    ]
    for t in growth_targets(growth):
        met = {True: "yes", False: "**no**", None: "n/a"}[t.met]
        lines.append(
            f"| {t.name} | {_fmt(t.graft)} {t.unit} | {t.reference_name}: "
            f"{_fmt(t.reference)} | {_fmt(t.ratio)} | {t.want} | {met} |"
        )
    systems = list(growth)
    minutes = max((len(g.get("minutes", [])) for g in growth.values()), default=0)
    lines += ["", "Side by side (req/s, p99 ms, data dir of the three nodes MB):", ""]
    lines.append("| minute | " + " | ".join(systems) + " |")
    lines.append("|---:|" + "---:|" * len(systems))
    for m in range(minutes):
        cells = []
        for system in systems:
            rows = growth[system].get("minutes", [])
            if m < len(rows):
                r = rows[m]
                cells.append(
                    f"{_fmt(r['ok_per_s'])}, {_fmt(r['p99_ms'])}, {_fmt(r['data_total_mb'])}"
                )
            else:
                cells.append("")
        lines.append(f"| {m + 1} | " + " | ".join(cells) + " |")
    for system, g in growth.items():
        lines += [
            "",
            f"### {system}",
            "",
            f"c={g['concurrency']}, {g['seconds']} s in loads of {g['interval_s']} s; load "
            f"average (1 min, 5 min) {g['load_average_start']} at the start, "
            f"{g.get('load_average_end')} at the end.",
            "",
            "| minute | req/s | p50 ms | p99 ms | failures | RSS MB per node (end) | "
            "RSS MB per node (peak) | data MB per node | data MB total |",
            "|---:|---:|---:|---:|---:|---|---|---|---:|",
        ]
        for r in g.get("minutes", []):
            lines.append(
                f"| {r['minute']} | {_fmt(r['ok_per_s'])} | {_fmt(r['p50_ms'])} | "
                f"{_fmt(r['p99_ms'])} | {r['failures']} | {_nodes(r['rss_mb'])} | "
                f"{_nodes(r['rss_max_mb'])} | {_nodes(r['data_mb'])} | "
                f"{_fmt(r['data_total_mb'])} |"
            )
        if g.get("error"):
            lines += ["", f"**Stopped early**: {g['error']}"]
    return lines


def _growth_only_markdown(result: dict[str, Any], lines: list[str]) -> str:
    m = result["machine"]
    lines.append(
        f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"kernel {m['kernel']}, data on {m['data_filesystem']}; fsync of a 4 KiB append "
        f"p50 {m['fsync']['p50_ms']} ms, p99 {m['fsync']['p99_ms']} ms. Load average "
        f"(1 min, 5 min) at start {m['load_average_at_start']}, at end "
        f"{m.get('load_average_at_end')}."
    )
    lines += growth_markdown(result.get("growth", {}))
    for system, error in result.get("errors", {}).items():
        lines += ["", f"**{system} stopped early**: {error}"]
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in result["versions"].items()]
    return "\n".join(lines) + "\n"


def _largest(values: dict[str, float | None] | None) -> float | None:
    present = [v for v in (values or {}).values() if v is not None]
    return max(present) if present else None


def growth_series(
    growth: dict[str, dict[str, Any]], figure: Any
) -> dict[str, list[tuple[float, float]]]:
    """{system: [(minute, value), ...]} of ``figure(row)`` where it is not None."""
    out: dict[str, list[tuple[float, float]]] = {}
    for system, g in growth.items():
        points = []
        for row in g.get("minutes", []):
            value = figure(row)
            if value is not None:
                points.append((float(row["minute"]), float(value)))
        if points:
            out[system] = points
    return out


def growth_svg(growth: dict[str, dict[str, Any]]) -> str:
    """Four panels over the minutes: throughput, p99, the largest node's RSS, data on disk."""
    interval = next((g.get("interval_s") for g in growth.values()), 60)
    x_label = "minute" if interval == 60 else f"interval of {interval} s"
    charts = [
        line_chart(
            "Throughput per minute (new keys, c=16)",
            x_label,
            "acknowledged req/s",
            growth_series(growth, lambda r: r["ok_per_s"]),
            log_x=False,
        ),
        line_chart(
            "Write latency p99 per minute",
            x_label,
            "ms",
            growth_series(growth, lambda r: r["p99_ms"]),
            log_x=False,
        ),
        line_chart(
            "RSS of the largest node (peak in the minute)",
            x_label,
            "MB",
            growth_series(growth, lambda r: _largest(r["rss_max_mb"])),
            log_x=False,
        ),
        line_chart(
            "Data dirs of the three nodes on disk",
            x_label,
            "MB",
            growth_series(growth, lambda r: r["data_total_mb"]),
            log_x=False,
        ),
    ]
    return panels(charts, columns=2)
