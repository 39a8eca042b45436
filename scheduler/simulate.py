"""Deprecated: ``python -m scheduler.simulate`` moved to ``python -m sim``.

The scheduler package holds only the sans-I/O core; the simulator lives in
``sim/``. This shim runs it by name (no import of ``sim`` from the core)
and will be removed in a later release.
"""

import runpy
import warnings

if __name__ == "__main__":
    warnings.warn(
        "python -m scheduler.simulate is deprecated; use python -m sim", DeprecationWarning,
        stacklevel=1,
    )
    runpy.run_module("sim", run_name="__main__", alter_sys=True)
