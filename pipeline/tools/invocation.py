"""How a printed hint names the shems command, so a new user can paste it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def shems_command() -> str:
    """How to run shems again from the shell this one was started in: ``shems`` when that is on
    the PATH (an activated venv, a pip install), else the venv's own script, relative to the
    working directory when it lies below it (``make demo`` runs ``.venv/bin/shems``, and a new
    user's shell has no ``shems``)."""
    script = Path(sys.executable).parent / "shems"
    found = shutil.which("shems")
    if found and (not script.exists() or Path(found).resolve() == script.resolve()):
        return "shems"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)
