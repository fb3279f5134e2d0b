"""The one evaluation loop: the Trainer's validation, every predictor's `evaluate` and the report use it.

A task (cnnkit.tasks.base.Task) turns batches into metrics: `to_device`, `evaluation_step`, `update_meter`
into the meter from `new_meter`. Under DDP each rank evaluates its shard and the meter's tensors are summed.

Under DDP the shards may differ by a batch (evaluation loaders are unpadded so every item counts once; a rank
may even have none). That is safe because nothing here communicates inside the loop: the model is the
unwrapped module (no DDP forward, so no buffer broadcast; SyncBatchNorm in eval mode uses its running
statistics), and the one collective, the sum of the meter's tensors, comes after the last batch on every
rank. The meters accumulate on the device of the outputs (no host copy per batch); `all_reduce_sum` reduces
them on the rank's device, as NCCL requires. tests/test_gpu_path.py runs this with gloo ranks of 2, 1 and
0 batches.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from cnnkit.device import autocast
from cnnkit.engine.distributed import DistInfo, all_reduce_sum


@torch.no_grad()
def evaluate_split(task, model: nn.Module, loader, device: torch.device, amp_dtype: torch.dtype | None = None,
                   dist_info: DistInfo | None = None, on_batch: Callable | None = None):
    """Run `model` over every batch of `loader` in eval mode; return the task's filled meter.

    Args:
        task: Supplies to_device, evaluation_step, new_meter, update_meter.
        model: The network (left in the train/eval mode it came in).
        amp_dtype: Autocast dtype (None: fp32).
        dist_info: Under DDP, the meter's tensors are summed over the ranks.
        on_batch: Called as on_batch(images, targets, result) after each batch; returning True stops early
            (the report's time budget).
    """
    was_training = model.training
    model.eval()
    meter = task.new_meter()
    try:
        with autocast(device, amp_dtype):
            for images, targets in loader:
                images, targets = task.to_device(images, targets, device)
                result = task.evaluation_step(model, images, targets)
                task.update_meter(meter, result, targets)
                if on_batch is not None and on_batch(images, targets, result):
                    break
    finally:
        model.train(was_training)
    if dist_info is not None and dist_info.enabled:
        for tensor in meter.tensors():
            all_reduce_sum(tensor, dist_info)
    return meter
