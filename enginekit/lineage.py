"""Where a bundle came from: code version (git commit or package version)."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE = "int8-search-pipeline"


def code_version(repository: Path | None = None) -> str:
    """``git:<commit>[-dirty]`` when run from a checkout, else ``pkg:<version>``."""
    repository = repository or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(repository), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repository), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        return f"git:{commit}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        try:
            return f"pkg:{metadata.version(PACKAGE)}"
        except metadata.PackageNotFoundError:
            return "unknown"
