"""Mistakes a user makes with the offline tools and `graft certs` are reported as theirs: one
line saying what is wrong and what to do, a non-zero exit, never "a bug in graft"; and nothing
is written, nor a warning printed for a change that cannot happen. The real graft.ops on real
data dirs (no fakes)."""

from __future__ import annotations

from pathlib import Path

from click.testing import Result
from twisted.internet.task import Clock

from graft.raft.types import Entry, EntryKind, HardState
from graft.storage import DurableLog
from tests.test_cli import CLITestCase, run, write_config


def make_data_dir(path: Path, node_id: str = "alpha") -> None:
    """A data dir with a short log, as node ``node_id`` of cluster "test" leaves it."""
    log = DurableLog.open(path, node_id=node_id, cluster="test", reactor=Clock(), threaded=False)
    entries = [Entry(index=1, term=1, kind=EntryKind.NOOP)]
    entries += [Entry(index=i, term=1, data=b"SET k%d;" % i) for i in range(2, 5)]
    log.append_sync(entries)
    log.set_hard_state_sync(HardState(term=1, vote=node_id, commit=4))
    log.close()


def snapshot_of(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


class UserErrorTestCase(CLITestCase):
    def assertUserError(self, result: Result, *fragments: str) -> str:
        """One line, non-zero exit, the fragments, and no word of a bug."""
        line = self.assertOneLineError(result, *fragments)
        self.assertNotIn("bug in graft", line)
        self.assertNotIn("internal error", line)
        return line


class RestoreTests(UserErrorTestCase):
    def setUp(self) -> None:
        self.path = write_config(self.tmpdir())
        self.data = self.path.parent / "data"

    def test_restore_into_a_non_empty_data_dir(self) -> None:
        """restore into a data dir that holds files: refused, says to move it away, and
        the files are untouched."""
        (self.data / "beta").mkdir(parents=True)
        (self.data / "beta" / "notes").write_text("mine")
        backup = self.path.parent / "backup.snap"
        backup.write_bytes(b"whatever")
        result = run(["restore", str(backup), "-c", str(self.path), "--node", "beta"])
        self.assertUserError(result, "is not empty", "move the old data dir away")
        self.assertEqual(snapshot_of(self.data), {"beta/notes": b"mine"})

    def test_restore_a_junk_backup(self) -> None:
        """A file that is not a snapshot the FSM can restore: refused, naming the file and
        saying which backup to pass; nothing is written."""
        backup = self.path.parent / "junk.snap"
        backup.write_bytes(b"this is not a backup\n")
        result = run(["restore", str(backup), "-c", str(self.path), "--node", "beta"])
        self.assertUserError(result, "junk.snap is not a snapshot", "pass a backup")
        self.assertFalse(self.data.exists() and any(self.data.rglob("*")), "wrote something")


class RecoverTests(UserErrorTestCase):
    def setUp(self) -> None:
        self.path = write_config(self.tmpdir())
        self.data = self.path.parent / "data" / "alpha"

    def test_unknown_member_is_refused_before_the_warning(self) -> None:
        """--members naming a node nobody knows: refused with the name and what to check,
        before the UNSAFE warning or the question, and the log is unchanged."""
        make_data_dir(self.data)
        before = snapshot_of(self.data)
        result = run(
            ["recover", "--members", "alpha,bogus", "-c", str(self.path), "--node", "alpha"]
        )
        self.assertUserError(result, "bogus: not a member known", "--members")
        self.assertNotIn("UNSAFE", result.stderr)
        self.assertNotIn("Rewrite the membership?", result.output)
        self.assertEqual(snapshot_of(self.data), before)

    def test_a_directory_without_graft_data_is_refused(self) -> None:
        """recover on an empty data dir refuses before the warning, and writes nothing (it
        used to create an identity file there)."""
        self.data.mkdir(parents=True)
        result = run(["recover", "--members", "alpha", "-c", str(self.path), "--node", "alpha"])
        self.assertUserError(result, "not a data dir", "--node")
        self.assertNotIn("UNSAFE", result.stderr)
        self.assertEqual(list(self.data.iterdir()), [])

    def test_good_arguments_still_recover(self) -> None:
        """With known members the warning comes, and --yes writes the membership."""
        make_data_dir(self.data)
        result = run(
            ["recover", "--members", "alpha,beta", "-c", str(self.path), "--node", "alpha", "--yes"]
        )
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertIn("UNSAFE", result.stderr)
        self.assertIn("rewrote alpha's membership to alpha, beta", result.stdout)


class StorageCheckTests(UserErrorTestCase):
    def test_a_config_dir_is_not_a_data_dir(self) -> None:
        """`storage check` and `storage dump` of a directory without graft data (here the one
        holding the config) refuse with exit 1 instead of printing OK."""
        conf = write_config(self.tmpdir()).parent
        for command in ("check", "dump"):
            result = run(["storage", command, str(conf)])
            self.assertUserError(result, "holds no graft data", "not a data dir", "data_dir")
            self.assertNotIn("OK", result.stdout)

    def test_an_empty_dir_is_not_a_data_dir(self) -> None:
        result = run(["storage", "check", str(self.tmpdir())])
        self.assertUserError(result, "is empty", "not a data dir")

    def test_a_data_dir_is_checked(self) -> None:
        data = self.tmpdir() / "alpha"
        make_data_dir(data)
        result = run(["storage", "check", str(data)])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(result.stdout.splitlines()[-1], "OK")


class CertsRerunTests(UserErrorTestCase):
    def test_rerun_names_the_options(self) -> None:
        """A second `graft certs` names --force and --if-missing, not Python's force and
        if_missing, and says each once."""
        path = write_config(self.tmpdir())
        self.assertEqual(run(["certs", "-c", str(path)]).exit_code, 0)
        line = self.assertUserError(run(["certs", "-c", str(path)]), "already exists")
        self.assertEqual((line.count("--force"), line.count("--if-missing")), (1, 1), line)
        self.assertNotIn("if_missing", line)
        self.assertNotIn("pass force", line)


class QueryHelpTests(UserErrorTestCase):
    def test_max_lag_ms_help_says_what_runs(self) -> None:
        """--max-lag-ms is described as time since the node last heard from a leader (what the
        node checks), not as a distance behind the leader."""
        text = " ".join(run(["query", "--help"]).output.split())
        self.assertIn("last heard from a leader", text)
        self.assertIn("409 stale", text)
        self.assertNotIn("further behind the leader", text)
