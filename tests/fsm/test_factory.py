"""graft.fsm.create_state_machine: from an FSMConfig to a running FSM."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from twisted.trial.unittest import SynchronousTestCase

from graft.config import ConfigError, FSMConfig, load_config
from graft.fsm import StateMachine, create_state_machine
from graft.fsm.kv import KeyValueStateMachine
from graft.fsm.script import ScriptStateMachine
from graft.fsm.sqlite import SQLiteStateMachine

CONF = Path(__file__).resolve().parents[2] / "conf"


class FactoryTests(SynchronousTestCase):
    def create(self, factory: str, **options: object) -> StateMachine:
        data_dir = Path(self.mktemp())
        fsm = create_state_machine(
            FSMConfig(factory=factory, options=MappingProxyType(options)),
            data_dir=data_dir,
            base_dir=CONF,
        )
        self.addCleanup(fsm.close)
        return fsm

    def test_default_is_sqlite_in_data_dir(self) -> None:
        """The default factory builds the SQLite FSM with its file in data_dir."""
        data_dir = Path(self.mktemp())
        fsm = create_state_machine(FSMConfig(), data_dir=data_dir, base_dir=CONF)
        self.addCleanup(fsm.close)
        self.assertIsInstance(fsm, SQLiteStateMachine)
        self.assertIsInstance(fsm, StateMachine)
        self.assertTrue((data_dir / "fsm.sqlite3").exists())

    def test_builtins(self) -> None:
        """kv and script are built from their factory names and options."""
        self.assertIsInstance(
            self.create("graft.fsm.kv:KeyValueStateMachine"), KeyValueStateMachine
        )
        script = self.create(
            "graft.fsm.script:ScriptStateMachine", init="fsm_init.py", eval="fsm_eval.py"
        )
        self.assertIsInstance(script, ScriptStateMachine)
        self.assertEqual(script.apply(b"add 2", 1), b'{"counter":2}')

    def test_seed_form_from_a_config_file(self) -> None:
        """The seed's `fsm: {init, eval}` config gives a working script FSM, paths relative to
        the config file."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "cluster.yaml"
        path.write_text(
            f"fsm: {{init: {CONF / 'fsm_init.py'}, eval: {CONF / 'fsm_eval.py'}}}\n"
            "peers: {turing: {host: 127.0.0.1, ports: {p2p: 8880, api: 8080}}}\n"
        )
        cfg = load_config(path)
        fsm = create_state_machine(cfg.fsm, data_dir=cfg.data_dir("turing"), base_dir=cfg.base_dir)
        self.addCleanup(fsm.close)
        self.assertEqual(fsm.apply(b"push x", 1), b'{"length":1}')

    def test_import_failure(self) -> None:
        """A factory whose module cannot be imported is a one-line ConfigError."""
        error = self.assertRaises(ConfigError, self.create, "no_such_module_xyz:Machine")
        self.assertEqual(
            str(error),
            "fsm.factory: cannot import module 'no_such_module_xyz' (No module named "
            "'no_such_module_xyz'); expected an importable module (is it installed, is the "
            "name right?)",
        )

    def test_missing_class(self) -> None:
        """A module without the named class is a ConfigError naming both."""
        error = self.assertRaises(ConfigError, self.create, "graft.fsm.kv:Nope")
        self.assertIn("module 'graft.fsm.kv' has no class or function 'Nope'", str(error))

    def test_unknown_option(self) -> None:
        """An option the factory does not take is a ConfigError naming fsm.options."""
        error = self.assertRaises(
            ConfigError, self.create, "graft.fsm.kv:KeyValueStateMachine", colour="blue"
        )
        self.assertIn("fsm.options: graft.fsm.kv:KeyValueStateMachine does not accept", str(error))

    def test_reserved_option(self) -> None:
        """data_dir cannot be set through options."""
        error = self.assertRaises(
            ConfigError, self.create, "graft.fsm.kv:KeyValueStateMachine", data_dir="/tmp"
        )
        self.assertIn("fsm.options.data_dir: set by graft itself", str(error))
