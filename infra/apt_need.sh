#!/usr/bin/env bash
# Idempotent: installs the Debian packages whose command (or shared library) is missing.
#   bash infra/apt_need.sh TAG CHECK=PACKAGE...
# CHECK is a command name (bwrap) or lib:SONAME (lib:libseccomp.so.2). As root it runs
# apt-get; otherwise it says what is missing and how to install it, and exits 1.
set -euo pipefail
tag=$1; shift
log() { printf '[%s] %s\n' "$tag" "$*" >&2; }

need=()
for pair in "$@"; do
  check=${pair%%=*} pkg=${pair#*=}
  if [[ $check == lib:* ]]; then
    ldconfig -p 2>/dev/null | grep -qF "${check#lib:}" || need+=("$pkg")
  else
    command -v "$check" >/dev/null 2>&1 || need+=("$pkg")
  fi
done
if ((${#need[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  log "missing Debian packages: ${need[*]}; install them as root: apt-get install ${need[*]}"
  exit 1
fi
log "installing ${need[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
# --no-install-recommends: nothing that starts services, nothing the checks did not ask for.
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
