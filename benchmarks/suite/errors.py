"""The errors the benchmark suite raises; each message says what to do next."""


class BenchmarkError(Exception):
    """Base class of the suite's own errors."""


class BenchmarkSetupError(BenchmarkError):
    """A tool or package the suite needs is missing, or a system under test did not start."""
