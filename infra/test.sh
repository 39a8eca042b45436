#!/usr/bin/env bash
# The README's test command: installs what the tests need (the venv, bubblewrap,
# a Docker engine, chromium for the planner page), checks the code (ruff, mypy),
# starts the private Docker daemon for the sandbox tests, runs the suite, stops
# what it started.
#   bash infra/test.sh [pytest args...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash infra/install.sh
bash infra/install_sandbox_deps.sh
bash infra/install_chromium.sh || echo "[test] chromium could not be installed: the planner page test will skip" >&2

echo "[test] ruff and mypy" >&2
.venv/bin/ruff check .
.venv/bin/python -m mypy

started_dockerd=0
if ! bash infra/dockerd.sh status >/dev/null 2>&1; then started_dockerd=1; fi
if line=$(bash infra/dockerd.sh start); then
  eval "$line"
  echo "[test] private Docker daemon at $DOCKER_HOST" >&2
else
  echo "[test] the private Docker daemon did not start: the Docker tests will say why they skip" >&2
  started_dockerd=0
fi
stop_dockerd() { if ((started_dockerd)); then bash infra/dockerd.sh stop || true; fi; }
trap stop_dockerd EXIT

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
exit $rc
