#!/usr/bin/env bash
# Idempotent: installs the Debian packages the sandbox backends need, only when missing.
#   bubblewrap   the `bwrap` backend
#   docker.io    dockerd (+ containerd, runc) for the private daemon of the `docker` backend
#   libseccomp2  libseccomp, used through ctypes (pyseccomp) to build the bwrap seccomp filter
# Needs root for apt-get; without root it only reports what is missing.
set -euo pipefail
log() { printf '[sandbox-deps] %s\n' "$*" >&2; }

need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || need+=(libseccomp2)

if ((${#need[@]} == 0)); then
  log "bwrap, dockerd, containerd, runc and libseccomp present; nothing to do"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  log "missing ${need[*]}; run as root (apt-get) to install them"
  exit 0
fi
log "installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
# --no-install-recommends: no docker-compose, no cgroupfs-mount, nothing that starts services.
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
log "done"
