"""``make mutate``: mutation testing of named functions with cosmic-ray, and a per-function score.

The targets live in ``conf/mutation.toml``: each names one module, the functions in it to
mutate (``Class.method`` or ``function``) and the test modules that cover them. For each
target this runner

1. copies the work tree (tracked and untracked-but-not-ignored files) to a temporary
   directory, so a mutant is never written into the real tree, not even after a crash;
2. runs cosmic-ray ``init`` on the module, then marks every mutant outside the named
   functions' lines (and of an excluded operator) as skipped, and samples down to
   ``max_mutants`` when there are more (saying so);
3. runs the tests once unmutated (a red baseline would make every mutant look killed);
4. runs cosmic-ray ``exec``: one mutant at a time, each against the target's tests, with
   the target's timeout (a timeout counts as killed);
5. prints killed/total per function and every survivor's diff, and writes the same report
   to ``.mutate/<target>.txt``.

A function that is not found is an error that names the target: after a refactor moves or
renames a function, update the config, not this file.

``python -m graft.testing.mutation [--config conf/mutation.toml] [--target NAME ...]
[--list]``: ``--list`` only counts the mutants per function, without running any.
"""

from __future__ import annotations

import argparse
import ast
import random
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
REPORT_DIR = REPO / ".mutate"


@dataclass(slots=True, kw_only=True)
class Target:
    name: str
    module: str  # path relative to the repository root
    functions: list[str]
    tests: list[str]  # trial test modules (dotted names)
    timeout: float
    max_mutants: int
    exclude_operators: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Score:
    killed: int = 0
    survived: int = 0
    incompetent: int = 0
    timeouts: int = 0  # among the killed: a timeout, which a loaded machine can also cause
    survivors: list[str] = field(default_factory=list)


def load_targets(path: Path) -> list[Target]:
    with path.open("rb") as f:
        config = tomllib.load(f)
    defaults: dict[str, Any] = config.get("defaults", {})
    targets = []
    for raw in config.get("target", []):
        merged = {**defaults, **raw}
        targets.append(
            Target(
                name=merged["name"],
                module=merged["module"],
                functions=list(merged["functions"]),
                tests=list(merged["tests"]),
                timeout=float(merged.get("timeout", 60)),
                max_mutants=int(merged.get("max_mutants", 300)),
                exclude_operators=list(merged.get("exclude_operators", [])),
            )
        )
    return targets


def function_lines(source: str, names: list[str], *, where: str) -> dict[str, tuple[int, int]]:
    """First and last line of each named function; ``Class.method`` or a module function."""
    tree = ast.parse(source)
    found: dict[str, tuple[int, int]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                qualified = f"{prefix}{child.name}"
                # Decorators are part of the function: a mutant there belongs to it.
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                found[qualified] = (first, child.end_lineno or child.lineno)

    visit(tree, "")
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(
            f"{where}: no function {', '.join(missing)} (moved or renamed? update "
            "conf/mutation.toml)"
        )
    return {n: found[n] for n in names}


def _copy_tree(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = Path(raw.decode())
        src = REPO / rel
        if not src.is_file():  # deleted in the work tree but not yet in the index
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def _cosmic_ray(*args: str, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "cosmic_ray.cli", "--verbosity", "ERROR", *args],
        cwd=cwd,
        check=True,
    )


def _test_command(target: Target) -> list[str]:
    return [sys.executable, "-m", "twisted.trial", "--temp-directory", "_trial_temp_mutate"]


def _write_config(target: Target, work: Path) -> Path:
    command = " ".join([*_test_command(target), *target.tests])
    cfg = work / "cosmic-ray.toml"
    cfg.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{target.module}"\n'
        f"timeout = {target.timeout}\n"
        "excluded-modules = []\n"
        f'test-command = "{command}"\n'
        "[cosmic-ray.distributor]\n"
        'name = "local"\n'
    )
    return cfg


def _select(
    target: Target, lines: dict[str, tuple[int, int]], session: Path, *, seed: int
) -> tuple[dict[str, str], int]:
    """Skip mutants outside the named functions; returns job id -> function, and how many
    mutants there were before sampling."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    def owner(line: int) -> str | None:
        for name, (first, last) in lines.items():
            if first <= line <= last:
                return name
        return None

    chosen: dict[str, str] = {}
    skip: list[str] = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in db.pending_work_items:
            (mutation,) = item.mutations
            name = owner(mutation.start_pos[0])
            excluded = any(op in mutation.operator_name for op in target.exclude_operators)
            if name is None or excluded:
                skip.append(item.job_id)
            else:
                chosen[item.job_id] = name
        total = len(chosen)
        if total > target.max_mutants:
            keep = set(random.Random(seed).sample(sorted(chosen), target.max_mutants))
            skip.extend(j for j in chosen if j not in keep)
            chosen = {j: n for j, n in chosen.items() if j in keep}
        if skip:
            db.set_multiple_results(
                skip, WorkResult(output="not a target", worker_outcome=WorkerOutcome.SKIPPED)
            )
    return chosen, total


def _scores(
    session: Path, chosen: dict[str, str], lines: dict[str, tuple[int, int]]
) -> dict[str, Score]:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome

    scores = {name: Score() for name in lines}
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            name = chosen.get(item.job_id)
            if name is None:
                continue
            score = scores[name]
            if result.test_outcome is TestOutcome.SURVIVED:
                score.survived += 1
                (mutation,) = item.mutations
                score.survivors.append(
                    f"{name} line {mutation.start_pos[0]} {mutation.operator_name}\n"
                    f"{result.diff or ''}"
                )
            elif result.test_outcome is TestOutcome.KILLED:
                score.killed += 1
                score.timeouts += result.output == "timeout"
            else:
                score.incompetent += 1
    return scores


def run_target(target: Target, *, list_only: bool, seed: int) -> dict[str, Score]:
    with tempfile.TemporaryDirectory(prefix=f"mutate-{target.name}-") as tmp:
        work = Path(tmp)
        _copy_tree(work)
        module = work / target.module
        lines = function_lines(
            module.read_text(), target.functions, where=f"{target.name} ({target.module})"
        )
        missing = [t for t in target.tests if not (work / (t.replace(".", "/") + ".py")).exists()]
        if missing:
            print(f"   WARNING: no test module {', '.join(missing)}: left out of this run")
            target.tests = [t for t in target.tests if t not in missing]
        cfg = _write_config(target, work)
        session = work / "session.sqlite"
        _cosmic_ray("init", str(cfg), str(session), cwd=work)
        chosen, total = _select(target, lines, session, seed=seed)
        per_function = Counter(chosen.values())
        print(f"== {target.name}: {target.module}, tests {' '.join(target.tests)}")
        for name in target.functions:
            print(f"   {name}: {per_function[name]} mutants")
        if total > len(chosen):
            print(f"   sampled {len(chosen)} of {total} mutants (max_mutants), seed {seed}")
        if list_only:
            return {}
        baseline = subprocess.run(
            [*_test_command(target), *target.tests], cwd=work, capture_output=True
        )
        if baseline.returncode != 0:
            sys.stdout.write(baseline.stdout.decode(errors="replace")[-4000:])
            raise SystemExit(f"{target.name}: the tests fail without any mutant")
        _cosmic_ray("exec", str(cfg), str(session), cwd=work)
        scores = _scores(session, chosen, lines)
    report = format_report(target, scores, sampled=(len(chosen), total))
    print(report)
    REPORT_DIR.mkdir(exist_ok=True)
    (REPORT_DIR / f"{target.name}.txt").write_text(report)
    return scores


def format_report(target: Target, scores: dict[str, Score], *, sampled: tuple[int, int]) -> str:
    out = [f"-- {target.name} ({target.module}): killed/total per function"]
    for name, s in scores.items():
        total = s.killed + s.survived
        extra = f" ({s.timeouts} by timeout)" if s.timeouts else ""
        extra += f", {s.incompetent} incompetent" if s.incompetent else ""
        out.append(f"   {name:40} {s.killed}/{total} killed, {s.survived} survived{extra}")
    if sampled[0] < sampled[1]:
        out.append(f"   (a sample of {sampled[0]} of {sampled[1]} mutants)")
    for s in scores.values():
        for survivor in s.survivors:
            out.append("   SURVIVED " + survivor)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", type=Path, default=REPO / "conf" / "mutation.toml")
    parser.add_argument("--target", action="append", help="run only this target (repeatable)")
    parser.add_argument("--list", action="store_true", help="count the mutants, run none")
    parser.add_argument("--seed", type=int, default=1, help="for sampling past max_mutants")
    args = parser.parse_args(argv)
    targets = load_targets(args.config)
    if args.target:
        unknown = set(args.target) - {t.name for t in targets}
        if unknown:
            parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
        targets = [t for t in targets if t.name in args.target]
    survived = 0
    for target in targets:
        scores = run_target(target, list_only=args.list, seed=args.seed)
        survived += sum(s.survived for s in scores.values())
    if not args.list:
        print(f"{survived} surviving mutant(s); see docs/testing.md for the known equivalents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
