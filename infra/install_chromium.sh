#!/usr/bin/env bash
# Idempotent: installs Debian's chromium for the planner page's headless test
# (tests/unit/planner/test_plan_html.py) when /usr/bin/chromium is missing.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "[install_chromium] installing chromium (headless test of the planner page)" >&2
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
