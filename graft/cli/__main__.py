"""``python -m graft.cli``: the ``graft`` command, for a virtualenv whose scripts are not on
PATH (and for tests, which run it with the same interpreter)."""

import sys

from graft.cli.app import main

sys.exit(main())
