"""The ``graft`` command: ``graft.cli.app:main`` is the console script."""
