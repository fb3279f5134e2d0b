"""Atomic file writes: a temporary file in the same folder, fsync, rename over the target, fsync the folder.

A crash mid-write leaves the previous file intact. Also the check that input files exist before any work.
Ground floor: imports nothing from cnnkit but its errors, so every layer (config, data, engine, cli ...) may
use it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(temporary_path), then move the finished file over `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (temp file, fsync, rename)."""
    atomic_write(path, lambda temporary: Path(temporary).write_text(text))


def require_files(paths: list[str]) -> None:
    """Raise CnnkitError naming the first of `paths` that is not a file, before any model is loaded."""
    from cnnkit.errors import CnnkitError

    for path in paths:
        if not Path(path).is_file():
            raise CnnkitError(f"image {path} not found")
