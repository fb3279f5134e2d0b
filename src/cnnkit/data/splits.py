"""The seeded validation split: one function for every task (hand-written: it is a few lines of
``torch.randperm``, and its exact output is part of every run's reproducibility contract).

``train_val_split`` holds a fraction of ``range(num_samples)`` out for validation, drawn with a
``torch.Generator`` seeded by the run's seed, so a resumed or repeated run validates on the same samples.
Its callers and the options they use (each caller's split is pinned by tests/test_data_consolidated.py):

    classification (tasks/classification/data.py, data/check.py)   round(f * n) held out, maybe 0;
                                                                    stratified by label; both parts sorted
    segmentation (tasks/segmentation/data.py)                       min_val=1; both parts sorted
    detection, instance (tasks/detection/data.py)                   min_val=1, val_order="drawn": validation
                                                                    in the permutation's order, train sorted
"""

from __future__ import annotations

import torch

from cnnkit.errors import DataError

__all__ = ["train_val_split"]


def train_val_split(
    num_samples: int,
    val_fraction: float,
    seed: int,
    labels: torch.Tensor | None = None,
    *,
    min_val: int = 0,
    val_order: str = "sorted",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits ``range(num_samples)`` into train and validation indices, deterministically.

    The split depends only on the arguments: the same arguments give the same split on every machine.

    Args:
        num_samples: Number of samples to split.
        val_fraction: Fraction in [0, 1) that goes to validation; the validation size is
            ``max(min_val, round(val_fraction * num_samples))``. 0 (with min_val 0) gives an empty
            validation set.
        seed: Seed of the torch.Generator that draws the permutation.
        labels: Optional (num_samples,) labels. When given, the split is stratified: each class
            contributes ``round(val_fraction * class_count)`` samples, so rare classes appear in
            validation in proportion (``min_val`` and ``val_order`` do not apply).
        min_val: Smallest validation size (unstratified).
        val_order: "sorted" (ascending) or "drawn" (the order of the permutation; unstratified).

    Returns:
        (train_indices, val_indices): int64 tensors, disjoint, together covering ``range(num_samples)``;
        train always sorted (subsets keep the file order: readable, sequential memory access), validation
        as ``val_order`` says.

    Raises:
        DataError: If val_fraction is outside [0, 1), labels have the wrong length or val_order is unknown.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}. Use e.g. 0.1 for 10% validation.")
    if val_order not in ("sorted", "drawn"):
        raise DataError(f"val_order must be 'sorted' or 'drawn', got {val_order!r}.")
    generator = torch.Generator().manual_seed(seed)
    if labels is None:
        num_val = max(min_val, round(val_fraction * num_samples))
        permutation = torch.randperm(num_samples, generator=generator)
        val_indices = permutation[:num_val]
    else:
        labels = torch.as_tensor(labels)
        if labels.shape != (num_samples,):
            raise DataError(f"stratified split: labels have shape {tuple(labels.shape)}, expected ({num_samples},).")
        val_parts = []
        # Classes in sorted order and one generator: the draw order is fixed, so the split is too.
        for label in torch.unique(labels).tolist():
            class_indices = torch.nonzero(labels == label).flatten()
            num_val = round(val_fraction * class_indices.numel())
            order = torch.randperm(class_indices.numel(), generator=generator)
            val_parts.append(class_indices[order[:num_val]])
        val_indices = torch.cat(val_parts) if val_parts else torch.empty(0, dtype=torch.int64)
    is_val = torch.zeros(num_samples, dtype=torch.bool)
    is_val[val_indices] = True
    # nonzero returns ascending indices.
    train_indices = torch.nonzero(~is_val).flatten()
    if labels is None and val_order == "drawn":
        return train_indices, val_indices
    return train_indices, torch.nonzero(is_val).flatten()
