"""`cnnkit data check`: exact and near-duplicate images within and across train/val/test (leakage).

A test image that also sits in the training data (or nearly: the same photo re-encoded, resized,
brightened) measures memory, not generalisation; a validation split that overlaps training makes
early stopping and tuning optimistic. This module finds both kinds of duplicate.

**Exact duplicates**: the same decoded pixels (a BLAKE2 hash of each image's uint8 array and shape), so
a PNG and a lossless re-encoding of it count as one image; any pixel change makes them different.

**Near duplicates**: each image becomes a *thumbnail vector*: grayscale, resized to `size` x `size`
pixels (antialiased bilinear; an in-memory dataset of smaller images, such as Fashion-MNIST at 28 x 28,
keeps its size), minus its mean, divided by its norm. The dot product of two such vectors is the Pearson correlation of the thumbnails, 1 for
the same picture up to brightness and contrast. Two images are near duplicates when it is at least
`threshold` (default 0.99). What that catches: re-compression, resizing, small noise, brightness or
contrast changes, tiny edits. What it does not: crops, flips, rotations, colour-only changes
(the thumbnails are gray). On Fashion-MNIST, pairs at 0.995 and above are visibly the same product
photo with small differences; between 0.99 and 0.995 most are, some are two very similar garments
(pairs are listed and drawn so a person can judge; raise --threshold to be stricter).

All pairs are compared, as one matrix product per chunk of rows against the rows after it (the upper
triangle): O(N^2) work. To make that fast on a CPU the products are screened in bfloat16 (error below
0.006 for unit vectors; the screen keeps everything above threshold - 0.01) and the candidates are
re-scored in float32, so no pair above the threshold is missed. Measured: `cnnkit data check
fashion-mnist` (70 000 images, 2.4e9 pairs of 784-long vectors) used 21 s of CPU time (58 s wall on
a shared 2-core AMD EPYC at load average ~5, torch's 2 threads; a float32 screen measured about 3x
slower); `--exact-only` 3.6 s of CPU time, most of it importing torch. Memory: 1.4 GB peak. The bfloat16 screen
is used only where the CPU computes bf16 natively (cnnkit.device.cpu_bf16_native): on an AVX-512 Xeon without
BF16 or AMX (family 6 model 207) a 1024x784 by 784x20000 product took 1.15 s in emulated bfloat16 against 0.28 s
in float32, so the screen is float32 there.

The validation split is the one `cnnkit train` would carve (`train_val_split` with the same
val_fraction and seed, stratified), so the report speaks of the run you are about to start.
`validation_overlap_warning` is the cheap part (exact hashes only) that training runs every time.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cnnkit.data.datasets import ArrayDataset, train_val_split
from cnnkit.device import cpu_bf16_native
from cnnkit.errors import ConfigError, DataError

__all__ = ["SPLITS", "check_dataset", "exact_duplicate_groups", "format_report", "near_duplicate_pairs",
           "pixel_hashes", "plot_pairs", "thumbnail_vectors", "validation_overlap_warning"]

SPLITS = ("train", "val", "test")
DEFAULT_THRESHOLD = 0.99
DEFAULT_SIZE = 32
# bfloat16 keeps 8 significant bits: rounding both unit vectors and the product moves a dot product
# by at most ~0.006 (2^-8 for the inputs + 2^-9 for the output); the screen keeps a margin above that.
_SCREEN_MARGIN = 0.01
_CHUNK_ROWS = 1024  # rows per matrix product: (1024 x N) bfloat16 scores, 143 MB for N = 70 000
_EXAMPLES = 20  # examples kept per kind in the report


# ---------------------------------------------------------------------------- fingerprints
def pixel_hashes(images: torch.Tensor) -> list[bytes]:
    """A 16-byte BLAKE2 digest of each uint8 (C, H, W) image's pixels and shape. (B, C, H, W) -> B digests."""
    shape = str(tuple(images.shape[1:])).encode()  # the same bytes in another shape are another image
    digests = []
    for image in images.contiguous().numpy():
        digest = hashlib.blake2b(shape, digest_size=16)
        digest.update(image.tobytes())
        digests.append(digest.digest())
    return digests


def thumbnail_vectors(images: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Unit-norm, zero-mean grayscale thumbnails: uint8 (B, C, H, W) -> float32 (B, h * w), (h, w) = shape.

    Constant images (no contrast) give a zero vector: similar to nothing (exact hashing still pairs them).
    """
    gray = images.float().mean(dim=1, keepdim=True)  # (B, C, H, W) -> (B, 1, H, W)
    if tuple(gray.shape[-2:]) != tuple(shape):
        gray = F.interpolate(gray, size=tuple(shape), mode="bilinear", antialias=True, align_corners=False)
    vectors = gray.flatten(1)  # (B, h * w)
    vectors = vectors - vectors.mean(dim=1, keepdim=True)
    return F.normalize(vectors, dim=1)  # zero rows stay zero (eps in the norm)


# ---------------------------------------------------------------------------- matching
def exact_duplicate_groups(hashes: list[bytes]) -> list[list[int]]:
    """Indices that share a hash, as groups of two or more (in index order)."""
    by_hash: dict[bytes, list[int]] = defaultdict(list)
    for index, digest in enumerate(hashes):
        by_hash[digest].append(index)
    return [group for group in by_hash.values() if len(group) > 1]


def near_duplicate_pairs(vectors: torch.Tensor, threshold: float, chunk_rows: int = _CHUNK_ROWS,
                         progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs i < j with vectors[i] . vectors[j] >= threshold.

    Args:
        vectors: (N, D) unit vectors (`thumbnail_vectors`).
        threshold: Cosine similarity in (0, 1].
        chunk_rows: Rows per matrix product (memory: chunk_rows x N bfloat16).
        progress: Show a progress bar.

    Returns:
        (first, second, similarity): int64 (P,), int64 (P,), float32 (P,), first < second, sorted by first.
    """
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"near-duplicate threshold {threshold} must be in (0, 1]")
    count = len(vectors)
    vectors = vectors.float().contiguous()
    screen = vectors.to(torch.bfloat16) if cpu_bf16_native() else vectors  # emulated bf16 is slower than fp32
    screen_threshold = threshold - _SCREEN_MARGIN
    firsts, seconds, similarities = [], [], []
    chunks = range(0, count, chunk_rows)
    for start in tqdm(chunks, desc="near duplicates", unit="chunk", disable=None if progress else True, leave=False):
        stop = min(start + chunk_rows, count)
        scores = screen[start:stop] @ screen[start:].T  # (c, N - start): row i against i and everything after it
        block = scores[:, : stop - start]  # (c, c): the pairs inside the chunk; keep j > i only
        block.masked_fill_(torch.ones(stop - start, stop - start, dtype=torch.bool).tril(), -2.0)
        rows = torch.nonzero(scores.amax(dim=1) >= screen_threshold).flatten()  # most rows have no candidate
        if not len(rows):
            continue
        row_index, column_index = torch.nonzero(scores[rows] >= screen_threshold, as_tuple=True)
        first, second = start + rows[row_index], start + column_index
        exact = (vectors[first] * vectors[second]).sum(dim=1)  # re-score candidates in float32
        keep = exact >= threshold
        firsts.append(first[keep])
        seconds.append(second[keep])
        similarities.append(exact[keep])
    if not firsts:
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty.clone(), torch.empty(0)
    return torch.cat(firsts), torch.cat(seconds), torch.cat(similarities)


def validation_overlap_warning(train: ArrayDataset, val: ArrayDataset | None) -> str | None:
    """One line saying how many validation images are exact copies of training images, or None.

    Cheap (hashing, ~0.1 s for Fashion-MNIST): `cnnkit train` calls it for in-memory data every run.
    """
    if val is None or not len(val):
        return None
    train_hashes = set(pixel_hashes(train.images))
    overlapping = sum(digest in train_hashes for digest in pixel_hashes(val.images))
    if not overlapping:
        return None
    return (f"warning: {overlapping} of {len(val)} validation images are exact copies of training images, so "
            "validation accuracy is optimistic; find and remove them with `cnnkit data check DATASET`")


# ---------------------------------------------------------------------------- a dataset's images
@dataclass
class _Images:
    """Every image of a dataset, fingerprinted: where it came from and its hash and thumbnail vector."""

    names: list[str]  # file path, or "train#12" (index in the source's training/test split)
    split: torch.Tensor  # (N,) int64 index into SPLITS
    hashes: list[bytes]
    vectors: torch.Tensor  # (N, h * w)
    thumbnail: tuple[int, int]  # (h, w)
    load: Callable[[int], torch.Tensor]  # index -> uint8 (C, H, W), for drawing pairs
    unreadable: list[str]


def _split_ids(num_train: int, val_fraction: float, seed: int, labels: torch.Tensor) -> torch.Tensor:
    """0 (train) or 1 (val) for each training image, the split `cnnkit train` makes with these settings."""
    _, val_indices = train_val_split(num_train, val_fraction, seed, labels=labels)
    ids = torch.zeros(num_train, dtype=torch.int64)
    ids[val_indices] = 1
    return ids


def _in_memory_images(spec: str, size: int, val_fraction: float, seed: int) -> _Images:
    from cnnkit.data import load_dataset

    splits = load_dataset(spec)
    parts = [("train", splits.train)] + ([("test", splits.test)] if splits.test is not None else [])
    thumbnail = tuple(min(side, size) for side in splits.train.image_size)  # no upsampling of small images
    names, hashes, vectors, split_ids = [], [], [], []
    for name, dataset in parts:
        names += [f"{name}#{index}" for index in range(len(dataset))]
        for start in range(0, len(dataset), 4096):
            batch = dataset.images[start:start + 4096]
            hashes += pixel_hashes(batch)
            vectors.append(thumbnail_vectors(batch, thumbnail))
        if name == "train":
            split_ids.append(_split_ids(len(dataset), val_fraction, seed, dataset.labels))
        else:
            split_ids.append(torch.full((len(dataset),), SPLITS.index("test")))
    offsets = {"train": 0, "test": len(splits.train)}

    def load(index: int) -> torch.Tensor:
        return splits.train.images[index] if index < offsets["test"] else splits.test.images[index - offsets["test"]]

    return _Images(names, torch.cat(split_ids), hashes, torch.cat(vectors), thumbnail, load, [])


def _file_images(files, size: int, val_fraction: float, seed: int, workers: int = 8) -> _Images:
    from cnnkit.data.images import decode_image

    parts = [("train", files.train)] + ([("test", files.test)] if files.test is not None else [])
    paths = [path for _, split in parts for path in split.paths]
    split_ids = [_split_ids(len(files.train), val_fraction, seed, files.train.labels)]
    if files.test is not None:
        split_ids.append(torch.full((len(files.test),), SPLITS.index("test")))

    def fingerprint(path: Path):
        try:
            image = decode_image(path, 3)[None]  # (1, 3, H, W) at the file's own size
        except DataError:
            return None
        return pixel_hashes(image)[0], thumbnail_vectors(image, (size, size))[0]

    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes with the GIL released
        results = list(tqdm(pool.map(fingerprint, paths), total=len(paths), desc="decoding", unit="image",
                            disable=None, leave=False))
    good = [index for index, result in enumerate(results) if result is not None]
    if not good:
        raise DataError(f"cnnkit data check: none of the {len(paths)} images could be decoded")
    return _Images([str(paths[index]) for index in good], torch.cat(split_ids)[good],
                   [results[index][0] for index in good], torch.stack([results[index][1] for index in good]), (size, size),
                   lambda index: decode_image(paths[good[index]], 3),
                   [str(paths[index]) for index, result in enumerate(results) if result is None])


def _load_images(spec: str, size: int, val_fraction: float, seed: int) -> _Images:
    from cnnkit.data.streaming import scan_dataset
    from cnnkit.errors import DatasetNotFoundError

    try:
        files = scan_dataset(spec)
    except DatasetNotFoundError:
        raise
    except DataError:  # Fashion-MNIST / IDX files: in memory only
        return _in_memory_images(spec, size, val_fraction, seed)
    return _file_images(files, size, val_fraction, seed)


# ---------------------------------------------------------------------------- the check
def _pair_kind(first_split: int, second_split: int) -> str:
    low, high = sorted((first_split, second_split))
    return f"{SPLITS[low]}-{SPLITS[high]}"


def _leaks(pairs: list[tuple[int, int]], split: torch.Tensor) -> dict[str, int]:
    """Distinct val images with a duplicate in train, and test images with one in train or val."""
    val_in_train, test_in_train_or_val = set(), set()
    for first, second in pairs:
        kinds = {int(split[first]): first, int(split[second]): second}
        if 0 in kinds and 1 in kinds:
            val_in_train.add(kinds[1])
        if 2 in kinds and len(kinds) == 2:
            test_in_train_or_val.add(kinds[2])
    return {"val_images_in_train": len(val_in_train), "test_images_in_train_or_val": len(test_in_train_or_val)}


def check_dataset(spec: str, threshold: float = DEFAULT_THRESHOLD, size: int = DEFAULT_SIZE,
                  val_fraction: float = 0.1, seed: int = 0, near: bool = True, progress: bool = True) -> dict[str, Any]:
    """Find exact and near-duplicate images in a dataset, within and across train/val/test.

    Args:
        spec: A dataset as `cnnkit train --data` takes it (fashion-mnist, a folder, a CSV).
        threshold: Near duplicates: thumbnail correlation at least this (see the module docstring).
        size: Thumbnails are size x size pixels (in-memory datasets of smaller images keep their size).
        val_fraction, seed: The validation split `cnnkit train` would use (its settings of the same name).
        near: Also look for near duplicates (O(N^2)); False: exact duplicates only.
        progress: Progress bars (on a terminal).

    Returns:
        A JSON-ready report: split sizes, and for "exact" and "near" the counts per pair of splits
        ("train-val", "train-test" ...), the leaking images, and examples (names; near ones with
        their similarity). The private key "_images" holds what `plot_pairs` needs.
    """
    if size < 1:
        raise ConfigError(f"--size must be 1 or more, got {size}")
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"near-duplicate threshold {threshold} must be in (0, 1]")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    started = time.perf_counter()
    images = _load_images(spec, size, val_fraction, seed)
    split = images.split
    report: dict[str, Any] = {
        "dataset": spec, "val_fraction": val_fraction, "seed": seed,
        "splits": {name: int((split == index).sum()) for index, name in enumerate(SPLITS)},
        "unreadable": images.unreadable,
    }
    groups = exact_duplicate_groups(images.hashes)
    exact_pairs = [pair for group in groups for pair in itertools.combinations(group, 2)]
    exact_kinds: dict[str, int] = defaultdict(int)
    for first, second in exact_pairs:
        exact_kinds[_pair_kind(int(split[first]), int(split[second]))] += 1
    report["exact"] = {
        "definition": "identical decoded pixels",
        "groups": len(groups), "images": sum(len(group) for group in groups), "pairs": dict(exact_kinds),
        **_leaks(exact_pairs, split),
        "examples": [[f"{images.names[index]} ({SPLITS[int(split[index])]})" for index in group]
                     for group in sorted(groups, key=lambda group: -len(set(split[group].tolist())))[:_EXAMPLES]],
    }
    near_examples: list[tuple[int, int, float]] = []
    if near:
        first, second, similarity = near_duplicate_pairs(images.vectors, threshold, progress=progress)
        identical = torch.tensor([images.hashes[a] == images.hashes[b] for a, b in zip(first.tolist(), second.tolist())],
                                 dtype=torch.bool)
        first, second, similarity = first[~identical], second[~identical], similarity[~identical]
        pairs = list(zip(first.tolist(), second.tolist()))
        near_kinds: dict[str, int] = defaultdict(int)
        for a, b in pairs:
            near_kinds[_pair_kind(int(split[a]), int(split[b]))] += 1
        # Examples: leaking (cross-split) pairs first, then the most similar.
        crossing = (split[first] != split[second]).float()
        order = sorted(range(len(pairs)), key=lambda k: (-float(crossing[k]), -float(similarity[k])))[:_EXAMPLES]
        near_examples = [(pairs[k][0], pairs[k][1], float(similarity[k])) for k in order]
        report["near"] = {
            "definition": f"correlation of {images.thumbnail[0]}x{images.thumbnail[1]} grayscale thumbnails >= {threshold} "
                          "(not identical)",
            "threshold": threshold, "pairs": dict(near_kinds), "total_pairs": len(pairs), **_leaks(pairs, split),
            "examples": [{"first": f"{images.names[a]} ({SPLITS[int(split[a])]})",
                          "second": f"{images.names[b]} ({SPLITS[int(split[b])]})", "similarity": round(s, 5)}
                         for a, b, s in near_examples],
        }
    report["seconds"] = round(time.perf_counter() - started, 2)
    report["_images"] = (images, [group[:2] for group in groups[:_EXAMPLES]], near_examples)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as the lines `cnnkit data check` prints."""
    sizes = report["splits"]
    lines = [f"{report['dataset']}: {sizes['train']} train + {sizes['val']} val (val_fraction {report['val_fraction']}, "
             f"seed {report['seed']}) + {sizes['test']} test images, checked in {report['seconds']:.1f} s"]
    if report["unreadable"]:
        lines.append(f"  {len(report['unreadable'])} unreadable files skipped, e.g. {report['unreadable'][0]}")
    for kind in ("exact", "near"):
        if kind not in report:
            continue
        part = report[kind]
        total = part["groups"] if kind == "exact" else part["total_pairs"]
        counted = "groups" if kind == "exact" else "pairs"
        by_splits = ", ".join(f"{name} {count}" for name, count in sorted(part["pairs"].items())) or "none"
        lines.append(f"{kind} duplicates ({part['definition']}): {total} {counted}; pairs by splits: {by_splits}")
        leaks = [f"{part['val_images_in_train']} val images have one in train"] if sizes["val"] else []
        if sizes["test"]:
            leaks.append(f"{part['test_images_in_train_or_val']} test images have one in train or val")
        if leaks:
            flagged = part["val_images_in_train"] or part["test_images_in_train_or_val"]
            lines.append(f"  {'LEAKAGE' if flagged else 'leakage'}: " + "; ".join(leaks))
        for example in part["examples"][:5]:
            if kind == "exact":
                lines.append("    same pixels: " + ", ".join(example))
            else:
                lines.append(f"    {example['similarity']:.4f}: {example['first']} ~ {example['second']}")
    return "\n".join(lines)


def plot_pairs(report: dict[str, Any], path: str | Path, max_pairs: int = 12) -> Path:
    """A PNG of example pairs (exact first, then near), one pair per column, named and scored."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, exact_pairs, near_examples = report["_images"]
    shown = [(a, b, "identical") for a, b in exact_pairs] + [(a, b, f"{s:.4f}") for a, b, s in near_examples]
    shown = shown[:max_pairs]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = max(1, len(shown))
    figure, axes = plt.subplots(2, columns, figsize=(1.6 * columns, 3.6), squeeze=False)
    for column, (first, second, label) in enumerate(shown):
        for row, index in enumerate((first, second)):
            image = images.load(index)  # (C, H, W) uint8
            axis = axes[row][column]
            axis.imshow(image.permute(1, 2, 0).numpy() if image.shape[0] == 3 else image[0].numpy(),
                        cmap="gray", vmin=0, vmax=255)
            if row == 0:
                axis.set_title(label, fontsize=7)
            name = Path(images.names[index]).name
            name = name if len(name) <= 18 else "..." + name[-15:]
            axis.set_xlabel(f"{name} [{SPLITS[int(images.split[index])]}]", fontsize=6)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    if not shown:
        axes[0][0].set_title("no duplicates found", fontsize=8)
    figure.suptitle("duplicate pairs: top row and bottom row of each column (score: thumbnail correlation)",
                    fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
