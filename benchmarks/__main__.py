"""`python -m benchmarks`: the side-by-side suite of issue 8 (see docs/benchmarks.md)."""

import sys

from benchmarks.suite.run import main

sys.exit(main())
