"""Atomic file writes: a temporary file in the same folder, fsync, rename over the target, fsync the folder.

A crash mid-write leaves the previous file intact (and a `.NAME.*.tmp` file that `sweep_temporaries` removes
when the folder is next written by a resumed run). Finished files get the mode any other tool would give
them (0666 less the umask), not mkstemp's private 0600, so a run directory can be shared.
Also the check that input files exist before any work.
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
        os.chmod(temporary, 0o666 & ~current_umask())
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        _fault_point(path)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sweep_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporaries of atomic writes that a killed process left in `folder`; return them.

    Only call it where no other process is writing to `folder` (a run directory being resumed).
    """
    removed = []
    for temporary in Path(folder).glob(".*.tmp"):
        if temporary.is_file():
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed


# Fault injection for crash-safety tests: CNNKIT_KILL_BEFORE_RENAME=NAME:K kills this process with SIGKILL just
# before the K-th atomic write of a file named NAME is renamed into place (the temporary written, the old file
# still there): the moment a power cut or `kill -9` would do the most harm. Unset, it costs one dict lookup.
_fault_counts: dict[str, int] = {}


def _fault_point(path: Path) -> None:
    spec = os.environ.get("CNNKIT_KILL_BEFORE_RENAME")
    if not spec:
        return
    name, _, count = spec.rpartition(":")
    if path.name != name:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] == int(count):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (temp file, fsync, rename)."""
    atomic_write(path, lambda temporary: Path(temporary).write_text(text))


def require_files(paths: list[str]) -> None:
    """Raise CnnkitError naming the first of `paths` that is not a file, before any model is loaded."""
    from cnnkit.errors import CnnkitError

    for path in paths:
        if not Path(path).is_file():
            raise CnnkitError(f"image {path} not found")
