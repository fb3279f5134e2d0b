"""The run report's embedding part (TaskInfo.report_sections): verification ROC (TAR against FAR, log FAR), the CMC
curve, the score distributions of genuine and impostor pairs, a 2-D PCA of the test identities' embeddings and
the hardest false matches.

The numbers are the task's own evaluation (`Embedder.evaluate`: EmbeddingMeter over the test identities, else
the validation identities, never trained on); the embeddings are computed once here, in chunks that stop at
the report's time budget, and the pictures are drawn from the same embeddings.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cnnkit.errors import ConfigError
from cnnkit.tasks.plots import READABLE_SIDE, guarded, html_image, plot_image_grid, pyplot, save_figure, upscale

CHUNK = 512            # images embedded at a time (the time budget is checked between chunks)
PCA_IDENTITIES = 10    # identities (those with the most images) in the PCA picture
NUM_FALSE_MATCHES = 8  # hardest impostor pairs shown
MAX_SEARCHED = 4000    # images searched for the hardest false matches (a (N, N) similarity matrix)


def report_sections(embedder, out: Path, deadline: float) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """(facts, sections) of an embedding run."""
    from cnnkit.metrics.verification import all_pairs
    from cnnkit.tasks.base import config_of
    from cnnkit.tasks.embed.data import read_identities
    from cnnkit.tasks.embed.task import EmbeddingMeter

    config = config_of(embedder.record)
    data = read_identities(config, embedder.preprocessing)
    split, dataset = ("test", data.test) if data.test is not None else ("val", data.val)
    if dataset is None:
        raise ConfigError(f"the dataset {config.data} has neither test nor validation identities")
    parts = []
    for start in range(0, len(dataset.labels), CHUNK):
        parts.append(embedder.embed(dataset.images[start:start + CHUNK]))
        if time.perf_counter() > deadline:
            break
    embeddings = torch.cat(parts)  # (N, D) unit vectors
    labels = dataset.labels[:len(embeddings)]
    meter = EmbeddingMeter()
    meter.update(embeddings, labels)
    metrics = meter.compute(per_class=True)
    scores, genuine = all_pairs(embeddings, labels)
    facts = {f"{split} TAR@FAR=1e-3": (f"{metrics['tar_at_far_0.001']:.4f}, TAR@FAR=1e-2 "
                                        f"{metrics['tar_at_far_0.01']:.4f}, EER {metrics['eer']:.4f}, "
                                        f"AUC {metrics['auc']:.4f}"),
             f"{split} identification": (f"rank-1 {metrics.get('rank1', float('nan')):.4f}, rank-5 "
                                         f"{metrics.get('rank5', float('nan')):.4f}, mAP {metrics['map']:.4f} "
                                         f"({metrics['count']} images of {metrics['identities']} identities)")}
    if len(embeddings) < len(dataset.labels):
        facts["note"] = (f"time budget spent: embedded {len(embeddings)} of {len(dataset.labels)} images; "
                         "`cnnkit report RUN_DIR --max-seconds 600` embeds more")
    images = dataset.images[:len(embeddings)]
    sections = [
        guarded("roc", f"Verification ROC ({split})", lambda: _roc(scores, genuine, metrics, out)),
        guarded("cmc", f"Identification CMC ({split})", lambda: _cmc(metrics, out)),
        guarded("scores", f"Genuine and impostor scores ({split})",
                lambda: _histograms(scores, genuine, embedder.threshold, out)),
        guarded("pca", f"Embeddings in 2-D ({split})", lambda: _pca(embeddings, labels, dataset.classes, out)),
        guarded("false-matches", f"Hardest false matches ({split})",
                lambda: _false_matches(embeddings, labels, images, dataset.classes, embedder.threshold, out)),
    ]
    return facts, sections


def _roc(scores: torch.Tensor, genuine: torch.Tensor, metrics: dict, out: Path) -> str:
    from cnnkit.metrics.verification import roc

    far, tar, _ = roc(scores, genuine)
    impostors = max(int((~genuine).sum()), 1)
    shown = far > 0  # a log axis has no 0; the curve starts at the first false accept
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.0, 4.2))
    axis.plot(far[shown].numpy(), tar[shown].numpy(), color="#4e79a7")
    for target in (1e-2, 1e-3):
        if target >= 1 / impostors:
            axis.axvline(target, color="#bab0ac", linestyle=":", linewidth=1)
    axis.set_xscale("log")
    axis.set_xlim(max(1 / impostors, 1e-6), 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("false accept rate (FAR, log scale)")
    axis.set_ylabel("true accept rate (TAR)")
    axis.set_title(f"ROC over {len(scores):,} pairs: AUC {metrics['auc']:.4f}, EER {metrics['eer']:.4f}", fontsize=10)
    axis.grid(alpha=0.3, which="both")
    path = save_figure(figure, out / "roc.png")
    return html_image(path, "verification ROC") + (
        f"<p>Every pair of {metrics['count']} images (cosine similarity of the embeddings); the dotted lines mark "
        f"FAR 1e-2 and 1e-3. With {impostors:,} impostor pairs, FARs under {1 / impostors:.1e} cannot be "
        "measured.</p>")


def _cmc(metrics: dict, out: Path) -> str:
    cmc = metrics.get("cmc")
    if not cmc:
        return '<p class="missing">No identity has a second image to search with (no probes).</p>'
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.0, 3.8))
    ranks = list(range(1, len(cmc) + 1))
    axis.plot(ranks, cmc, marker="o", markersize=3, color="#59a14f")
    axis.set_xlabel("rank k")
    axis.set_ylabel("share of probes found within k")
    axis.set_ylim(0, 1.02)
    axis.set_xticks(ranks if len(ranks) <= 20 else ranks[::2])
    axis.grid(alpha=0.3)
    axis.set_title(f"CMC: rank-1 {cmc[0]:.4f}", fontsize=10)
    path = save_figure(figure, out / "cmc.png")
    return html_image(path, "CMC curve") + (
        f"<p>Gallery: the first image of each of the {metrics['gallery']} identities; probes: the other "
        f"{metrics['probes']} images, each searched against the gallery.</p>")


def _histograms(scores: torch.Tensor, genuine: torch.Tensor, threshold: float, out: Path) -> str:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 3.8))
    scores = scores.double()
    low, high = float(scores.min()), float(scores.max())
    bins = torch.linspace(low, max(high, low + 1e-6), 61, dtype=torch.float64).numpy()  # the scores' own range: a collapsed model's too
    axis.hist(scores[~genuine].numpy(), bins=bins, density=True, alpha=0.6, color="#e15759",
              label=f"impostor pairs ({int((~genuine).sum()):,})")
    axis.hist(scores[genuine].numpy(), bins=bins, density=True, alpha=0.6, color="#4e79a7",
              label=f"genuine pairs ({int(genuine.sum()):,})")
    axis.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"the run's threshold {threshold:.3f}")
    axis.set_xlabel("cosine similarity")
    axis.set_ylabel("density")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    path = save_figure(figure, out / "scores.png")
    return html_image(path, "score distributions") + (
        "<p>Each histogram is normalised to area 1 (impostor pairs far outnumber genuine ones). The less they "
        "overlap, the better the verification; the threshold was chosen on the validation identities.</p>")


def _pca(embeddings: torch.Tensor, labels: torch.Tensor, classes: list[str], out: Path) -> str:
    counts = torch.bincount(labels, minlength=len(classes))
    chosen = counts.argsort(descending=True)[:PCA_IDENTITIES]
    chosen = chosen[counts[chosen] > 0]
    keep = torch.isin(labels, chosen)
    points = embeddings[keep].double()
    if len(points) < 3:
        return '<p class="missing">Too few images for a projection.</p>'
    _, _, components = torch.pca_lowrank(points, q=2, center=True)  # (D, 2)
    projected = (points - points.mean(dim=0)) @ components  # (n, 2)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 5.0))
    for index, identity in enumerate(chosen.tolist()):
        rows = labels[keep] == identity
        axis.scatter(projected[rows, 0].numpy(), projected[rows, 1].numpy(), s=14,
                     color=f"C{index % 10}", marker="o" if index < 10 else "x",
                     label=classes[identity])
    axis.set_xlabel("first principal component")
    axis.set_ylabel("second principal component")
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axis.grid(alpha=0.3)
    path = save_figure(figure, out / "pca.png")
    return html_image(path, "PCA of the embeddings") + (
        f"<p>The {len(chosen)} identities with the most images, projected on the two directions of largest "
        "variance (torch.pca_lowrank). Tight, separate clusters are what the loss trains for; the projection "
        "loses most dimensions, so overlap here does not prove overlap in the embedding.</p>")


def _false_matches(embeddings: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, classes: list[str],
                   threshold: float, out: Path) -> str:
    count = min(len(labels), MAX_SEARCHED)
    similarity = embeddings[:count] @ embeddings[:count].T  # (N, N) cosine
    impostor = (labels[:count, None] != labels[None, :count]).triu(diagonal=1)
    similarity = similarity.masked_fill(~impostor, float("-inf"))
    top = similarity.flatten().topk(min(NUM_FALSE_MATCHES, int(impostor.sum())))
    if not len(top.values):
        return '<p class="missing">Only one identity: there are no impostor pairs.</p>'
    pictures, captions = [], []
    for score, flat in zip(top.values.tolist(), top.indices.tolist()):
        first, second = divmod(flat, count)
        pictures += [upscale(images[first], READABLE_SIDE // 2)[0], upscale(images[second], READABLE_SIDE // 2)[0]]
        verdict = "accepted" if score >= threshold else "rejected"
        captions += [f"{classes[int(labels[first])]}", f"{classes[int(labels[second])]}\n{score:.3f} ({verdict})"]
    path = plot_image_grid(pictures, captions, "the most similar pairs of different identities", out / "false-matches.png",
                           columns=4)
    searched = f" (among the first {count} images)" if count < len(labels) else ""
    return html_image(path, "hardest false matches") + (
        f"<p>Pairs of different identities with the highest similarity{searched}, two pairs per row; "
        f"\"accepted\": above the run's threshold {threshold:.3f}, a false accept. Look for near-duplicates or "
        "wrong identity labels first.</p>")
