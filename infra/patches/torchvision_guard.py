"""Guard torchvision's meta registrations when its C extension cannot load.

torchvision 0.28.0 from the registry is linked against CUDA torch. With the CPU
build of torch its extension does not load, and ``torchvision/_meta_registrations.py``
then fails at import on ``register_fake("torchvision::nms")`` (the op does not
exist). SGLang imports ``torchvision.transforms`` at start-up, so the whole engine
would fail. This wraps that module's body so it is skipped when the ops are
absent. Idempotent; does nothing where the extension loads.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

MARKER = "# agent-executor: guarded"


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("[install] torchvision not installed; nothing to guard", file=sys.stderr)
        return 0
    path = Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    if MARKER in text:
        return 0
    impl = path.with_name("_meta_registrations_unguarded.py")
    impl.write_text(text)
    path.write_text(
        f"{MARKER}\n"
        "import torch\n\n"
        "try:\n"
        "    torch.ops.torchvision.nms  # the extension's ops exist only if it loaded\n"
        "except (AttributeError, RuntimeError):\n"
        "    pass\n"
        "else:\n"
        "    from torchvision._meta_registrations_unguarded import *  # noqa: F401,F403\n"
    )
    print(f"[install] guarded {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
