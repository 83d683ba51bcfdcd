"""Example FSM script (a config's `fsm.init`): the initial state of a counter and a list.

Paths in a config file are relative to the file's directory:
`fsm: {init: conf/fsm_init.py, eval: conf/fsm_eval.py}` fits a config at the repository root,
and `fsm: {init: fsm_init.py, eval: fsm_eval.py}` one in this directory.
"""


def init() -> dict[str, object]:
    """The state every replica starts from: JSON data only."""
    return {"counter": 0, "items": []}
