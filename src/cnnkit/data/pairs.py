"""Verification pairs: LFW's `pairs.txt` layout and a plain pairs CSV.

LFW (Huang et al. 2007, "Labeled Faces in the Wild"): a folder of person folders (`Name/Name_0001.jpg`)
and a pairs.txt whose first line is "FOLDS PAIRS" (10 300), then per fold PAIRS matched lines "Name i j"
and PAIRS mismatched lines "Name1 i Name2 j" (1-based image numbers). The order is kept: the 10-fold
accuracy takes the folds as consecutive blocks, as the protocol does.

A pairs CSV has a header and the columns `first,second,same` (paths relative to the CSV's folder,
same 1/0 or true/false).
"""

from __future__ import annotations

import csv
from pathlib import Path

from cnnkit.errors import DataError


def read_lfw_pairs(pairs_file: str | Path, images_root: str | Path | None = None) -> list[tuple[Path, Path, bool]]:
    """(first image, second image, same person) for every line of an LFW pairs.txt."""
    pairs_file = Path(pairs_file)
    root = Path(images_root) if images_root else pairs_file.parent / "lfw"
    if not root.is_dir():
        root = pairs_file.parent
    try:
        lines = [line.split() for line in pairs_file.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {pairs_file}: {error}") from None
    pairs = []
    for number, fields in enumerate(lines[1:] if lines and len(lines[0]) == 2 else lines, start=2):
        try:
            if len(fields) == 3:
                name, first, second = fields[0], int(fields[1]), int(fields[2])
                pairs.append((_image(root, name, first), _image(root, name, second), True))
            elif len(fields) == 4:
                pairs.append((_image(root, fields[0], int(fields[1])), _image(root, fields[2], int(fields[3])), False))
            else:
                raise ValueError(f"{len(fields)} fields")
        except ValueError as error:
            raise DataError(f"{pairs_file}, line {number}: expected 'Name i j' or 'Name1 i Name2 j' ({error})") from None
    if not pairs:
        raise DataError(f"{pairs_file} lists no pairs")
    return pairs


def _image(root: Path, name: str, number: int) -> Path:
    return root / name / f"{name}_{number:04d}.jpg"


def read_pairs_csv(path: str | Path) -> list[tuple[Path, Path, bool]]:
    """(first, second, same) from a CSV with the header first,second,same."""
    path = Path(path)
    try:
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read {path}: {error}") from None
    pairs = []
    for number, row in enumerate(rows, start=2):
        try:
            same = str(row["same"]).strip().lower()
            if same not in ("1", "0", "true", "false"):
                raise ValueError(f"same={row['same']!r}")
            pairs.append((path.parent / row["first"], path.parent / row["second"], same in ("1", "true")))
        except (KeyError, ValueError) as error:
            raise DataError(f"{path}, line {number}: needs columns first,second,same with same 1/0 ({error})") from None
    if not pairs:
        raise DataError(f"{path} lists no pairs")
    return pairs


def read_pairs(path: str | Path, images_root: str | Path | None = None) -> list[tuple[Path, Path, bool]]:
    """A pairs CSV (.csv) or an LFW pairs.txt (anything else)."""
    return read_pairs_csv(path) if str(path).lower().endswith(".csv") else read_lfw_pairs(path, images_root)
