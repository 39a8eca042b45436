#!/usr/bin/env bash
# A private Docker daemon for development and tests, touching no host networking:
# its own config, socket, data-root and exec-root under one directory, and
# "iptables": false, "ip-forward": false, "ip-masq": false, "bridge": "none"
# (sandbox containers run with --network none). Needs root and dockerd
# (infra/install_sandbox_deps.sh installs it).
#
#   eval "$(bash infra/dockerd.sh start)"  # prints `export DOCKER_HOST=...`, builds the sandbox image
#   bash infra/dockerd.sh stop              # stops the daemon this script started (by its pid)
#   bash infra/dockerd.sh status
#
# AGENT_EXECUTOR_DOCKERD_DIR picks the directory (default /tmp/agent-executor-dockerd).
# start prints only the export line on stdout; everything else goes to stderr.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${AGENT_EXECUTOR_DOCKERD_DIR:-/tmp/agent-executor-dockerd}
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"
LOG="$DIR/dockerd.log"
HOST="unix://$SOCK"
log() { printf '[dockerd] %s\n' "$*" >&2; }

running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/comm" 2>/dev/null || return 1
  echo "$pid"
}

answers() {
  if command -v docker >/dev/null 2>&1; then
    timeout 5 docker -H "$HOST" version --format '{{.Server.Version}}' >/dev/null 2>&1
  else
    timeout 5 curl -sf --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1
  fi
}

build_image() {
  if [[ "${AGENT_EXECUTOR_SKIP_IMAGE:-}" == 1 ]]; then return 0; fi
  local py="$ROOT/.venv/bin/python"
  [[ -x "$py" ]] || py=python3
  (cd "$ROOT" && DOCKER_HOST="$HOST" "$py" -m tools.sandbox.docker >&2) \
    || log "warning: could not build the sandbox image (tests build it on demand)"
}

start() {
  if [[ $(id -u) -ne 0 ]]; then log "needs root (a private dockerd)"; return 1; fi
  if ! command -v dockerd >/dev/null 2>&1; then
    log "dockerd is not installed: run infra/install_sandbox_deps.sh"; return 1
  fi
  if pid=$(running_pid) && answers; then
    log "already running (pid $pid)"
  else
    mkdir -p "$DIR/data" "$DIR/exec"
    chmod 700 "$DIR"
    cat > "$DIR/daemon.json" <<JSON
{
  "hosts": ["$HOST"],
  "data-root": "$DIR/data",
  "exec-root": "$DIR/exec",
  "pidfile": "$PIDFILE",
  "iptables": false,
  "ip6tables": false,
  "ip-forward": false,
  "ip-masq": false,
  "bridge": "none",
  "userland-proxy": false,
  "log-driver": "none",
  "cgroup-parent": "agent-executor-docker",
  "features": {"buildkit": false}
}
JSON
    local t0=$SECONDS
    # Its own session: a Ctrl-C in the caller's terminal does not reach it.
    setsid dockerd --config-file "$DIR/daemon.json" >"$LOG" 2>&1 < /dev/null &
    local launched=$!
    for _ in $(seq 1 150); do
      answers && break
      if ! kill -0 "$launched" 2>/dev/null; then break; fi
      sleep 0.2
    done
    if ! answers; then
      log "dockerd did not start; last lines of $LOG:"
      tail -n 15 "$LOG" >&2 || true
      kill "$launched" 2>/dev/null || true
      return 1
    fi
    log "started (pid $(cat "$PIDFILE"), $((SECONDS - t0)) s), socket $SOCK"
  fi
  build_image
  echo "export DOCKER_HOST=$HOST"
}

stop() {
  local pid
  if ! pid=$(running_pid); then log "not running"; return 0; fi
  log "stopping pid $pid"
  kill -TERM "$pid"
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { log "stopped"; return 0; }
    sleep 0.2
  done
  log "still running after 20 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if pid=$(running_pid) && answers; then echo "running (pid $pid) $HOST"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
