"""A self-contained HTML timeline of a fault run: one SVG, no scripts, no external files.

Top to bottom: the verdict; one band per node showing its role over time as /status reported
it (leader, follower, candidate, down); the faults; one lane per client with every operation
as a bar from invocation to completion, coloured by outcome. Hovering a bar shows the
operation. Operations named by an anomaly are outlined in red and listed under the picture.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graft.testing.faults.checker import classify
from graft.testing.faults.history import NemesisEvent, OpRecord, StatusSample

PX_PER_SECOND = 40
LEFT = 90
ROW = 18
ROLE_COLOURS = {
    "leader": "#1b7f3b",
    "follower": "#c9d6e3",
    "candidate": "#f2c94c",
    "pre_candidate": "#f7e3a1",
    "precandidate": "#f7e3a1",
    "down": "#555555",
}
OUTCOME_COLOURS = {"ok": "#4caf50", "fail": "#b0b0b0", "unknown": "#ff9800"}


def _x(t: float) -> float:
    return LEFT + t * PX_PER_SECOND


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str, extra: str = "") -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 1.0):.1f}" height="{h:.1f}" '
        f'fill="{fill}" {extra}><title>{html.escape(title)}</title></rect>'
    )


def _describe(op: OpRecord) -> str:
    what = f"{op.kind} {op.key}"
    if op.kind == "get":
        what += f" ({op.consistency})"
    if op.kind == "cas":
        what += f" expect={op.expect!r}"
    if op.value is not None:
        what += f" value={op.value!r}"
    answer = json.dumps(op.output) if op.output is not None else op.error
    return (
        f"#{op.id} {op.client} -> {op.node}: {what}\n"
        f"{op.invoke:.3f}s .. {op.complete:.3f}s  status={op.status} index={op.index}\n{answer}"
    )


def render(
    history: Sequence[OpRecord],
    events: Sequence[NemesisEvent],
    samples: Sequence[StatusSample],
    verdict: dict[str, Any],
) -> str:
    end = max(
        [r.complete for r in history] + [e.end or e.start for e in events] + [s.t for s in samples]
        or [1.0]
    )
    width = _x(end) + 20
    flagged = {i for a in verdict.get("anomalies", []) for i in a.get("ops", [])}
    nodes = sorted({s.node for s in samples} | {r.node for r in history})
    clients = sorted({r.client for r in history})
    parts: list[str] = []
    y = 20.0
    # time axis
    for sec in range(int(end) + 1):
        x = _x(sec)
        parts.append(f'<line x1="{x}" y1="10" x2="{x}" y2="100%" stroke="#eee"/>')
        if sec % 5 == 0:
            parts.append(f'<text x="{x + 2}" y="12" font-size="10">{sec}s</text>')
    # node roles
    for node in nodes:
        parts.append(f'<text x="4" y="{y + 12}" font-size="11">{node}</text>')
        mine = sorted((s for s in samples if s.node == node), key=lambda s: s.t)
        for a, b in zip(mine, [*mine[1:], None], strict=False):
            t_end = b.t if b is not None else a.t + 0.1
            label = a.role if a.role == "down" else f"{a.role} term {a.term} leader {a.leader}"
            fill = ROLE_COLOURS.get(a.role, "#999")
            parts.append(_rect(_x(a.t), y, (t_end - a.t) * PX_PER_SECOND, ROW - 4, fill, label))
        y += ROW
    # faults
    y += 6
    parts.append(f'<text x="4" y="{y + 12}" font-size="11">faults</text>')
    for e in events:
        stop = e.end if e.end is not None else end
        parts.append(
            _rect(
                _x(e.start),
                y,
                (stop - e.start) * PX_PER_SECOND,
                ROW - 2,
                "#e57373",
                f"{e.kind}: {e.detail} ({e.start:.2f}s .. {stop:.2f}s)",
                'opacity="0.8"',
            )
        )
        parts.append(
            f'<text x="{_x(e.start) + 2:.1f}" y="{y + 12}" font-size="9">'
            f"{html.escape(e.kind)}</text>"
        )
    y += ROW + 8
    # clients
    for client in clients:
        parts.append(f'<text x="4" y="{y + 12}" font-size="11">{html.escape(client)}</text>')
        for op in (r for r in history if r.client == client):
            outcome = classify(op)
            extra = 'stroke="red" stroke-width="2"' if op.id in flagged else ""
            h = ROW - 4 if op.kind != "get" else (ROW - 4) / 2
            parts.append(
                _rect(
                    _x(op.invoke),
                    y + (0 if op.kind != "get" else (ROW - 4) / 2),
                    (op.complete - op.invoke) * PX_PER_SECOND,
                    h,
                    OUTCOME_COLOURS[outcome],
                    _describe(op),
                    extra,
                )
            )
        y += ROW
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{y + 10:.0f}" '
        f'font-family="sans-serif">{"".join(parts)}</svg>'
    )
    by_id = {r.id: r for r in history}
    rows = []
    for a in verdict.get("anomalies", []):
        ops = "".join(
            f"<li><pre>{html.escape(_describe(by_id[i]))}</pre></li>"
            for i in a["ops"]
            if i in by_id
        )
        rows.append(
            f"<li><b>{html.escape(a['kind'])}</b>: {html.escape(a['message'])}<ul>{ops}</ul></li>"
        )
    legend = " ".join(
        f'<span style="background:{c};padding:0 6px">{html.escape(k)}</span>'
        for k, c in [*ROLE_COLOURS.items(), *OUTCOME_COLOURS.items()]
    )
    state = "no anomalies" if verdict.get("ok") else f"{len(verdict['anomalies'])} anomalies"
    return (
        "<!doctype html><meta charset='utf-8'>"
        f"<title>graft fault run, seed {verdict.get('seed')}: {state}</title>"
        "<style>body{font-family:sans-serif;margin:1em}pre{margin:0}</style>"
        f"<h1>Fault run, seed {verdict.get('seed')}: {state}</h1>"
        f"<p>{legend}. Reads are the half-height bars; hover any bar for details.</p>"
        f'<div style="overflow-x:auto;border:1px solid #ccc">{svg}</div>'
        f"<h2>Anomalies</h2><ul>{''.join(rows) or '<li>none</li>'}</ul>"
        f"<h2>Verdict</h2><pre>{html.escape(json.dumps(verdict, indent=2))}</pre>"
    )


def write_timeline(
    path: Path,
    history: Sequence[OpRecord],
    events: Sequence[NemesisEvent],
    samples: Sequence[StatusSample],
    verdict: dict[str, Any],
) -> None:
    path.write_text(render(history, events, samples, verdict))
