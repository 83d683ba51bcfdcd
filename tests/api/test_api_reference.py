"""docs/api.md against the program: every route the API serves is in its route table with the
role it really needs, it names no route that is not served, every error code is in its table
with its status, and its token recipe gives the digest the node compares."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from graft.api import app
from graft.api.auth import Role, token_digest
from graft.api.serving import routes
from graft.errors import GraftError
from tests.api.fakes import ADMIN, READER, TOKEN_OF, WRITER, ApiTestCase, Settings, bearer, tokens

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"
# Methods a route table need not list: werkzeug adds HEAD to every GET route.
_IMPLICIT = {"HEAD", "OPTIONS"}
_ROLES = {"none": None, "read": Role.READ, "write": Role.WRITE, "admin": Role.ADMIN}
_ROUTE_ROW = re.compile(r"^\| *([A-Z]+) *\| *`(/[^`]*)` *\| *(\w+) *\|", re.MULTILINE)
_HEADING = re.compile(r"^#{2,4} +((?:[A-Z]+(?: or |, ))*[A-Z]+) +(/\S*)", re.MULTILINE)
_ERROR_ROW = re.compile(r"^\| *`([a-z_]+)` *\| *(\d{3})[^|]*\|", re.MULTILINE)


def normal(path: str) -> str:
    """A path with its variable parts as ``{}``: Klein's ``<string:member>``, the docs' ``{id}``."""
    return re.sub(r"<[^>]*>|\{[^}]*\}", "{}", path)


def served_routes() -> set[tuple[str, str]]:
    """(method, path) of every route: Klein's table and the hot routes' direct table."""
    served = set()
    for rule in routes.url_map.iter_rules():
        for method in set(rule.methods or ()) - _IMPLICIT:
            served.add((method, normal(rule.rule)))
    for path, methods, _ in app._HOT_ROUTES:
        served.update((method, path) for method in methods)
    return served


def documented_routes() -> dict[tuple[str, str], str]:
    """(method, path) -> role, from the route table of docs/api.md."""
    rows: dict[tuple[str, str], str] = {}
    for method, path, role in _ROUTE_ROW.findall(API_MD.read_text(encoding="utf-8")):
        rows[(method, normal(path))] = role
    return rows


class ApiReferenceTests(ApiTestCase):
    def test_every_route_is_documented(self) -> None:
        """Every route the app serves has a row in docs/api.md's route table."""
        missing = served_routes() - set(documented_routes())
        self.assertEqual(missing, set(), f"served but not in {API_MD}'s route table")

    def test_every_documented_route_is_served(self) -> None:
        """Every row of the route table, and every route a heading names, is served."""
        served = served_routes()
        documented = set(documented_routes())
        text = API_MD.read_text(encoding="utf-8")
        for methods, path in _HEADING.findall(text):
            for method in re.split(r" or |, ", methods):
                documented.add((method, normal(path)))
        self.assertEqual(documented - served, set(), f"in {API_MD} but not served")

    def test_documented_roles_are_the_roles_needed(self) -> None:
        """With tokens on, each route takes a token of its documented role and refuses the role
        below it (no token below read); a route documented as open takes no token."""
        self.serve(Settings(tokens=tokens(read=READER, write=WRITER, admin=ADMIN)))
        for (method, path), role_name in documented_routes().items():
            self.assertIn(role_name, _ROLES, f"{method} {path}: unknown role {role_name!r}")
            role = _ROLES[role_name]
            url = path.replace("{}", "ritchie")
            if role is None:
                answer = self.call(method, url)
                self.assertNotIn(answer.status, (401, 403), f"{method} {path} needs a token")
                continue
            answer = self.call(method, url, headers=bearer(TOKEN_OF[role]))
            self.assertNotIn(
                answer.status, (401, 403), f"{method} {path} refuses a {role_name} token"
            )
            below = Role(role - 1) if role > Role.READ else None
            headers = {} if below is None else bearer(TOKEN_OF[below])
            answer = self.call(method, url, headers=headers)
            self.assertIn(
                answer.status,
                (401, 403),
                f"{method} {path} takes {below.name.lower() if below else 'no'} token, "
                f"docs/api.md says it needs {role_name}",
            )

    def test_every_error_code_is_documented(self) -> None:
        """Every GraftError's code is in docs/api.md's error table with its status."""
        table = dict(_ERROR_ROW.findall(API_MD.read_text(encoding="utf-8")))
        errors: list[type[GraftError]] = [GraftError]
        seen: dict[str, int] = {}
        while errors:
            error = errors.pop()
            seen[error.code] = error.status
            errors.extend(error.__subclasses__())
        for code, status in sorted(seen.items()):
            self.assertEqual(table.get(code), str(status), f"error code {code} in {API_MD}")
        self.assertEqual(set(table) - set(seen), set(), f"codes in {API_MD} that do not exist")

    def test_token_recipe_gives_the_digest(self) -> None:
        """The shell line docs/api.md gives for a token's digest prints token_digest(token)."""
        text = API_MD.read_text(encoding="utf-8")
        match = re.search(r"^(printf %s 'THE-TOKEN' \| [^#\n]*?)\s*#", text, re.MULTILINE)
        assert match is not None, "no digest recipe in docs/api.md"
        token = "s3cret-tok€n"
        line = match.group(1).replace("THE-TOKEN", token)
        digest = subprocess.run(
            ["sh", "-c", line], capture_output=True, check=True, timeout=10
        ).stdout.decode()
        self.assertEqual(digest.strip(), token_digest(token))
