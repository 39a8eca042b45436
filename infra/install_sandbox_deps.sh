#!/usr/bin/env bash
# Idempotent: installs the Debian packages every sandbox backend needs, only when missing
# (infra/install.sh installs the default backend's own: bubblewrap, libseccomp, util-linux).
#   bubblewrap   the `bwrap` backend
#   docker.io    dockerd (+ containerd, runc) for the private daemon of the `docker` backend
#   libseccomp2  libseccomp, used through ctypes (pyseccomp) to build the bwrap seccomp filter
# Needs root for apt-get; without root it only reports what is missing.
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/apt_need.sh" sandbox-deps \
  bwrap=bubblewrap dockerd=docker.io containerd=containerd runc=runc \
  lib:libseccomp.so.2=libseccomp2 || true
