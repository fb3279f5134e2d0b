"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 70 000 28x28 grayscale images of 10 clothing classes.

Where the files are looked for, in order:

1. the ``root`` argument (``--data DIR`` on the command line),
2. ``$CNNKIT_DATA``, either holding the four files or a ``fashion-mnist`` subfolder that does,
3. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``),
4. ``~/.cache/cnnkit/fashion-mnist``, where a download goes,
5. the official download, when ``download`` is true.

Each file may be gzip-compressed or raw, with or without the ``.gz`` suffix. The whole set
decodes in ~0.3 s, so decoded tensors are not cached.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path

import torch

from cnnkit.data.datasets import ArrayDataset
from cnnkit.data.idx import read_idx
from cnnkit.errors import DataError, DatasetNotFoundError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "load_fashion_mnist",
    "find_fashion_mnist",
    "files_in",
    "download_fashion_mnist",
]

logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# Official file name -> md5 of the official .gz file (the values torchvision checks).
# Only downloads are checked: distribution packages may recompress the files (Debian's
# dataset-fashion-mnist does: different md5, same content), and read_idx validates every
# file's header and size anyway.
FASHION_MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

# The S3 *website* endpoint the Fashion-MNIST README links to serves plain HTTP only ("Amazon S3
# website endpoints do not support HTTPS", docs.aws.amazon.com/AmazonS3/latest/userguide/WebsiteEndpoints.html),
# so an https:// URL here would always fail; the md5 check above guards integrity. torchvision uses the same URL.
DOWNLOAD_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
ENVIRONMENT_VARIABLE = "CNNKIT_DATA"
_DOWNLOAD_TIMEOUT_S = 60


def cache_dir() -> Path:
    """Folder that downloads go to: ``~/.cache/cnnkit/fashion-mnist``."""
    return Path.home() / ".cache" / "cnnkit" / "fashion-mnist"


def _find_file(folder: Path, name: str) -> Path | None:
    """Returns ``folder/name`` or ``folder/name`` without ``.gz``, whichever exists."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def files_in(folder: str | Path) -> dict[str, Path] | None:
    """Maps each official file name to its file in ``folder`` (with or without .gz), or None if any is missing."""
    folder = Path(folder)
    found = {name: _find_file(folder, name) for name in FASHION_MNIST_FILES}
    if any(path is None for path in found.values()):
        return None
    return found  # type: ignore[return-value]


def candidate_dirs(root: str | Path | None = None) -> list[Path]:
    """The folders searched for the files, in order (see the module docstring)."""
    folders: list[Path] = []
    if root is not None:
        folders += [Path(root), Path(root) / "fashion-mnist"]
    environment_root = os.environ.get(ENVIRONMENT_VARIABLE)
    if environment_root:
        folders += [Path(environment_root), Path(environment_root) / "fashion-mnist"]
    folders += [SYSTEM_DIR, cache_dir()]
    return folders


def find_fashion_mnist(root: str | Path | None = None) -> dict[str, Path] | None:
    """Finds a complete set of the four files without downloading.

    Args:
        root: Folder to look in first (also its ``fashion-mnist`` subfolder).

    Returns:
        Official file name -> path of the file found, or None if no folder holds all four.
    """
    for folder in candidate_dirs(root):
        found = files_in(folder)
        if found is not None:
            logger.debug("Fashion-MNIST found in %s", folder)
            return found
    return None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_file(url: str, destination: Path, expected_md5: str) -> None:
    """Downloads ``url`` to ``destination`` atomically and checks its md5.

    The file is written to a temporary file in the same folder and renamed into place only
    after the md5 matched: an interrupted or corrupted download never leaves a file that a
    later run would mistake for a good one.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=destination.parent, prefix=destination.name + ".", suffix=".part")
    temporary = Path(temporary_name)
    try:
        with os.fdopen(handle, "wb") as file, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                file.write(block)
        actual_md5 = _md5(temporary)
        if actual_md5 != expected_md5:
            raise DataError(f"download of {url} has md5 {actual_md5}, expected {expected_md5}")
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def download_fashion_mnist(folder: str | Path | None = None) -> dict[str, Path]:
    """Downloads the four official files into ``folder`` (default: the cache folder).

    Files already present with the right md5 are kept.

    Args:
        folder: Destination folder.

    Returns:
        Official file name -> downloaded path.

    Raises:
        OSError, urllib.error.URLError, DataError: On a network failure or an md5 mismatch.
            ``load_fashion_mnist`` turns these into one DatasetNotFoundError.
    """
    folder = Path(folder) if folder is not None else cache_dir()
    paths = {}
    for name, expected_md5 in FASHION_MNIST_FILES.items():
        destination = folder / name
        if not (destination.is_file() and _md5(destination) == expected_md5):
            logger.info("downloading %s%s to %s", DOWNLOAD_URL, name, destination)
            _download_file(DOWNLOAD_URL + name, destination, expected_md5)
        paths[name] = destination
    return paths


def _not_found_message(root: str | Path | None, download: bool, download_error: BaseException | None) -> str:
    looked_at = "\n".join(f"  - {folder}" for folder in candidate_dirs(root))
    if not download:
        download_line = "Download was not attempted (download=False)."
    else:
        download_line = f"Download from {DOWNLOAD_URL} failed: {download_error}."
    return (
        "Fashion-MNIST not found. Looked for train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), "
        f"t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) in:\n{looked_at}\n{download_line}\n"
        "To fix, do one of:\n"
        "  - sudo apt-get install dataset-fashion-mnist   (Debian; installs to /usr/share/datasets/fashion-mnist)\n"
        f"  - set {ENVIRONMENT_VARIABLE}=DIR, a folder holding the four files or a fashion-mnist/ subfolder with them\n"
        "  - pass --data DIR (root=DIR in Python)"
    )


def _to_dataset(images_path: Path, labels_path: Path) -> ArrayDataset:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"Fashion-MNIST files do not match: {images_path} has shape {images.shape}, {labels_path} has shape "
            f"{labels.shape}; expected (N, 28, 28) images and (N,) labels. Replace the files with the official ones."
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{labels_path}: label {int(labels.max())} is not a Fashion-MNIST class (0..9). The file is corrupt.")
    # (N, H, W) -> (N, 1, H, W): one grayscale channel, the layout every model expects.
    images_tensor = torch.from_numpy(images).unsqueeze(1).contiguous()
    return ArrayDataset(images_tensor, torch.from_numpy(labels).to(torch.int64), list(FASHION_MNIST_CLASSES))


def load_fashion_mnist(root: str | Path | None = None, download: bool = True) -> tuple[ArrayDataset, ArrayDataset]:
    """Loads Fashion-MNIST's training and test sets.

    Args:
        root: Folder to look in first (it or its ``fashion-mnist`` subfolder must hold the files).
            Later places are searched too, see the module docstring.
        download: Download the official files into ``~/.cache/cnnkit/fashion-mnist`` when they
            are found nowhere.

    Returns:
        (train, test): 60 000 and 10 000 images, (N, 1, 28, 28) uint8, with labels 0..9 naming
        ``FASHION_MNIST_CLASSES``.

    Raises:
        DatasetNotFoundError: If no folder holds the four files and downloading was off or
            failed; the message lists the folders searched and how to install the data.
        DataError: If a file is found but corrupt (the message names it).
    """
    found = find_fashion_mnist(root)
    if found is None:
        if not download:
            raise DatasetNotFoundError(_not_found_message(root, download, None))
        try:
            found = download_fashion_mnist()
        except Exception as error:  # noqa: BLE001 - any failure (network, disk, md5) means "not available"
            raise DatasetNotFoundError(_not_found_message(root, download, error)) from error
    train = _to_dataset(found["train-images-idx3-ubyte.gz"], found["train-labels-idx1-ubyte.gz"])
    test = _to_dataset(found["t10k-images-idx3-ubyte.gz"], found["t10k-labels-idx1-ubyte.gz"])
    return train, test
