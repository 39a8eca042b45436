#!/usr/bin/env bash
# Smoke check of the README's first command on a bare machine: a minimal Debian root made
# with debootstrap (from Debian's package registry), the committed tree copied into it,
# pip given the sources this host's pip is configured with (its config files, its PIP_*
# variables, and the local folders they name, read-only) and nothing else installed; then
#   bash infra/install.sh && .venv/bin/python -m executor run "What is 1234 * 5678?"
# runs inside it, and each stage's time is printed (and written as JSON with --json F).
#
#   sudo bash infra/fresh_check.sh [--json FILE] [--keep] [--suite SUITE]
#
# Needs root (debootstrap, mounts), bubblewrap on the host (it enters the root) and
# Debian's registry. The mounts live in a private mount namespace (gone when the script
# ends), processes left in the root are ended, the root is removed unless --keep. Takes
# 8-12 minutes on 2 cores.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JSON="" KEEP=0 SUITE=bookworm
while (($#)); do
  case "$1" in
    --json) JSON=$2; shift 2;;
    --keep) KEEP=1; shift;;
    --suite) SUITE=$2; shift 2;;
    -h|--help) sed -n '2,13p' "$0"; exit 0;;
    *) echo "fresh_check: unknown option $1 (see --help)" >&2; exit 2;;
  esac
done
log() { printf '[fresh-check] %s\n' "$*" >&2; }
[[ $(id -u) -eq 0 ]] || { log "needs root (debootstrap, mounts)"; exit 2; }

# Re-enter in a private mount namespace: every mount below vanishes with this process.
if [[ -z "${FRESH_CHECK_NS:-}" ]]; then
  exec env FRESH_CHECK_NS=1 unshare --mount --propagation private bash "$0" \
    ${JSON:+--json "$JSON"} $( ((KEEP)) && echo --keep) --suite "$SUITE"
fi

bash "$ROOT/infra/apt_need.sh" fresh-check debootstrap=debootstrap bwrap=bubblewrap
MIRROR=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
MIRROR=${MIRROR:-$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
FS=$(mktemp -d /tmp/fresh-root.XXXXXX)
chmod 755 "$FS"  # it becomes "/": the sandbox's unprivileged user must traverse it
declare -A SECONDS_OF=()
stage() {  # stage NAME CMD...: run it, record its seconds
  local name=$1 t0=$SECONDS; shift
  log "stage $name"
  "$@"
  SECONDS_OF[$name]=$((SECONDS - t0))
  log "stage $name: ${SECONDS_OF[$name]} s"
}
cleanup() {
  local pid
  for pid in /proc/[0-9]*; do  # whatever the run left inside the root (Ray, engines)
    [[ "$(readlink "$pid/root" 2>/dev/null)" == "$FS" ]] && kill -9 "${pid#/proc/}" 2>/dev/null
  done
  awk -v fs="$FS" 'index($5, fs) == 1 {print $5}' /proc/self/mountinfo | sort -r \
    | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  if ((KEEP)); then log "root kept at $FS"; else rm -rf --one-file-system "$FS"; fi
}
trap cleanup EXIT

# ca-certificates: a host that reaches a registry over https has them; nothing else.
stage debootstrap debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$FS" "$MIRROR" \
  >/dev/null
cp /etc/apt/sources.list.d/*.sources "$FS/etc/apt/sources.list.d/" 2>/dev/null || true
cp /etc/resolv.conf "$FS/etc/resolv.conf"

# pip's sources as configured here: config files, PIP_* variables, the local folders they name.
for conf in /etc/pip.conf /etc/xdg/pip; do
  [[ -e $conf ]] && mkdir -p "$FS$(dirname "$conf")" && cp -r "$conf" "$FS$conf"
done
# Folders (find-links, file:// indexes) are bound read-only; files (the CA bundle pip is
# told to trust, a constraints file) are copied to the same path.
PIP_SETENV=()
while IFS='=' read -r name value; do
  PIP_SETENV+=(--setenv "$name" "$value")
done < <(env | grep '^PIP_' || true)
for path in $( { python3 -m pip config list 2>/dev/null; env | grep '^PIP_'; } \
    | grep -oE "(file://)?/[^' ]+" | sed 's|^file://||' | sort -u); do
  if [[ -d $path ]]; then
    mkdir -p "$FS$path" && mount --bind -o ro "$path" "$FS$path"
  elif [[ -f $path ]]; then
    mkdir -p "$FS$(dirname "$path")" && cp "$path" "$FS$path"
  fi
done

mount -t tmpfs -o size=4g tmpfs "$FS/tmp"

mkdir -p "$FS/src"
git -C "$ROOT" archive HEAD | tar -x -C "$FS/src"   # what is committed, nothing else
# The root is entered with bubblewrap as root (pivot_root, not chroot: the kernel refuses a
# user namespace, which the sandbox needs, to a chrooted process), with the host's /proc
# (a proc that bwrap mounts itself is partly covered, and the kernel then refuses the
# sandbox its own), sharing the host's network.
in_root() {
  bwrap --bind "$FS" / --dev-bind /dev /dev --bind /proc /proc --bind /sys /sys \
    --die-with-parent --clearenv --setenv HOME /root --setenv LANG C.UTF-8 \
    --setenv PATH /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "${PIP_SETENV[@]}" --chdir /src bash -c "$1"
}
stage install in_root "bash infra/install.sh"
OUT=$(mktemp)
stage first_run in_root '.venv/bin/python -m executor run "What is 1234 * 5678?" --json' >"$OUT"
cat "$OUT"
ANSWER=$(python3 -c 'import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index("{"):]).get("output"))' <"$OUT" \
  2>/dev/null || echo "?")
rm -f "$OUT"
SUMMARY=$(printf '{"suite": "%s", "debootstrap_s": %d, "install_s": %d, "first_run_s": %d, "answer": "%s"}' \
  "$SUITE" "${SECONDS_OF[debootstrap]}" "${SECONDS_OF[install]}" "${SECONDS_OF[first_run]}" "$ANSWER")
log "$SUMMARY"
[[ -n $JSON ]] && echo "$SUMMARY" > "$JSON"
[[ $ANSWER == *7006652* ]] || { log "the first command did not answer 7006652"; exit 1; }
