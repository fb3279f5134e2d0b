"""Self-supervised pretraining (--task pretrain): the losses against hand computation, the views, masking, HOG
targets, the kNN monitor against brute force, and the CLI path from a pretrain run to a classifier."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cnnkit.losses.ssl import masked_patch_loss, moco_loss, normalized_patch_targets, nt_xent_loss
from cnnkit.metrics.knn import BANK, QUERY, KNNMeter, knn_predict
from cnnkit.models.ssl import patch_hog, patchify, random_masking, unpatchify
from conftest import run_cli


def _cosine(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_nt_xent_equals_the_hand_computation():
    first = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    second = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])
    temperature = 0.5
    views = first.tolist() + second.tolist()
    partner = [2, 3, 0, 1]  # positives: view i of image k and view j of image k ("the diagonal" of first vs second)
    total = 0.0
    for i in range(4):
        logits = {j: _cosine(views[i], views[j]) / temperature for j in range(4) if j != i}
        total += -logits[partner[i]] + math.log(sum(math.exp(value) for value in logits.values()))
    assert nt_xent_loss(first, second, temperature).item() == pytest.approx(total / 4, rel=1e-5)


def test_nt_xent_lower_temperature_sharpens_when_positives_are_closest():
    first = torch.tensor([[1.0, 0.1], [0.1, 1.0], [-1.0, 0.2]])
    second = first + 0.05
    assert nt_xent_loss(first, second, 0.1) < nt_xent_loss(first, second, 0.5) < nt_xent_loss(first, second, 2.0)
    # swapping the partners (positives far apart) makes the loss larger
    assert nt_xent_loss(first, second.flip(0), 0.5) > nt_xent_loss(first, second, 0.5) + 1.0


def test_moco_loss_equals_the_hand_computation():
    queries = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    keys = torch.tensor([[4.0, 3.0], [0.0, 1.0]])
    queue = torch.tensor([[1.0, 0.0], [0.0, -1.0], [0.6, 0.8]])
    temperature = 0.2
    total = 0.0
    for query, key in zip(queries.tolist(), keys.tolist()):
        positive = _cosine(query, key) / temperature
        negatives = [_cosine(query, negative) / temperature for negative in queue.tolist()]
        total += -positive + math.log(math.exp(positive) + sum(math.exp(value) for value in negatives))
    assert moco_loss(queries, keys, queue, temperature).item() == pytest.approx(total / 2, rel=1e-5)


def test_moco_queue_is_a_ring_buffer_and_keys_follow_the_query_encoder():
    from cnnkit.registry import create_model

    torch.manual_seed(0)
    net = create_model("moco", backbone="simple_cnn", in_chans=1, input_size=16, projection_dim=4, queue_size=5,
                       momentum=0.5)
    keys = torch.arange(12.0).view(3, 4) + 1
    net.enqueue(keys)
    net.enqueue(keys)  # 6 keys into 5 slots: the 6th overwrites slot 0
    expected = torch.nn.functional.normalize(keys, dim=1)
    assert torch.allclose(net.queue[0], expected[2]) and torch.allclose(net.queue[3:5], expected[:2])
    assert int(net.queue_pointer) == 1
    with torch.no_grad():
        for parameter in net.projector.parameters():
            parameter.add_(1.0)
    before = [p.clone() for p in net.key_encoder.module["projector"].parameters()]
    net.keys(torch.randn(2, 1, 16, 16))
    after = list(net.key_encoder.module["projector"].parameters())
    own = list(net.projector.parameters())
    for old, new, target in zip(before, after, own):  # momentum 0.5: half way towards the query encoder
        assert torch.allclose(new, 0.5 * old + 0.5 * target, atol=1e-6)


def test_two_views_differ_and_row_i_of_each_view_is_image_i():
    from cnnkit.config import TrainConfig
    from cnnkit.data import ArrayDataset
    from cnnkit.data.preprocess import Preprocessing
    from cnnkit.tasks.pretrain.data import make_view_loader

    generator = torch.Generator().manual_seed(0)
    count = 64
    images = torch.randint(0, 256, (count, 1, 16, 16), generator=generator, dtype=torch.uint8)
    images[:, :, :, :] = (images.float() * 0.3).to(torch.uint8)  # texture in 0..76
    images[:, :, 4:12, 4:12] = (torch.arange(count) * 2 + 100).view(-1, 1, 1, 1).to(torch.uint8)  # image id
    labels = torch.arange(count) % 4
    config = TrainConfig(task="pretrain", batch_size=16, channels_last=False, progress=False)
    preprocessing = Preprocessing(1, (16, 16), (0.0,), (1.0,))
    loader = make_view_loader(ArrayDataset(images, labels, list("abcd")), preprocessing, config, torch.device("cpu"),
                              "simclr")
    # flips and blur only: they keep the centre square's mean, which names the image
    loader.augmentations = [a for a in loader.augmentations if type(a).__name__ in ("RandomFlip", "RandomBlur")]
    batch, batch_labels = next(iter(loader))
    assert batch.shape == (32, 1, 16, 16) and batch_labels.shape == (16,)
    first, second = batch[:16] * 255, batch[16:] * 255
    assert not torch.allclose(first, second)  # flips and blur drawn per view
    # The centre square (flip-invariant, blur leaves its middle) names the image: row i is one image in both views.
    first_id, second_id = first[:, 0, 6:10, 6:10].mean((1, 2)), second[:, 0, 6:10, 6:10].mean((1, 2))
    assert torch.allclose(first_id, second_id, atol=1.0)
    image_ids = ((first_id - 100) / 2).round().long()
    assert torch.equal(labels[image_ids], batch_labels)  # the labels are the images' own


def test_mae_masking_keeps_exactly_the_asked_ratio():
    keep, mask = random_masking(5, 49, 0.75, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (5, 12) and torch.equal(mask.sum(dim=1), torch.full((5,), 37.0))
    assert torch.equal(mask.gather(1, keep), torch.zeros(5, 12))  # the kept patches are the unmasked ones
    assert len({tuple(row) for row in keep.tolist()}) == 5  # each image its own draw
    with pytest.raises(Exception, match="mask_ratio"):
        random_masking(2, 4, 0.99)


def test_mae_loss_counts_masked_patches_only_and_targets_are_normalised_per_patch():
    from cnnkit.registry import create_model

    torch.manual_seed(0)
    net = create_model("mae", in_chans=1, input_size=28, mask_ratio=0.5,
                       backbone_args={"depth": 1, "embed_dim": 32, "num_heads": 2, "patch_size": 7})  # 4x4 patches
    images = torch.randn(2, 1, 28, 28)
    keep, mask = random_masking(2, 16, 0.5, generator=torch.Generator().manual_seed(1))
    predictions, returned = net.reconstruct(images, keep, mask)
    assert predictions.shape == (2, 16, 49) and torch.equal(returned, mask)
    targets = normalized_patch_targets(patchify(images, 7))
    assert torch.allclose(targets.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(targets.std(-1), torch.ones(2, 16), atol=1e-3)
    loss = masked_patch_loss(predictions, targets, mask)
    visible = mask.unsqueeze(-1) == 0
    changed = torch.where(visible, predictions + 100.0, predictions)  # wrong everywhere the loss must not look
    assert masked_patch_loss(changed, targets, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    by_hand = ((predictions - targets).square().mean(-1) * mask).sum() / mask.sum()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert torch.equal(unpatchify(patchify(images, 7), 7, 1, 28, 28), images)


def test_hog_targets_point_at_the_edge_orientation():
    image = torch.zeros(1, 1, 8, 8)
    image[..., 4:] = 1.0  # a vertical edge: horizontal gradient, orientation 0
    features = patch_hog(image, patch_size=4, bins=9, cells=2)  # (1, 4 patches, 2*2*9)
    assert features.shape == (1, 4, 36)
    edge_patch = features[0, 0].view(4, 9)  # top-left patch, its right column of cells touches the edge
    assert edge_patch.sum(0).argmax() == 0
    assert torch.allclose(features.norm(dim=-1)[features.norm(dim=-1) > 0], torch.ones(4))


def test_knn_vote_equals_brute_force():
    generator = torch.Generator().manual_seed(0)
    bank, labels = torch.randn(60, 5, generator=generator), torch.randint(0, 3, (60,), generator=generator)
    queries = torch.randn(9, 5, generator=generator)
    k, temperature = 7, 0.1
    expected = []
    for query in queries.tolist():
        similarities = sorted(((_cosine(query, row), label) for row, label in zip(bank.tolist(), labels.tolist())),
                              reverse=True)[:k]
        votes = [0.0, 0.0, 0.0]
        for similarity, label in similarities:
            votes[label] += math.exp(similarity / temperature)
        expected.append(max(range(3), key=votes.__getitem__))
    assert knn_predict(queries, bank, labels, 3, k, temperature, chunk=4).tolist() == expected
    meter = KNNMeter(3, k, temperature)
    meter.update(bank, torch.stack([labels, torch.full_like(labels, BANK)], 1))
    truth = torch.tensor(expected)
    truth[0] = (truth[0] + 1) % 3  # one query labelled otherwise: accuracy 8/9
    meter.update(queries, torch.stack([truth, torch.full_like(truth, QUERY)], 1))
    assert meter.compute()["knn_accuracy"] == pytest.approx(8 / 9)


def test_probe_monitor_scores_a_linear_probe_beside_the_knn():
    """probe_monitor=true: the meter adds linear_probe_accuracy. Classes separable by a plane only along one
    feature that kNN's cosine neighbourhoods mostly ignore: the probe gets them all right."""
    from cnnkit.tasks.pretrain.task import PretrainTask

    generator = torch.Generator().manual_seed(0)
    task = PretrainTask(torch.nn.Identity(), "simclr", num_classes=2, probe=True)
    meter = task.new_meter()
    for role, count in ((BANK, 400), (QUERY, 100)):
        features = torch.randn(count, 8, generator=generator) * 3
        labels = (torch.rand(count, generator=generator) < 0.5).long()
        features[:, 0] = labels * 2.0 - 1.0  # the class: +-1 along the first feature, noise elsewhere
        meter.update(features, torch.stack([labels, torch.full_like(labels, role)], 1))
    result = meter.compute()
    assert result["linear_probe_accuracy"] == 1.0 and result["knn_accuracy"] < 0.9
    assert type(PretrainTask(torch.nn.Identity(), "simclr", num_classes=2).new_meter()) is KNNMeter  # off by default


def test_cli_pretrain_then_evaluate_then_fine_tune_with_pretrained(tmp_path, image_folder):
    result = run_cli("train", "--task", "pretrain", "--data", image_folder, "--epochs", 2, "--out", tmp_path,
                     "--name", "ssl", "num_threads=1", "batch_size=64", "val_fraction=0.2", "report=false",
                     "method=simclr")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "ssl"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2] and all(0 < line["val_knn_accuracy"] <= 1 for line in lines)
    import cnnkit

    evaluation = cnnkit.load(run).evaluate("test")
    assert evaluation["count"] == 80 and evaluation["bank_count"] == 400
    assert evaluation["knn_accuracy"] > 0.5 and evaluation["linear_probe_accuracy"] > 0.6  # 4 classes: chance 0.25
    result = run_cli("train", "--data", image_folder, "--epochs", 1, "--out", tmp_path, "--name", "tuned",
                     "num_threads=1", "batch_size=64", "val_fraction=0.2", "report=false", f"pretrained={run}",
                     "finetune=linear", "head_init=probe")
    assert result.returncode == 0, result.stderr
    assert "loaded" in result.stdout and "linear probe" in result.stdout
    wrong = run_cli("train", "--data", image_folder, "--model", "simple_cnn", "--epochs", 1, "--out", tmp_path,
                    f"pretrained={run}", "num_threads=1")
    assert wrong.returncode != 0 and "--model fastnet" in wrong.stderr and "Traceback" not in wrong.stderr


def _simclr_rank(rank: int, world: int, port: int, first, second, out) -> None:
    """One process of the 2-process check: its half of the batch, the gathered NT-Xent, DDP's averaged grads."""
    import torch.distributed as dist

    from cnnkit.engine.distributed import gather_rows

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(6, 4))
        half = len(first) // world
        rows = slice(rank * half, (rank + 1) * half)
        projections = model(torch.cat([first[rows], second[rows]]))
        loss = nt_xent_loss(gather_rows(projections[:half], differentiable=True),
                            gather_rows(projections[half:], differentiable=True), 0.5)
        loss.backward()
        if rank == 0:
            torch.save({"loss": loss.detach(), "grad": model.module.weight.grad.clone()}, out)
    finally:
        dist.destroy_process_group()


def test_simclr_under_ddp_has_the_gradient_of_the_whole_batch_on_one_process(tmp_path):
    """Two gloo processes, each with half the pairs: the gathered NT-Xent and DDP's gradient averaging give
    the single-process loss and gradient of all the pairs (every rank's projections are negatives)."""
    import socket

    import torch.multiprocessing as mp

    first, second = torch.randn(8, 6, generator=torch.Generator().manual_seed(1)), torch.randn(8, 6)
    torch.manual_seed(0)
    single = torch.nn.Linear(6, 4)
    loss = nt_xent_loss(single(first), single(second), 0.5)
    loss.backward()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "rank0.pt"
    mp.start_processes(_simclr_rank, args=(2, port, first, second, out), nprocs=2, join=True, start_method="spawn")
    result = torch.load(out)
    assert torch.allclose(result["loss"], loss.detach(), atol=1e-6)
    assert torch.allclose(result["grad"], single.weight.grad, atol=1e-6)


# simclr (the gathered NT-Xent) runs by default; moco and mae (-m slow) add ~13 s each
@pytest.mark.parametrize("method", ["simclr", pytest.param("moco", marks=pytest.mark.slow),
                                    pytest.param("mae", marks=pytest.mark.slow)])
def test_pretrain_under_torchrun_on_two_processes(method, tmp_path, image_folder):
    """`torchrun --nproc_per_node 2 -m cnnkit train --task pretrain`: each rank its share of every epoch, every
    rank the same kNN monitor, one run directory."""
    import subprocess
    import sys

    from conftest import cli_env

    model = ["--model", "vit_mini"] if method == "mae" else []
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cnnkit",
               "train", "--task", "pretrain", "--method", method, *model, "--data", str(image_folder), "--epochs", "2",
               "--out", str(tmp_path), "--name", "ddp", "batch_size=16", "val_every=1", "moco_queue=32",
               "report=false", "progress=false", "num_threads=1"]
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and math.isfinite(lines[-1]["train_loss"]) and 0 <= lines[-1]["val_knn_accuracy"] <= 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ddp"]


def test_pretrain_refuses_a_global_batch_smaller_than_two_per_process():
    from cnnkit.config import TrainConfig
    from cnnkit.engine.distributed import DistInfo
    from cnnkit.errors import ConfigError
    from cnnkit.tasks.pretrain.setup import check_settings

    config = TrainConfig(task="pretrain", method="simclr", batch_size=6)
    check_settings(config, DistInfo(rank=0, world_size=2))
    with pytest.raises(ConfigError, match="fewer than 2 images to each of the 4 processes"):
        check_settings(config, DistInfo(rank=0, world_size=4))


def test_beit_predicts_each_patch_from_the_visible_ones_only():
    from cnnkit.registry import create_model

    net = create_model("beit", backbone="vit_mini", in_chans=1, input_size=28, mask_ratio=0.4).eval()
    images = torch.randn(3, 1, 28, 28)
    length = net.backbone.patch_embed.num_patches  # 7 x 7 patches of 4 x 4 pixels
    with torch.no_grad():
        predictions, mask = net(images, objective=True)
        assert predictions.shape == (3, length, net.cells ** 2 * 9) == net.targets(images).shape
        assert mask.shape == (3, length) and (mask.sum(1) == round(length * 0.4)).all()
        fixed = torch.zeros(3, length)
        fixed[:, 0] = 1  # the top-left patch is masked
        reference = net.predict(images, fixed)
        changed = images.clone()
        changed[:, :, :4, :4] += 5.0  # the masked patch's pixels: not seen
        assert torch.allclose(net.predict(changed, fixed), reference, atol=1e-5)
        changed[:, :, :4, 4:8] += 5.0  # a visible patch's: seen
        assert not torch.allclose(net.predict(changed, fixed), reference, atol=1e-3)


def test_block_masking_masks_exactly_the_ratio_in_rectangles():
    from cnnkit.models.ssl import block_masking

    generator = torch.Generator().manual_seed(0)
    masks = block_masking(64, 7, 7, 0.4, generator=generator)
    assert masks.shape == (64, 49) and (masks.sum(1) == round(49 * 0.4)).all()
    assert torch.equal(masks, block_masking(64, 7, 7, 0.4, generator=torch.Generator().manual_seed(0)))
    # blocks, not salt and pepper: masked patches have more masked 4-neighbours than uniform masking gives them
    def neighbours(mask: torch.Tensor) -> float:
        grid = mask.reshape(-1, 7, 7)
        padded = torch.nn.functional.pad(grid, (1, 1, 1, 1))
        around = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
        return float((around * grid).sum() / grid.sum())

    uniform = random_masking(64, 49, 0.4, generator=torch.Generator().manual_seed(0))[1]
    assert neighbours(masks) > neighbours(uniform) + 0.8


def test_beit_block_masking_through_the_settings():
    from cnnkit.config import TrainConfig
    from cnnkit.engine.distributed import DistInfo
    from cnnkit.errors import ConfigError
    from cnnkit.registry import create_model
    from cnnkit.tasks.pretrain.setup import check_settings

    net = create_model("beit", backbone="vit_mini", in_chans=1, input_size=28, masking="block")
    _, mask = net(torch.randn(2, 1, 28, 28), objective=True)
    assert (mask.sum(1) == 20).all()
    with pytest.raises(ConfigError, match="masking=block is for method=beit"):
        check_settings(TrainConfig(task="pretrain", method="mae", masking="block"), DistInfo(rank=0, world_size=1))
    with pytest.raises(ConfigError, match="masking='rows' is not one of random, block"):
        TrainConfig(task="pretrain", method="beit", masking="rows").validate()


def test_vit_mini_average_pooling_shares_the_token_pooling_weights():
    from cnnkit.registry import create_model

    torch.manual_seed(0)
    token = create_model("vit_mini", num_classes=10, in_chans=1, input_size=28).eval()
    average = create_model("vit_mini", num_classes=10, in_chans=1, input_size=28, global_pool="avg").eval()
    assert token.state_dict().keys() == average.state_dict().keys()
    average.load_state_dict(token.state_dict())
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        tokens = token.forward_features(images)  # (B, 1 + 49, D), after the last norm
        assert torch.allclose(average(images), token.head(tokens[:, 1:].mean(1)), atol=1e-5)
        assert torch.allclose(token(images), token.head(tokens[:, 0]), atol=1e-5)
