#!/usr/bin/env bash
# The README's test command: installs what the tests need, starts the private
# Docker daemon for the sandbox tests, runs the suite, stops what it started.
#   bash infra/test.sh [pytest args...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash infra/install.sh
# DOCKER-HOOK (tools/sandbox issue): start the private daemon here and export DOCKER_HOST.
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
exit $rc
