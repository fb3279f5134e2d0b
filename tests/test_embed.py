"""Face recognition / metric learning (--task embed): losses, sampler, metrics, pairs, gallery, CLI end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnkit.errors import CheckpointError, ConfigError, DataError
from cnnkit.layers.margin import MarginHead
from cnnkit.losses.metric import contrastive_loss, pairwise_distances, triplet_loss
from cnnkit.metrics.verification import (auc, balanced, equal_error_rate, identification_metrics, kfold_accuracy, roc,
                                         tar_at_far)
from conftest import cli_env, run_cli


# ----------------------------------------------------------------------------------------------- losses
def test_arcface_adds_the_angular_margin_to_the_true_class_only():
    head = MarginHead(2, 3, "arcface", scale=10.0, margin=0.3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    embedding = F.normalize(torch.tensor([[1.0, 1.0]]), dim=1)  # 45 degrees from classes 0 and 1
    logits = head(embedding, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(math.pi / 4 + 0.3), abs=1e-5)
    assert logits[0, 1].item() == pytest.approx(10 * math.cos(math.pi / 4), abs=1e-5)
    assert logits[0, 2].item() == pytest.approx(10 * math.cos(3 * math.pi / 4), abs=1e-5)
    assert head(embedding)[0, 0].item() == pytest.approx(10 * math.cos(math.pi / 4), abs=1e-5)  # no margin at test


def test_cosface_subtracts_the_margin_and_subcenters_take_the_closest_centre():
    head = MarginHead(2, 2, "cosface", scale=1.0, margin=0.35, subcenters=2)
    with torch.no_grad():  # class 0: centres at 0 and 90 degrees; class 1: at 180 and 270
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
    embedding = torch.tensor([[0.0, 1.0]])
    logits = head(embedding, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(1.0 - 0.35, abs=1e-6)  # the 90-degree centre, minus the margin
    assert logits[0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_batch_hard_triplet_loss_by_hand():
    embeddings = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 0.5]])
    labels = torch.tensor([0, 0, 1, 1])
    # hardest positive / hardest (closest) negative per anchor: 1 / 3, 1 / sqrt(9.25), 0.5 / 3, 0.5 / sqrt(9.25)
    assert triplet_loss(embeddings, labels, margin=0.2).item() == pytest.approx(0.0, abs=1e-6)
    loss = triplet_loss(embeddings, labels, margin=3.0)
    expected = [1.0 - 3.0 + 3, 1.0 - math.sqrt(9.25) + 3, 0.5 - 3.0 + 3, 0.5 - math.sqrt(9.25) + 3]
    assert loss.item() == pytest.approx(sum(expected) / 4, abs=1e-5)


def test_semi_hard_triplet_picks_the_closest_negative_beyond_the_positive():
    embeddings = torch.tensor([[0.0], [1.0], [0.5], [1.5]])
    labels = torch.tensor([0, 0, 1, 1])
    # pair (0, 1): d_ap = 1; negatives at 0.5 (closer: not semi-hard) and 1.5 (semi-hard) -> 1 - 1.5 + m
    loss = triplet_loss(embeddings, labels, margin=1.0, mining="semihard")
    d = pairwise_distances(embeddings)
    assert d[0, 1].item() == pytest.approx(1.0, abs=1e-5)
    assert loss.item() > 0 and torch.isfinite(loss)


def test_contrastive_loss_by_hand_and_gradients_are_finite_at_identical_embeddings():
    embeddings = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.3, 0.4]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    loss = contrastive_loss(embeddings, labels, margin=1.0)
    assert loss.item() == pytest.approx(0.0 + (0.5 ** 2 + 0.5 ** 2) / 2, abs=1e-5)  # d=0 positive; d=0.5 negatives
    loss.backward()
    assert torch.isfinite(embeddings.grad).all()


def test_triplet_loss_needs_positives_and_negatives():
    with pytest.raises(ConfigError, match="images_per_identity"):
        triplet_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))


# ----------------------------------------------------------------------------------------------- metrics
def test_roc_points_auc_eer_and_tar_by_hand():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    genuine = torch.tensor([True, True, False, True, False, False])
    far, tar, thresholds = roc(scores, genuine)
    assert far.tolist() == pytest.approx([0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert tar.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert auc(far, tar) == pytest.approx(8 / 9)
    assert equal_error_rate(far, tar) == pytest.approx(1 / 3)
    assert tar_at_far(far, tar, 0.0) == pytest.approx(2 / 3)
    assert thresholds[2].item() == pytest.approx(0.8)


def test_ten_fold_accuracy_takes_each_fold_s_threshold_from_the_others():
    scores = torch.tensor([0.9, 0.1] * 10)  # genuine pairs score high: every fold perfect
    genuine = torch.tensor([True, False] * 10)
    result = kfold_accuracy(scores, genuine, folds=10)
    assert result["accuracy"] == 1.0 and 0.1 < result["threshold"] <= 0.9
    flipped = kfold_accuracy(scores, ~genuine, folds=10)
    assert flipped["accuracy"] == 0.5  # thresholds can only accept all or none of a fold's two pairs


def test_balanced_pairs_have_as_many_impostors_as_genuine():
    scores, genuine = balanced(torch.arange(10.0), torch.tensor([True, True] + [False] * 8), seed=1)
    assert len(scores) == 4 and int(genuine.sum()) == 2


def test_identification_rank_and_map():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 0, 1, 1])  # gallery: images 0 and 1; probes 2, 3, 4 (4 is closer to class 0)
    result = identification_metrics(embeddings, labels)
    assert result["gallery"] == 2 and result["probes"] == 3
    assert result["rank1"] == pytest.approx(2 / 3) and result["cmc"][1] == 1.0
    assert 0 < result["map"] < 1


# ----------------------------------------------------------------------------------------------- pairs, gallery
def test_lfw_pairs_and_pairs_csv(tmp_path):
    from cnnkit.data.pairs import read_pairs

    (tmp_path / "pairs.txt").write_text("1 1\nAlice 1 2\nAlice 1 Bob 3\n")
    pairs = read_pairs(tmp_path / "pairs.txt", tmp_path)
    assert pairs == [(tmp_path / "Alice" / "Alice_0001.jpg", tmp_path / "Alice" / "Alice_0002.jpg", True),
                     (tmp_path / "Alice" / "Alice_0001.jpg", tmp_path / "Bob" / "Bob_0003.jpg", False)]
    (tmp_path / "pairs.csv").write_text("first,second,same\na.png,b.png,1\na.png,c.png,false\n")
    assert [same for _, _, same in read_pairs(tmp_path / "pairs.csv")] == [True, False]
    (tmp_path / "bad.txt").write_text("1 1\nAlice one 2\n")
    with pytest.raises(DataError, match="line 2"):
        read_pairs(tmp_path / "bad.txt")


def test_gallery_round_trip_and_a_corrupt_file(tmp_path):
    from cnnkit.tasks.embed import Gallery

    gallery = Gallery()
    gallery.add(["alice", "bob"], torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    gallery.save(tmp_path / "g.gallery")
    again = Gallery.open(tmp_path / "g.gallery")
    assert again.search(torch.tensor([[0.1, 1.0]]), top_k=1)[0][0][0] == "bob"
    assert again.remove("bob") == 1 and again.names == ["alice"]
    (tmp_path / "broken.gallery").write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="not a cnnkit gallery"):
        Gallery.open(tmp_path / "broken.gallery")


def test_pk_loader_batches_hold_p_identities_of_k_images():
    from cnnkit.tasks.embed import PKLoader

    labels = torch.arange(60) % 10  # 10 identities of 6 images
    images = torch.zeros(60, 1, 4, 4, dtype=torch.uint8)
    loader = PKLoader(images, labels, 3, batch_size=12, mean=[0.0], std=[1.0], shuffle=True, augment=None,
                      drop_last=True, seed=0)
    batches = [targets for _, targets in loader]
    assert len(batches) == 5
    for targets in batches:
        counts = torch.bincount(targets, minlength=10)
        assert sorted(counts[counts > 0].tolist()) == [3, 3, 3, 3]
    assert [t.tolist() for _, t in loader] != [t.tolist() for t in batches]  # the next epoch draws anew


def test_pk_loader_under_ddp_gives_each_rank_whole_batches_of_the_same_epoch():
    from cnnkit.tasks.embed import PKLoader

    labels = torch.arange(120) % 10  # 10 identities of 12 images
    images = labels.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).to(torch.uint8).contiguous()
    options = dict(mean=[0.0], std=[1.0], shuffle=True, augment=None, drop_last=True, seed=3)
    single = [t.tolist() for _, t in PKLoader(images, labels, 3, batch_size=12, **options)]
    ranks = [PKLoader(images, labels, 3, batch_size=12, rank=rank, world_size=2, **options) for rank in (0, 1)]
    shares = [[t.tolist() for _, t in loader] for loader in ranks]
    assert len(shares[0]) == len(shares[1]) == 5  # 120 images / 2 ranks / 12 per batch
    for rank, share in enumerate(shares):
        assert share == single[rank::2][:5]  # global batches rank, rank + 2, ...: each P x K whole
        for targets in share:
            assert sorted(torch.bincount(torch.tensor(targets))[torch.bincount(torch.tensor(targets)) > 0].tolist()) \
                == [3, 3, 3, 3]


# ----------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def glyphs(tmp_path_factory) -> Path:
    from cnnkit.data.glyphs import GlyphsConfig, find_fonts, make_glyphs

    fonts = find_fonts()
    if len(fonts) < 8:
        pytest.skip("fewer than 8 fonts installed (fonts-dejavu, fonts-liberation)")
    root = tmp_path_factory.mktemp("glyphs") / "glyphs"
    make_glyphs(root, GlyphsConfig(variants=1, test_fraction=0.34, min_fonts=8), fonts=fonts[:12],
                characters="ABCDEFGHJKLMNPRSTUVWXYZ", progress=False)
    return root


def test_glyph_identities_are_disjoint_between_train_and_test(glyphs):
    train = {p.name for p in (glyphs / "train").iterdir()}
    test = {p.name for p in (glyphs / "test").iterdir()}
    assert train and test and not train & test
    assert len(list((glyphs / "train" / sorted(train)[0]).iterdir())) >= 8


def test_ddp_trains_an_embedding_on_two_processes(glyphs, tmp_path):
    """`torchrun --nproc_per_node 2`: each rank trains on its share of the P x K batches, every rank validates
    on every embedding (the same metrics), rank 0 writes the run."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cnnkit",
               "train", "--task", "embed", "--data", str(glyphs), "--epochs", "2", "--out", str(tmp_path), "--name",
               "ddp", "batch_size=32", "val_fraction=0.2", "embed_loss=triplet", "images_per_identity=4",
               "report=false", "progress=false", "num_threads=1"]
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and 0 <= lines[-1]["val_rank1"] <= 1 and lines[-1]["val_identities"] >= 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ddp"]  # one run directory, from rank 0
    wrong = subprocess.run(command[:-5] + ["batch_size=8", "embed_loss=triplet", "images_per_identity=4",
                                           "progress=false", "num_threads=1"],
                           cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert wrong.returncode != 0 and "4 per process of 2" in wrong.stderr + wrong.stdout


def test_cli_trains_evaluates_verifies_and_searches(glyphs, tmp_path):
    result = run_cli("train", "--task", "embed", "--data", glyphs, "--epochs", 2, "--out", tmp_path, "--name", "run",
                     "batch_size=32", "val_fraction=0.2", "embed_loss=triplet", "images_per_identity=4",
                     "report=false", "num_threads=1")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "val_rank1" in lines[-1] and "val_tar_at_far_0.001" in lines[-1]
    evaluation = run_cli("evaluate", run, "--json")
    assert evaluation.returncode == 0, evaluation.stderr
    metrics = json.loads(evaluation.stdout)
    assert metrics["split"] == "test" and 0 <= metrics["rank1"] <= 1 and metrics["identities"] >= 2
    first, second = sorted((glyphs / "test").iterdir())[:2]
    a, b = sorted(first.iterdir())[:2]
    verify = run_cli("verify", run, a, b, "--json")
    assert verify.returncode in (0, 1) and "score" in json.loads(verify.stdout)
    gallery = tmp_path / "people.gallery"
    assert run_cli("gallery", "add", run, first, second, "--gallery", gallery).returncode == 0
    search = run_cli("gallery", "search", run, a, "--gallery", gallery, "--top-k", "2", "--json")
    assert json.loads(search.stdout)[0]["matches"][0]["name"] == first.name  # a itself is enrolled
    wrong = run_cli("embed", run, tmp_path / "missing.png")
    assert wrong.returncode == 2 and "not found" in wrong.stderr
    # export with the parity check, then the ONNX file gives the checkpoint's embedding
    assert run_cli("export", run, "--dynamic-batch").returncode == 0
    from_onnx = json.loads(run_cli("predict", run / "export" / "best.onnx", a, "--json").stdout)[0]["embedding"]
    from_torch = json.loads(run_cli("embed", run, a, "--json", "--device", "cpu").stdout)[0]["embedding"]
    assert max(abs(x - y) for x, y in zip(from_onnx, from_torch)) < 1e-4


def test_margin_head_gets_its_own_learning_rate():
    from cnnkit.config import TrainConfig
    from cnnkit.engine.optim import make_optimizer
    from cnnkit.registry import create_model
    from cnnkit.tasks.embed.setup import check_settings

    model = create_model("embedder", num_classes=5, embedding_dim=8, input_size=28)
    scales = {f"margin_head.{name}": 10.0 for name, _ in model.margin_head.named_parameters()}
    optimizer = make_optimizer(model, TrainConfig(lr=0.1), scales)
    head = {id(p) for p in model.margin_head.parameters()}
    for group in optimizer.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1 and group["lr"] == pytest.approx(1.0 if in_head.pop() else 0.1)
    with pytest.raises(ConfigError, match="margin_lr_multiplier"):
        from cnnkit.engine.distributed import DistInfo

        check_settings(TrainConfig(task="embed", margin_lr_multiplier=0.0), DistInfo())


def test_cli_make_glyphs_refuses_a_folder_in_use(tmp_path):
    (tmp_path / "old.txt").write_text("mine")
    result = run_cli("data", "make-glyphs", tmp_path)
    assert result.returncode == 2 and "not empty" in result.stderr and (tmp_path / "old.txt").read_text() == "mine"


def test_a_large_gallery_gets_an_approximate_index_that_agrees_with_exact_search(tmp_path):
    """The HNSW index (FAISS, test extra) is written beside the gallery, used by search, kept in step by add,
    dropped by remove, and ignored when it no longer matches the gallery."""
    pytest.importorskip("faiss")
    from cnnkit.tasks.embed import Gallery

    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(2000, 32, generator=generator)
    gallery = Gallery()
    gallery.add([f"id{i}" for i in range(2000)], vectors)
    gallery.save(tmp_path / "g.gallery", approximate=True)
    assert (tmp_path / "g.gallery.faiss").is_file()
    again = Gallery.open(tmp_path / "g.gallery")
    assert again.index is not None and again.index.ntotal == 2000
    queries = vectors[:50] + 0.05 * torch.randn(50, 32, generator=generator)
    approximate = [row[0][0] for row in again.search(queries, top_k=1)]
    exact = [row[0][0] for row in again.search(queries, top_k=1, exact=True)]
    assert exact == [f"id{i}" for i in range(50)]
    assert sum(a == e for a, e in zip(approximate, exact)) >= 48  # recall@1 >= 0.96
    again.add(["new"], torch.ones(1, 32))
    assert again.index.ntotal == 2001 and again.search(torch.ones(1, 32), top_k=1)[0][0][0] == "new"
    again.remove("new")
    assert again.index is None  # HNSW cannot drop entries: exact until saved again
    again.save(tmp_path / "g.gallery", approximate=False)
    assert not (tmp_path / "g.gallery.faiss").exists()
    # An index left from other embeddings is not used.
    gallery.save(tmp_path / "h.gallery", approximate=True)
    stale = Gallery(vectors[:10], [f"x{i}" for i in range(10)])
    stale.save(tmp_path / "h2.gallery", approximate=False)
    (tmp_path / "h2.gallery.faiss").write_bytes((tmp_path / "h.gallery.faiss").read_bytes())
    assert Gallery.open(tmp_path / "h2.gallery").index is None
