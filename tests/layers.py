"""The import rules between Graft's layers, checked on the source (``make lint`` runs it).

    python -m tests.layers        # exit 1 and one line per broken rule

Every module under graft/ is parsed (never imported) and each of its imports, wherever it
stands (top level, in a function, under TYPE_CHECKING), is checked against the rules below:

- the Raft core (graft.raft) imports nothing of Graft outside graft.raft, and none of Twisted,
  os, socket, time, random (it is pure: the driver gives it ticks, storage and an Rng);
- the HTTP API (graft.api) imports neither graft.storage nor graft.transport (it reaches them
  through the driver);
- no product module (anything outside graft.testing) imports graft.testing: the harnesses
  (simulation, fault suite, test clusters) are used by tests, benchmarks and ``make``
  targets only, and are left out of the wheel;
- the Python client (graft.client and its graft.client_* modules) imports no Twisted and no
  node-side layer: it runs in the user's program, standard library only.

Imports built from strings (importlib) are not seen.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Rule:
    """Modules under ``layer`` may not import anything under ``forbidden`` (``allowed`` wins)."""

    layer: str
    forbidden: tuple[str, ...]
    why: str
    allowed: tuple[str, ...] = ()
    exempt: tuple[str, ...] = ()  # modules under ``layer`` the rule does not apply to


RULES = (
    Rule(
        layer="graft.raft",
        forbidden=("graft", "twisted", "os", "socket", "time", "random"),
        allowed=("graft.raft",),
        why="the core is pure: only graft.raft and side-effect-free standard modules",
    ),
    Rule(
        layer="graft.api",
        forbidden=("graft.storage", "graft.transport"),
        why="the API reaches storage and peers only through the driver",
    ),
    Rule(
        layer="graft",
        forbidden=("graft.testing",),
        exempt=("graft.testing",),
        why="the product never imports a test harness",
    ),
    *(
        Rule(
            layer=module,
            forbidden=("twisted", "klein", "graft"),
            allowed=(
                "graft.client",
                "graft.client_errors",
                "graft.client_requests",
                "graft.client_sessions",
                "graft.sql_form",
            ),
            why="the client runs in the user's program: standard library only",
        )
        for module in (
            "graft.client",
            "graft.client_errors",
            "graft.client_requests",
            "graft.client_sessions",
        )
    ),
)


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything the module imports. ``from a import b`` yields
    ``a.b`` (b may be a module), ``from a import *`` yields ``a``."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                yield node.lineno, source if alias.name == "*" else f"{source}.{alias.name}"


def violations(root: Path = REPO) -> list[str]:
    """One line per import that breaks a rule, for every module under ``root``/graft."""
    found = []
    for path in sorted((root / "graft").rglob("*.py")):
        module = module_name(path, root)
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, name in imported_names(tree, module, path.name == "__init__.py"):
            for rule in RULES:
                if not under(module, rule.layer) or any(under(module, e) for e in rule.exempt):
                    continue
                if any(under(name, a) for a in rule.allowed):
                    continue
                if any(under(name, f) for f in rule.forbidden):
                    where = path.relative_to(root)
                    found.append(f"{where}:{line}: {module} imports {name} ({rule.why})")
    return found


def main() -> int:
    found = violations()
    for line in found:
        print(line)
    print(f"layers: {len(found)} broken import rules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
