"""Medians, the issue-8 targets as ratios, and the files a run leaves: JSON, Markdown, SVG."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.suite.failover import GIVE_UP_S
from benchmarks.suite.scenarios import WRITE_CONCURRENCY, median_of
from benchmarks.suite.svg import line_chart

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
    out_dir.mkdir(parents=True, exist_ok=True)
    med = result["medians"]
    paths = {
        "json": out_dir / f"{stem}.json",
        "md": out_dir / f"{stem}.md",
        "throughput": out_dir / f"{stem}-throughput.svg",
        "p50": out_dir / f"{stem}-latency-p50.svg",
        "p99": out_dir / f"{stem}-latency-p99.svg",
    }
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    paths["md"].write_text(markdown(result))
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
