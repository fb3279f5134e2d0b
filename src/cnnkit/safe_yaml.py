"""The one YAML reader cnnkit uses (configs, `--model` network specs, YOLO data.yaml, key=value overrides).

PyYAML's `safe_load` builds no objects from tags, but it still expands aliases: a 1 kB "billion laughs"
document (`a: &a [x, x, ...]`, `b: &b [*a, *a, ...]` nine levels deep) becomes gigabytes of lists, and an
error message that prints such a value prints all of it. This loader refuses what no cnnkit file needs:

- aliases (`*name`, and so merge keys `<<: *name`): a YAMLError at the first one, before anything expands;
- documents over MAX_BYTES (1 MiB; cnnkit's YAML files are a few kB);
- nesting deeper than Python's recursion allows (caught, reported as too deep).

Errors are one line: "<file>, line L, column C: not valid YAML: <problem>", raised as the caller's error
class (ConfigError, ModelSpecError, DataError ...). `shorten` caps what an error message quotes of a value.

It is the pure-Python SafeLoader (the alias check needs its composer); cnnkit's YAML files are small.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cnnkit.errors import CnnkitError, ConfigError

__all__ = ["MAX_BYTES", "load", "load_file", "shorten"]

MAX_BYTES = 2**20
QUOTE_LIMIT = 200


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases instead of expanding them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{shorten(event.anchor, 40)}) are not supported: cnnkit refuses them, since "
                "a few of them can expand to gigabytes; write the value out", event.start_mark)
        return super().compose_node(parent, index)


def shorten(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """`str(value)` cut to `limit` characters (with how much was left out), for error messages."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def _where(error: yaml.YAMLError, source: str) -> str:
    if not isinstance(error, yaml.MarkedYAMLError):
        return f"{source}: not valid YAML: {shorten(str(error))}"
    mark = error.problem_mark or error.context_mark
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    context = ""
    if error.context and error.context_mark and error.context_mark.line != getattr(mark, "line", None):
        context = f" ({error.context} that starts on line {error.context_mark.line + 1})"
    return f"{source}{where}: not valid YAML: {shorten(error.problem)}{context}"


def load(text: str, source: str | Path = "<text>", error: type[CnnkitError] = ConfigError) -> Any:
    """Parse one YAML document with the limits of the module docstring.

    Args:
        text: The document.
        source: Where it came from (a file name), for messages.
        error: The exception class to raise (a CnnkitError subclass).

    Raises:
        `error`: invalid YAML, an alias, more than MAX_BYTES, or nesting too deep; the message names `source`.
    """
    if len(text) > MAX_BYTES:
        raise error(f"{source}: {len(text):,} characters of YAML, more than cnnkit reads ({MAX_BYTES:,}); "
                    "is it the right file?")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as problem:
        raise error(_where(problem, str(source))) from None
    except RecursionError:
        raise error(f"{source}: not valid YAML for cnnkit: nested too deeply") from None


def load_file(path: str | Path, error: type[CnnkitError] = ConfigError) -> Any:
    """`load` of a UTF-8 file; a missing, unreadable, binary or oversized file is `error` too."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise error(f"{path}: {size:,} bytes of YAML, more than cnnkit reads ({MAX_BYTES:,}); is it the right "
                        "file?")
        text = path.read_text(encoding="utf-8")
    except OSError as problem:
        raise error(f"cannot read {path}: {problem.strerror or problem}") from None
    except UnicodeDecodeError:
        raise error(f"{path} is not a text (UTF-8) file; pass a YAML file") from None
    return load(text, path, error)
