"""The ``graft`` command (click), one module per concern:

- ``app``: the root group (the console script ``graft.cli.app:main``) and shell completion;
- ``errors``: the error policy (every failure is one line on stderr, never a traceback);
- ``options``: options shared by several commands, and finding the config file;
- ``connect``: the one way a command builds its API client (from --url or the config);
- ``render``: tables and the other text the commands print;
- ``node``: ``start`` (a node in this process, through graft.launcher) and ``certs``;
- ``join``: the ``start --join`` flow;
- ``dev``: ``graft dev``, a supervisor of every node of a config as child processes;
- ``cluster``: the commands that talk to a running cluster;
- ``offline``: the commands on a stopped node's data directory.
"""
