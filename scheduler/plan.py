"""Deprecated: ``python -m scheduler.plan`` moved to ``python -m planner``.

The scheduler package holds only the sans-I/O core; the capacity planner lives in
``planner/``. This shim runs it by name (no import of ``planner`` from the core)
and will be removed in a later release.
"""

import runpy
import warnings

if __name__ == "__main__":
    warnings.warn(
        "python -m scheduler.plan is deprecated; use python -m planner", DeprecationWarning,
        stacklevel=1,
    )
    runpy.run_module("planner", run_name="__main__", alter_sys=True)
