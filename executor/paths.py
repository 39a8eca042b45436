"""Where the executor keeps its files by default: ``$EXECUTOR_HOME`` (else the user's
data directory) holds the journal, which also carries the operator's commands."""

from __future__ import annotations

import os
from pathlib import Path


def default_journal_path() -> Path:
    root = os.environ.get("EXECUTOR_HOME")
    base = Path(root) if root else Path.home() / ".local" / "share" / "agent-executor"
    return base / "journal.sqlite"
