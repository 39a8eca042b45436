"""Deprecated: ``python -m benchmarks.agents`` is now ``python -m benchmarks.e2e``
(the package :mod:`benchmarks.e2e`); this shim warns and forwards its arguments.
It will be removed in a later release."""

import sys
import warnings

from benchmarks.e2e.cli import main

warnings.warn(
    "python -m benchmarks.agents is deprecated; use: python -m benchmarks.e2e",
    DeprecationWarning,
    stacklevel=2,
)

if __name__ == "__main__":
    print("benchmarks.agents is deprecated: running python -m benchmarks.e2e", file=sys.stderr)
    raise SystemExit(main())
