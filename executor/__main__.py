import sys

try:
    from executor.cli import main
except ModuleNotFoundError as exc:  # a bare or half-installed venv: one line with the fix
    package = (exc.name or "?").split(".")[0]
    print(
        f"error: the Python package {package!r} is missing: run `bash infra/install.sh` and use "
        ".venv/bin/python",
        file=sys.stderr,
    )
    sys.exit(2)

sys.exit(main())
