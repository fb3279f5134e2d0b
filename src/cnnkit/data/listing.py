"""Listing a dataset's image files and labels, without decoding: class-folder trees and CSV files.

Shared by the in-memory loaders (``folder.py``) and the streaming ``FileDataset``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from cnnkit.data.images import IMAGE_EXTENSIONS, is_image_file
from cnnkit.errors import DataError, DatasetNotFoundError

__all__ = ["FOLDER_LAYOUT_HELP", "scan_image_folder", "read_csv_index"]

FOLDER_LAYOUT_HELP = (
    "Expected one subfolder per class holding that class's images, e.g.\n"
    "  ROOT/cat/0001.png\n  ROOT/cat/0002.jpg\n  ROOT/dog/0001.png\n"
    "(for a train/test split: ROOT/train/<class>/... and ROOT/test/<class>/...)."
)


def scan_image_folder(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """Lists the images of a class-folder tree without decoding them.

    Class order is the sorted folder names, file order the sorted paths within each class
    (recursively, skipping hidden files and folders): the same tree always gives the same
    labels and order.

    Args:
        root: Folder with one subfolder per class.

    Returns:
        (paths, labels, classes).

    Raises:
        DatasetNotFoundError: If root does not exist.
        DataError: If root has no class folders, or a class folder has no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist or is not a folder. {FOLDER_LAYOUT_HELP}")
    class_dirs = sorted(
        (entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")), key=lambda entry: entry.name
    )
    if not class_dirs:
        loose = [entry.name for entry in root.iterdir() if entry.is_file() and is_image_file(entry)]
        found = f"it holds {len(loose)} images directly but no class folders" if loose else "it has no class folders"
        raise DataError(f"image folder {root}: {found}. {FOLDER_LAYOUT_HELP}")
    paths: list[Path] = []
    labels: list[int] = []
    empty: list[str] = []
    for label, class_dir in enumerate(class_dirs):
        # Hidden files and folders (.ipynb_checkpoints, ._foo.jpg from macOS) are not data. Entries with an image
        # name that are not readable files (a folder named x.png, a symlink loop or a broken link) are listed
        # too: decoding them fails, so the loaders skip them and count them, instead of dropping them unseen.
        files = sorted(
            path
            for path in class_dir.rglob("*")
            if is_image_file(path)
            and not any(part.startswith(".") for part in path.relative_to(class_dir).parts)
        )
        if not files:
            empty.append(class_dir.name)
        paths += files
        labels += [label] * len(files)
    if empty:
        raise DataError(
            f"image folder {root}: class folder(s) {', '.join(empty)} contain no image files "
            f"(extensions looked for: {' '.join(IMAGE_EXTENSIONS)}). "
            f"Add images or remove the folder(s). {FOLDER_LAYOUT_HELP}"
        )
    return paths, labels, [class_dir.name for class_dir in class_dirs]


def _sorted_labels(names: set[str]) -> list[str]:
    # Integer labels sort numerically ("2" before "10"), so label "3" gets index 3 when the
    # labels are 0..K-1; any other labels sort as strings.
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def read_csv_index(path: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """Reads a CSV with header ``path,label`` into (paths, labels, classes) without decoding.

    Relative paths are relative to the CSV's folder. Labels are class names; classes are the
    sorted unique labels (numerically when every label is an integer). Blank lines are
    skipped; other columns are ignored.

    Raises:
        DatasetNotFoundError: If the CSV does not exist.
        DataError: On a missing header column, a row with too few fields or an empty path or
            label (the message gives the file and line number), or no rows at all.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"CSV file {path} does not exist. Expected a CSV with header 'path,label'.")
    rows: list[tuple[str, str]] = []
    # utf-8-sig: spreadsheet programs often write a byte-order mark before the header.
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        columns = [name.strip().lower() for name in header] if header else []
        if "path" not in columns or "label" not in columns:
            raise DataError(
                f"{path}, line 1: header must name the columns 'path' and 'label', found {header}. "
                "Write a first line 'path,label', then one 'image_path,class_name' row per image."
            )
        path_column, label_column = columns.index("path"), columns.index("label")
        needed = max(path_column, label_column) + 1
        try:
            for row in reader:
                if not row or all(not field.strip() for field in row):
                    continue
                if len(row) < needed:
                    raise DataError(
                        f"{path}, line {reader.line_num}: expected {needed} fields (path,label), found {len(row)}: "
                        f"{','.join(row)!r}. Fix or remove the row."
                    )
                image_path, label = row[path_column].strip(), row[label_column].strip()
                if not image_path or not label:
                    missing = "path" if not image_path else "label"
                    raise DataError(f"{path}, line {reader.line_num}: empty {missing} in {','.join(row)!r}. Fix or remove the row.")
                rows.append((image_path, label))
        except csv.Error as error:
            raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({error}). Fix the quoting of that row.") from None
    if not rows:
        raise DataError(f"{path} has a header but no rows. Add one 'image_path,class_name' row per image.")
    classes = _sorted_labels({label for _, label in rows})
    index_of = {name: index for index, name in enumerate(classes)}
    paths = [Path(image_path) if Path(image_path).is_absolute() else path.parent / image_path for image_path, _ in rows]
    return paths, [index_of[label] for _, label in rows], classes
