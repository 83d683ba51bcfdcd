"""How the ``graft`` command shows things: tables, status and check rows, members, log
entries. Pure functions of the data (plus ``click.echo`` for the printers)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from graft.cluster_status import MemberStatus


def shown_path(path: Path) -> str:
    """A path relative to the working directory when it is below it, for shorter lines."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def print_output(body: bytes) -> None:
    """The FSM's answer for people: SQL results as a table, other JSON indented, else as is."""
    try:
        parsed = json.loads(body)
    except ValueError:
        click.echo(body.decode("utf-8", "replace").rstrip("\n"))
        return
    if isinstance(parsed, dict) and isinstance(parsed.get("results"), list):
        print_results(parsed["results"])
        return
    if (
        isinstance(parsed, dict)
        and isinstance(parsed.get("columns"), list)
        and isinstance(parsed.get("rows"), list)
        and parsed["columns"]
    ):
        rows = [[_cell(value) for value in row] for row in parsed["rows"]]
        click.echo(table([str(c) for c in parsed["columns"]], rows))
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
        return
    click.echo(json.dumps(parsed, indent=2, ensure_ascii=False))


def print_results(results: list[Any]) -> None:
    """The answer of the SQLite state machine's JSON form: per statement, a table of its rows,
    what it changed, or its error."""
    for number, result in enumerate(results, start=1):
        if len(results) > 1:
            click.echo(f"-- statement {number}")
        if not isinstance(result, dict):
            click.echo(json.dumps(result))
        elif "error" in result:
            click.echo(f"error: {result['error']}")
        elif isinstance(result.get("columns"), list) and isinstance(result.get("values"), list):
            rows = [[_cell(value) for value in row] for row in result["values"]]
            click.echo(table([str(c) for c in result["columns"]], rows))
            click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
        else:
            affected = result.get("rows_affected")
            line = f"{affected} row{'s' if affected != 1 else ''} affected"
            if result.get("last_insert_id") is not None:
                line += f", last insert id {result['last_insert_id']}"
            click.echo(line)


def failed_statements(body: bytes) -> list[int]:
    """The numbers of the statements that failed, in an answer of the JSON form."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return []
    results = parsed.get("results") if isinstance(parsed, dict) else None
    if not isinstance(results, list):
        return []
    return [n for n, r in enumerate(results, 1) if isinstance(r, dict) and "error" in r]


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


STATUS_COLUMNS = (
    "node",
    "member",
    "role",
    "term",
    "leader",
    "commit",
    "applied",
    "last index",
    "lag",
    "log",
    "fsm",
    "cert expires",
    "reachable",
)


def status_rows(
    members: Sequence[MemberStatus], membership: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One JSON-ready row per member. ``lag`` is the leader's view (its last index minus the
    member's match index) when the leader answered, else how far the member's applied index is
    behind the highest commit index seen. ``member`` is voter, non-voter or learner as
    ``membership`` (a GET /cluster/members answer) says, None without one."""
    leader_progress: Mapping[str, Any] = {}
    leader_id: str | None = None
    for member in members:
        if member.status and member.status.get("role") == "leader":
            leader_id = str(member.status.get("id", member.node))
            progress = member.status.get("progress")
            leader_progress = progress if isinstance(progress, Mapping) else {}
    commits = [m.status.get("commit") for m in members if m.status]
    top_commit = max((c for c in commits if isinstance(c, int)), default=None)
    rows: list[dict[str, Any]] = []
    for member in members:
        st = member.status
        kind = _member_kind(membership, member.node)
        if st is None:
            rows.append(
                {
                    "node": member.node,
                    "member": kind,
                    "url": member.url,
                    "reachable": False,
                    "error": member.error,
                }
            )
            continue
        node_id = str(st.get("id", member.node))
        lag: int | None = None
        if node_id == leader_id:
            lag = 0
        elif isinstance(leader_progress.get(node_id), Mapping):
            raw = leader_progress[node_id].get("lag")
            lag = raw if isinstance(raw, int) else None
        elif top_commit is not None and isinstance(st.get("applied"), int):
            lag = max(0, top_commit - st["applied"])
        rows.append(
            {
                "node": node_id,
                "member": _member_kind(membership, node_id),
                "url": member.url,
                "reachable": True,
                "role": st.get("role"),
                "term": st.get("term"),
                "leader": st.get("leader"),
                "commit": st.get("commit"),
                "applied": st.get("applied"),
                "last_index": st.get("last_index"),
                "lag": lag,
                "log_bytes": st.get("log_bytes"),
                "fsm_bytes": st.get("fsm_bytes"),
                "cert_expires": _certificate_expiry(st),
            }
        )
    return rows


def _member_kind(membership: Mapping[str, Any] | None, node: str) -> str | None:
    if membership is None:
        return None
    # non_voters first: they are learners too (the ones that stay learners).
    for key, kind in (("voters", "voter"), ("non_voters", "non-voter"), ("learners", "learner")):
        ids = membership.get(key)
        if isinstance(ids, list) and node in ids:
            return kind
    return None


def _certificate_expiry(status: Mapping[str, Any]) -> str | None:
    certificate = status.get("certificate")
    if isinstance(certificate, Mapping) and isinstance(certificate.get("not_after"), str):
        return str(certificate["not_after"])
    return None


# `graft status` exit codes beyond 0 (a leader, every member answered) and 1 (no member
# answered, or an error).
STATUS_UNREACHABLE_EXIT = 3  # a leader, but some member did not answer
STATUS_NO_LEADER_EXIT = 4  # no member that answered knows a leader


def status_problems(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], int]:
    """What is wrong, one line each, and the exit code it calls for (0: nothing)."""
    problems: list[str] = []
    code = 0
    for row in rows:
        if not row["reachable"]:
            kind = f"{row['member']} " if row.get("member") else ""
            problems.append(f"{kind}{row['node']} did not answer: {row.get('error')}")
            code = STATUS_UNREACHABLE_EXIT
    answered = [row for row in rows if row["reachable"]]
    leaders = {row.get("leader") for row in answered if row.get("leader")}
    if answered and not leaders:
        roles = ", ".join(f"{row['node']} {row.get('role')}" for row in answered)
        down = [row["node"] for row in rows if not row["reachable"]]
        why = (
            f"; {', '.join(down)} did not answer: a majority of the voters must be up and connected"
            if down
            else ": an election may be under way, or the voters cannot reach each other"
        )
        problems.append(f"no leader ({roles}){why}")
        code = STATUS_NO_LEADER_EXIT
    return problems, code


def human_bytes(size: Any) -> str:
    """1536 -> 1.5K: short sizes for the table (JSON keeps exact bytes)."""
    if not isinstance(size, int):
        return "-"
    value = float(size)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(size)


def render_status_table(rows: Sequence[Mapping[str, Any]]) -> str:
    def shown(value: Any) -> str:
        return "-" if value is None else str(value)

    cells = []
    for row in rows:
        member = shown(row.get("member"))
        if not row["reachable"]:
            cells.append([row["node"], member, "unreachable", *["-"] * 9, "no"])
            continue
        cells.append(
            [
                row["node"],
                member,
                *[shown(row[key]) for key in ("role", "term", "leader", "commit", "applied")],
                shown(row["last_index"]),
                shown(row["lag"]),
                human_bytes(row.get("log_bytes")),
                human_bytes(row.get("fsm_bytes")),
                shown(row.get("cert_expires")),
                "yes",
            ]
        )
    return table(list(STATUS_COLUMNS), cells)


def newest_check(members: Sequence[MemberStatus]) -> dict[str, Any] | None:
    """The result of the most recent consistency check any member reports in its status."""
    checks = [
        m.status["last_check"]
        for m in members
        if m.status and isinstance(m.status.get("last_check"), dict)
    ]
    return max(checks, key=lambda c: int(c.get("index", 0)), default=None)


def check_summary(result: Mapping[str, Any]) -> str:
    """One line: the check's index and verdict."""
    members = result.get("members") or {}
    given = sum(1 for m in members.values() if m.get("digest"))
    head = f"last replica check at index {result.get('index')}: "
    if result.get("mismatch"):
        return head + (
            f"MISMATCH, the FSM state of {', '.join(result['mismatch'])} differs from the "
            "others (the replicas diverged)"
        )
    if not result.get("ok"):
        return head + "no member gave a digest"
    verdict = f"{given} of {len(members)} members agree"
    return head + ("ok, " if result.get("complete") else "incomplete, ") + verdict


def check_rows(result: Mapping[str, Any]) -> list[list[str]]:
    odd = set(result.get("mismatch") or [])
    rows = []
    for node, answer in sorted((result.get("members") or {}).items()):
        digest = answer.get("digest")
        if digest is None:
            rows.append([node, "-", f"no digest: {answer.get('error')}"])
        else:
            rows.append([node, str(digest)[:16], "DIFFERS" if node in odd else "ok"])
    return rows


def membership_line(document: Mapping[str, Any]) -> str:
    def names(key: str) -> str:
        value = document.get(key)
        return ", ".join(map(str, value)) if isinstance(value, list) and value else "none"

    non_voters = ""
    if isinstance(document.get("non_voters"), list) and document["non_voters"]:
        non_voters = f" (non-voters {names('non_voters')})"
    return (
        f"voters {names('voters')}; learners {names('learners')}{non_voters}; "
        f"leader {document.get('leader') or 'unknown'}"
    )


def member_rows(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per member (voters, then learners) with its role and addresses; a learner in
    ``non_voters`` has the role non-voter."""
    leader = document.get("leader")
    addresses = document.get("addresses")
    addresses = addresses if isinstance(addresses, Mapping) else {}
    non_voters = document.get("non_voters")
    non_voters = non_voters if isinstance(non_voters, list) else []
    rows = []
    for key, role in (("voters", "voter"), ("learners", "learner")):
        ids = document.get(key)
        for member in ids if isinstance(ids, list) else []:
            non_voter = role == "learner" and member in non_voters
            role_here = "non-voter" if non_voter else role
            address = addresses.get(member)
            address = address if isinstance(address, Mapping) else {}
            rows.append(
                {
                    "id": member,
                    "role": "leader" if member == leader else role_here,
                    "host": address.get("host"),
                    "p2p": address.get("p2p"),
                    "api": address.get("api"),
                }
            )
    return rows


def print_members(document: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(document))
        return
    rows = [
        ["-" if row[key] is None else str(row[key]) for key in ("id", "role", "host", "p2p", "api")]
        for row in member_rows(document)
    ]
    click.echo(table(["id", "role", "host", "p2p", "api"], rows))


PREVIEW_CHARS = 60


def entry_preview(data: bytes) -> str:
    """A short one-line view of an entry's payload: text when it is text, else hex."""
    if not data:
        return ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        shown = data[: PREVIEW_CHARS // 2].hex()
        more = "..." if len(data) > PREVIEW_CHARS // 2 else ""
        return f"0x{shown}{more} ({len(data)} bytes)"
    text = json.dumps(text, ensure_ascii=False)[1:-1]  # escapes newlines and controls
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."
