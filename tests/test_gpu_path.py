"""The CUDA and multi-process paths (issue 23), checked on the CPU wherever they can be.

NCCL's rules are checked with gloo: the process group is created device-bound ("cpu:gloo", as NCCL is bound
to CUDA), the ranks get unequal evaluation shards, and every collective goes through cnnkit's helpers. What
needs a GPU (the sync-free step, torchvision's RoIAlign kernel on CUDA) runs only where CUDA is present;
benchmarks/gpu_check.py is the end-to-end check for a GPU machine.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as multiprocessing
import torch.nn as nn
from PIL import Image
from torch.utils.data import TensorDataset

import cnnkit.device as device_module
import cnnkit.engine.distributed as distributed
from cnnkit.data import StreamingLoader, TensorLoader
from cnnkit.data.augment_ops import ColorJitter
from cnnkit.data.sharded_loader import ShardedLoader
from cnnkit.data.streaming import scan_dataset
from cnnkit.engine.distributed import DistInfo, barrier, broadcast_object, check_same_on_all_ranks
from cnnkit.engine.evaluate import evaluate_split
from cnnkit.errors import CheckpointError
from cnnkit.layers.roi_align import MatmulRoIAlign, uses_matmul
from cnnkit.losses.segmentation import SegmentationLoss
from cnnkit.metrics.classification import ClassificationMeter
from cnnkit.metrics.segmentation import SegmentationMeter

CUDA = torch.cuda.is_available()


# ---------------------------------------------------------------- item 1: each rank binds its own GPU
def test_init_distributed_binds_the_rank_gpu_before_the_group(monkeypatch):
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: calls.append(("init", kwargs)))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 11)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 16)
    info = distributed.init_distributed(torch.device("cuda"))  # a bare "cuda": LOCAL_RANK's GPU
    assert calls == [("set_device", torch.device("cuda", 3)),
                     ("init", {"backend": "nccl", "device_id": torch.device("cuda", 3)})]
    assert (info.rank, info.world_size, info.local_rank, info.device) == (11, 16, 3, torch.device("cuda", 3))


def test_broadcast_object_names_the_rank_device(monkeypatch):
    seen = {}

    def broadcast_object_list(holder, src, device):
        seen.update(src=src, device=device)

    monkeypatch.setattr(distributed.dist, "broadcast_object_list", broadcast_object_list)
    broadcast_object("run", DistInfo(rank=1, world_size=2, local_rank=1, device=torch.device("cuda", 1)))
    assert seen == {"src": 0, "device": torch.device("cuda", 1)}


# ------------------------------------------- items 1, 2, 3, 9: collectives with gloo ranks of unequal shards
class _SignTask:
    """Classifies x by its sign: logits (-x, x); the label of item i is i % 2 (so about half are right)."""

    def to_device(self, images, targets, device):
        return images.to(device), targets.to(device)

    def evaluation_step(self, model, images, targets):
        logits = torch.cat([-images, images], dim=1)
        return {"outputs": logits, "loss": torch.nn.functional.cross_entropy(logits, targets, reduction="sum")}

    def new_meter(self):
        return ClassificationMeter(["neg", "pos"])

    def update_meter(self, meter, result, targets):
        meter.update(result["outputs"], targets, result["loss"])


def _rank_main(rank: int, store: str, out: str) -> None:
    dist.init_process_group("cpu:gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    info = DistInfo(rank=rank, world_size=2, local_rank=rank, device=torch.device("cpu"))
    results = {}
    for count in (3, 1):  # rank batches 2 and 1; then 1 and 0
        values = torch.arange(count, dtype=torch.float32).view(-1, 1) - 0.5
        loader = ShardedLoader(TensorDataset(values, torch.arange(count) % 2), batch_size=1, train=False,
                               rank=rank, world_size=2)
        meter = evaluate_split(_SignTask(), nn.Identity(), loader, torch.device("cpu"), None, info)
        results[f"batches_{count}"] = len(loader)
        results[f"metrics_{count}"] = meter.compute()
    results["broadcast"] = broadcast_object(f"from rank {rank}", info)
    check_same_on_all_ranks(5, info, "the epoch")  # equal: passes on both
    try:
        check_same_on_all_ranks(rank, info, "the epoch of last.safetensors")
        results["mismatch"] = None
    except CheckpointError as error:
        results["mismatch"] = str(error)
    barrier(info)
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def test_gloo_ranks_with_unequal_evaluation_shards_sum_every_item_once(tmp_path):
    multiprocessing.spawn(_rank_main, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["batches_3"] for r in ranks] == [2, 1] and [r["batches_1"] for r in ranks] == [1, 0]
    for result in ranks:  # the same summed metrics on both ranks: each item counted once
        assert result["metrics_3"]["count"] == 3 and result["metrics_1"]["count"] == 1
        # values -0.5, 0.5, 1.5 with labels 0, 1, 0: the first two right
        assert result["metrics_3"]["accuracy"] == pytest.approx(2 / 3)
        assert result["metrics_1"]["accuracy"] == 1.0
        assert result["broadcast"] == "from rank 0"
    assert ranks[0]["mismatch"] and ranks[1]["mismatch"]  # both ranks stop, not only the one that differs
    assert "rank 1: 1, rank 0: 0" in ranks[1]["mismatch"] and "must be one shared folder" in ranks[1]["mismatch"]


def test_all_reduce_sum_hands_the_collective_a_tensor_on_the_rank_device(monkeypatch):
    handed = []
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda tensor, op: (handed.append(tensor), tensor.mul_(2)))
    meter_counts = torch.tensor([1, 2], dtype=torch.int64)
    distributed.all_reduce_sum(meter_counts, DistInfo(rank=0, world_size=2, device=torch.device("cpu")))
    assert handed[0] is meter_counts and meter_counts.tolist() == [2, 4]  # on the device: reduced in place
    if CUDA:  # a CPU meter under NCCL: reduced on the GPU, copied back
        counts = torch.tensor([1, 2])
        distributed.all_reduce_sum(counts, DistInfo(rank=0, world_size=2, device=torch.device("cuda", 0)))
        assert handed[1].device.type == "cuda" and counts.tolist() == [2, 4]


# ---------------------------------------------------------------- item 3: equal batch counts for every loader
def _write_png(path: Path, seed: int, size=(12, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = numpy.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=numpy.uint8)
    Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("count,world_size,batch_size", [(11, 2, 2), (1001, 2, 1), (7, 3, 4), (5, 4, 1)])
def test_training_loaders_give_every_rank_the_same_number_of_batches(count, world_size, batch_size):
    images = torch.zeros(count, 1, 4, 4, dtype=torch.uint8)
    labels = torch.arange(count) % 3
    for drop_last in (True, False):
        lengths = []
        for rank in range(world_size):
            loader = TensorLoader(images, labels, batch_size, [0.5], [0.5], shuffle=True, augment=None,
                                  drop_last=drop_last, seed=0, rank=rank, world_size=world_size)
            lengths.append((len(loader), sum(1 for _ in loader)))
        assert len(set(lengths)) == 1 and lengths[0][0] == lengths[0][1], lengths
    if count // world_size >= batch_size:  # (ShardedLoader refuses a shard without a full batch)
        lengths = [len(list(ShardedLoader(TensorDataset(torch.arange(count)), batch_size, train=True,
                                          rank=rank, world_size=world_size)))
                   for rank in range(world_size)]
        assert len(set(lengths)) == 1, lengths


def test_streaming_training_replaces_a_batch_of_only_unreadable_files(tmp_path):
    for index in range(7):
        _write_png(tmp_path / "d" / ("a" if index % 2 else "b") / f"{index}.png", index)
    (tmp_path / "d" / "a" / "broken.png").write_bytes(b"not an image")
    split = scan_dataset(tmp_path / "d").train  # 8 files, one unreadable
    arguments = dict(batch_size=1, mean=[0.5] * 3, std=[0.5] * 3, augment=None, drop_last=True, seed=0,
                     world_size=2, num_workers=0, max_bad_fraction=0.5)
    for shuffle in (True, False):
        counts = []
        for rank in range(2):
            loader = StreamingLoader(split, 3, (12, 12), shuffle=shuffle, rank=rank, **arguments)
            with pytest.warns(UserWarning, match="broken.png") if _has_broken(loader) else _no_warning():
                batches = list(loader)
            counts.append(len(batches))
            assert all(len(labels) == 1 for _, labels in batches)
        # training: every rank len() batches; evaluation order (no shuffle): the broken file's batch is left out
        assert counts == [4, 4] if shuffle else sorted(counts) == [3, 4], (shuffle, counts)


def _has_broken(loader: StreamingLoader) -> bool:
    return any(loader.split.paths[index].name == "broken.png"
               for batch in loader.epoch_batches(loader.epoch) for index, _ in batch)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ------------------------------------------------ items 5 and 8: workers persist; resized crop from the file
def test_streaming_workers_persist_and_resized_crop_cuts_from_the_decoded_file(tmp_path):
    for index in range(8):
        _write_png(tmp_path / "d" / ("a" if index % 2 else "b") / f"{index}.png", index, size=(40, 60))
    split = scan_dataset(tmp_path / "d").train
    from cnnkit.data.augment import AugmentConfig

    arguments = dict(batch_size=4, mean=[0.5] * 3, std=[0.5] * 3, shuffle=True, drop_last=True, seed=1,
                     augment=AugmentConfig(hflip=True, resized_crop=0.35))
    persistent = StreamingLoader(split, 3, (16, 16), num_workers=1, **arguments)
    in_process = StreamingLoader(split, 3, (16, 16), num_workers=0, **arguments)
    assert persistent.dataset.size is None  # decoded at the file's own 40x60, not squashed to 16x16 first
    first = [images for images, _ in persistent]
    loader = persistent._loader
    second = [images for images, _ in persistent]
    assert persistent._loader is loader and loader.persistent_workers  # the same workers, epoch after epoch
    for epoch_batches in (first, second):
        assert all(images.shape == (4, 3, 16, 16) for images in epoch_batches)
    expected = [images for _ in range(2) for images, _ in in_process]
    assert all(torch.equal(a, b) for a, b in zip(first + second, expected))  # workers change no value


class _RandomItems(torch.utils.data.Dataset):
    """Items whose "augmentation" draws from the global generator, as the v2 transforms do."""

    def __len__(self):
        return 12

    def __getitem__(self, index):
        return torch.tensor([float(index)]), torch.rand(2)


def test_sharded_loader_workers_persist_and_repeat_whatever_their_number():
    def epochs(loader, count=2):
        batches = []
        for epoch in range(count):
            loader.set_epoch(epoch)
            batches.append([(items.clone(), draws.clone()) for items, draws in loader])
        return batches

    one = ShardedLoader(_RandomItems(), 4, train=True, seed=3, num_workers=1, pin_memory=False)
    first = epochs(one)
    dataloader = one._persistent
    assert dataloader is not None and dataloader.persistent_workers
    epochs(one, 1)
    assert one._persistent is dataloader  # the same workers, epoch after epoch
    two = epochs(ShardedLoader(_RandomItems(), 4, train=True, seed=3, num_workers=2, pin_memory=False))
    flat = lambda run: [tensor for epoch in run for batch in epoch for tensor in batch]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(flat(first), flat(two)))  # 1 or 2 workers: the same batches
    assert not torch.equal(first[0][0][1], first[1][0][1])  # a new epoch draws anew
    assert sorted(int(i) for items, _ in first[0] for i in items) == list(range(12))


def _smooth_image(seed: int, size=(16, 16)) -> Image.Image:
    """Smooth colour blobs: JPEG keeps them within a few grey levels, unlike noise."""
    coarse = numpy.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=numpy.uint8)
    return Image.fromarray(coarse).resize(size, Image.BILINEAR)


def test_gpu_jpeg_loader_decodes_jpegs_in_the_main_process_and_keeps_the_streaming_contract(tmp_path):
    """decode=gpu: workers read JPEG bytes, the batch is decoded with torchvision's decoder on the run's device
    (here the CPU, the same code path), other formats as before; a corrupt JPEG is skipped and named."""
    from cnnkit.data.gpu_decode import GpuJpegLoader

    for index in range(10):
        folder = tmp_path / "d" / ("a" if index % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        if index == 9:
            _smooth_image(index).save(folder / f"{index}.png")
        else:
            _smooth_image(index).save(folder / f"{index}.jpg", quality=95)
    (tmp_path / "d" / "a" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    split = scan_dataset(tmp_path / "d").train
    arguments = dict(batch_size=4, mean=[0.5] * 3, std=[0.5] * 3, shuffle=False, drop_last=False, seed=1,
                     augment=None, max_bad_fraction=0.5)
    cpu = StreamingLoader(split, 3, (16, 16), num_workers=0, **arguments)
    gpu = GpuJpegLoader(split, 3, (16, 16), num_workers=1, **arguments)
    with pytest.warns(UserWarning):
        expected = [(images, labels) for images, labels in cpu]
    with pytest.warns(UserWarning):
        got = [(images, labels) for images, labels in gpu]
    assert [len(labels) for _, labels in got] == [len(labels) for _, labels in expected]
    assert sum(len(labels) for _, labels in got) == 10  # the corrupt file skipped, the PNG kept
    for (a, la), (b, lb) in zip(got, expected):
        assert torch.equal(la, lb)
        assert (a - b).abs().max() <= 0.05  # two JPEG decoders: within a grey level or so (normalized by 0.5)
    assert [path.name for path, _ in gpu.skipped] == ["bad.jpg"]


def test_gpu_jpeg_loader_augments_with_each_samples_seed(tmp_path):
    from cnnkit.data.augment import AugmentConfig
    from cnnkit.data.gpu_decode import GpuJpegLoader

    for index in range(8):
        folder = tmp_path / "d" / ("a" if index % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        _smooth_image(index, (40, 60)).save(folder / f"{index}.jpg", quality=95)
    split = scan_dataset(tmp_path / "d").train
    arguments = dict(batch_size=4, mean=[0.5] * 3, std=[0.5] * 3, shuffle=True, drop_last=True, seed=3,
                     augment=AugmentConfig(hflip=True, resized_crop=0.35))
    first = [images for images, _ in GpuJpegLoader(split, 3, (16, 16), num_workers=0, **arguments)]
    again = [images for images, _ in GpuJpegLoader(split, 3, (16, 16), num_workers=2, **arguments)]
    assert all(images.shape == (4, 3, 16, 16) for images in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # workers change nothing


def test_sharded_loader_pins_memory_where_cuda_is():
    loader = ShardedLoader(TensorDataset(torch.arange(4)), 2, train=False)
    assert loader.pin_memory == CUDA
    assert ShardedLoader(TensorDataset(torch.arange(4)), 2, train=False, pin_memory=False).pin_memory is False


# ---------------------------------------------------------------- item 4: bf16 only where the GPU has it
@pytest.mark.parametrize("capability,expected", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                                 ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_precision_on_cuda_is_bf16_only_on_ampere_and_later(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulated counts here: ignored
    assert device_module.resolve_precision("auto", torch.device("cuda", 0)) == expected


# ---------------------------------------------------------------- item 5: what GPUs reward
def test_configure_backends_turns_on_cudnn_benchmark_and_tf32_for_cuda_only(monkeypatch):
    flags = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cudnn.benchmark = torch.backends.cuda.matmul.allow_tf32 = False
        device_module.configure_backends(torch.device("cpu"))
        assert not torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32
        device_module.configure_backends(torch.device("cuda", 0))
        assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


# ---------------------------------------------------------------- item 6: no host round trip per batch
def test_meters_accumulate_on_the_outputs_device_without_host_copies():
    """The meta device has no data: any .cpu(), float() or bincount-size read of a batch would raise."""
    classification = ClassificationMeter(["a", "b", "c"])
    classification.update(torch.randn(4, 3, device="meta"), torch.zeros(4, dtype=torch.int64, device="meta"),
                          torch.zeros((), device="meta"))
    segmentation = SegmentationMeter(["a", "b"])
    segmentation.update(torch.randn(2, 2, 5, 5, device="meta"), torch.zeros(2, 5, 5, dtype=torch.int64, device="meta"),
                        torch.zeros((), device="meta"))
    assert {t.device.type for t in classification.tensors() + segmentation.tensors()} == {"meta"}


def test_meters_count_the_same_on_any_device_path():
    """The device path (scatter-add, ignored pixels in an extra bin) counts what the CPU path counts."""
    from cnnkit.metrics.classification import count_pairs

    predictions = torch.randint(0, 3, (2, 6, 6), generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 3, (2, 6, 6), generator=torch.Generator().manual_seed(1))
    targets[0, 0] = 255
    meter = SegmentationMeter(["a", "b", "c"])
    meter.update(predictions, targets, 1.5)
    counted = targets.flatten() != 255
    device_index = torch.where(counted, targets.flatten() * 3 + predictions.flatten(), 9)
    counts = torch.zeros(10, dtype=torch.int64).index_add_(0, device_index, torch.ones_like(device_index))[:9]
    assert torch.equal(meter.confusion.flatten(), counts) and int(meter.confusion.sum()) == int(counted.sum())
    assert torch.equal(count_pairs(torch.tensor([0, 2, 2]), 4), torch.tensor([1, 0, 2, 0]))
    assert float(meter.loss_sum) == 1.5


def test_segmentation_loss_keeps_its_class_weights_on_the_logits_device():
    loss = SegmentationLoss("ce+dice", class_weights=torch.tensor([1.0, 3.0]))
    logits, targets = torch.randn(1, 2, 4, 4, device="meta"), torch.zeros(1, 4, 4, dtype=torch.int64, device="meta")
    loss(logits, targets)
    weights = loss.class_weights
    assert weights.device.type == "meta"
    loss(logits, targets)
    assert loss.class_weights is weights  # copied once, not per step


def test_hue_rotation_needs_no_matrix_inverse_per_batch(monkeypatch):
    jitter = ColorJitter(hue=0.2, saturation=0.3)
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    params = jitter.sample(3, torch.Generator().manual_seed(1))
    before, _ = jitter.apply(images, torch.zeros(3), params)
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    inverse = torch.linalg.inv(to_yiq)  # what every batch used to compute
    monkeypatch.setattr(torch.linalg, "inv", lambda *a: pytest.fail("linalg.inv called per batch"))
    after, _ = jitter.apply(images, torch.zeros(3), params)
    assert torch.equal(before, after)
    from cnnkit.data import augment_ops

    assert torch.equal(augment_ops._FROM_YIQ, inverse)  # bit-identical to the per-batch inverse


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.set_sync_debug_mode)")
def test_augmented_batches_meters_and_loss_do_not_synchronize_with_the_host():
    from cnnkit.data.augment import AugmentConfig

    device = torch.device("cuda", 0)
    images, labels = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8), torch.arange(64) % 4
    augment = AugmentConfig(hflip=True, translate=2, rotate=10, resized_crop=0.5, brightness=0.2, hue=0.1,
                            random_erasing=0.5)
    loader = TensorLoader(images, labels, 16, [0.5] * 3, [0.5] * 3, shuffle=True, augment=augment, drop_last=True,
                          seed=0, device=device)
    meter, seg_meter = ClassificationMeter(list("abcd")), SegmentationMeter(list("abcd"))
    loss = SegmentationLoss("ce+dice", class_weights=torch.ones(4)).to(device)
    next(iter(loader))  # warm-up: constants copied once, allocator primed
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch, targets in loader:
            logits = batch.mean(dim=(2, 3)).repeat(1, 2)[:, :4]
            meter.update(logits, targets, logits.sum())
            masks = targets.view(-1, 1, 1).expand(-1, 16, 16).contiguous()
            seg_logits = batch[:, :1].repeat(1, 4, 1, 1)
            seg_meter.update(seg_logits, masks, loss(seg_logits, masks))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert meter.count == 64


# ---------------------------------------------------------------- item 7: RoIAlign on CUDA is torchvision's
def test_roi_align_uses_torchvision_off_the_cpu(monkeypatch):
    from torchvision.ops import MultiScaleRoIAlign

    assert uses_matmul(torch.zeros(1)) and not uses_matmul(torch.zeros(1, device="meta"))
    monkeypatch.setattr(MultiScaleRoIAlign, "forward", lambda self, x, boxes, shapes: "torchvision")
    pool = MatmulRoIAlign(["0"], output_size=2, sampling_ratio=1)
    boxes = [torch.tensor([[0.0, 0.0, 4.0, 4.0]])]
    assert pool({"0": torch.zeros(1, 1, 8, 8, device="meta")}, [b.to("meta") for b in boxes], [(16, 16)]) == "torchvision"
    assert pool({"0": torch.ones(1, 1, 8, 8)}, boxes, [(16, 16)]).shape == (1, 1, 2, 2)


# ---------------------------------------------------------------- item 10: export leaves the caller's model alone
def test_export_keeps_the_callers_model_and_respects_the_umask(tmp_path):
    from cnnkit.data.preprocess import Preprocessing
    from cnnkit.export import export_model
    from cnnkit.registry import create_model

    model = create_model("fastnet", num_classes=3, in_chans=1, input_size=28).to(torch.bfloat16).train()
    model.stem.eval() if hasattr(model, "stem") else next(iter(model.children())).eval()  # a frozen part
    modes = [m.training for m in model.modules()]
    record = {"task": "classify", "classes": ["a", "b", "c"],
              "preprocessing": Preprocessing(1, (28, 28), (0.3,), (0.35,)).to_dict(),
              "architecture": {"name": "fastnet", "args": {}}}
    old_umask = os.umask(0o027)
    try:
        result = export_model(model, record, "torchscript", tmp_path / "m.torchscript.pt", tolerance=1e-3)
    finally:
        os.umask(old_umask)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # not moved or cast in place
    assert [m.training for m in model.modules()] == modes  # every module's mode as it was
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o640  # 0666 & ~umask, not mkstemp's 0600


# ---------------------------------------------------------------- and on the CPU: bf16 only where it is native
@pytest.mark.parametrize("avx512_bf16,amx,expected", [(False, False, None), (True, False, torch.bfloat16),
                                                      (False, True, torch.bfloat16)])
def test_auto_precision_on_an_x86_cpu_is_bf16_only_with_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, expected):
    """oneDNN reports bf16 "supported" on any AVX-512 CPU, where it is emulated (3.3x slower than fp32 measured)."""
    monkeypatch.setattr(device_module.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert device_module.resolve_precision("auto", torch.device("cpu")) == expected
    assert device_module.resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16  # asked for: kept


def test_auto_precision_on_a_cpu_without_onednn_bf16_is_fp32(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert device_module.resolve_precision("auto", torch.device("cpu")) is None
