"""Face-recognition metrics: verification (pairs) and identification (gallery / probes), as the field reports them.

Verification: a score per pair (cosine similarity of the two embeddings) and whether the pair is genuine
(same identity). The ROC curve is TAR (true accept rate) against FAR (false accept rate) over every
threshold; reported: AUC, EER (where FAR equals FRR = 1 - TAR), TAR at FAR = 1e-2 and 1e-3 (the largest
TAR whose FAR does not exceed the target), and LFW's 10-fold accuracy: for each fold the threshold that
maximises accuracy on the other nine folds, applied to it; the mean and std over folds.

Identification: each identity has gallery images (enrolled) and probes; a probe's rank is the position of
the first gallery image of its identity in the gallery sorted by similarity. CMC(k) = share of probes
with rank <= k; rank-1 and rank-5 are CMC(1) and CMC(5). mAP: every test image as a query against all the
others (retrieval), the mean over queries of the average precision of finding its identity's images.

Hand-written (torch): scikit-learn's roc_curve would give the same points but is not a dependency;
tests compare with hand-computed ROC points.
"""

from __future__ import annotations

import torch

FAR_TARGETS = (1e-2, 1e-3)


def roc(scores: torch.Tensor, genuine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(FAR, TAR, thresholds), one point per distinct score from the highest threshold down, starting at (0, 0).

    A pair is accepted when its score >= threshold.
    """
    scores, genuine = scores.double().flatten(), genuine.bool().flatten()
    order = scores.argsort(descending=True)
    scores, genuine = scores[order], genuine[order]
    positives, negatives = max(int(genuine.sum()), 1), max(int((~genuine).sum()), 1)
    true_accepts = genuine.cumsum(0).double()
    false_accepts = (~genuine).cumsum(0).double()
    last_of_value = torch.ones_like(genuine)  # one point per distinct score: its last occurrence
    last_of_value[:-1] = scores[1:] != scores[:-1]
    zero = torch.zeros(1, dtype=torch.float64)
    far = torch.cat([zero, false_accepts[last_of_value] / negatives])
    tar = torch.cat([zero, true_accepts[last_of_value] / positives])
    thresholds = torch.cat([torch.tensor([float("inf")], dtype=torch.float64), scores[last_of_value]])
    return far, tar, thresholds


def auc(far: torch.Tensor, tar: torch.Tensor) -> float:
    """Area under the ROC curve (trapezoids)."""
    return float(torch.trapezoid(tar, far))


def equal_error_rate(far: torch.Tensor, tar: torch.Tensor) -> float:
    """The error rate where FAR = FRR, interpolated linearly between the two ROC points that bracket it."""
    frr = 1 - tar
    difference = far - frr  # rises from -1 (at the highest threshold) to +1
    index = int(torch.nonzero(difference >= 0)[0]) if bool((difference >= 0).any()) else len(far) - 1
    if index == 0:
        return float(far[0])
    d0, d1 = float(difference[index - 1]), float(difference[index])
    weight = d0 / (d0 - d1) if d1 != d0 else 0.0
    return float(far[index - 1] + weight * (far[index] - far[index - 1]))


def tar_at_far(far: torch.Tensor, tar: torch.Tensor, target: float) -> float:
    """The largest TAR among the ROC points whose FAR does not exceed `target`."""
    allowed = far <= target + 1e-12
    return float(tar[allowed].max())


def best_threshold(scores: torch.Tensor, genuine: torch.Tensor) -> tuple[float, float]:
    """(threshold, accuracy) maximising the accuracy of `score >= threshold` on these pairs."""
    far, tar, thresholds = roc(scores, genuine)
    positives = float(genuine.sum())
    negatives = float(len(genuine) - positives)
    accuracy = (tar * positives + (1 - far) * negatives) / max(len(genuine), 1)
    best = int(accuracy.argmax())
    threshold = float(thresholds[best]) if best > 0 else float(scores.max()) + 1e-6
    return threshold, float(accuracy[best])


def kfold_accuracy(scores: torch.Tensor, genuine: torch.Tensor, folds: int = 10) -> dict[str, float]:
    """LFW's protocol: pairs in `folds` consecutive folds; each fold scored with the threshold best on the rest."""
    count = len(scores)
    edges = [round(count * fold / folds) for fold in range(folds + 1)]
    accuracies, thresholds = [], []
    for fold in range(folds):
        test = torch.zeros(count, dtype=torch.bool)
        test[edges[fold]:edges[fold + 1]] = True
        if not test.any() or test.all():
            continue
        threshold, _ = best_threshold(scores[~test], genuine[~test])
        predicted = scores[test] >= threshold
        accuracies.append(float((predicted == genuine[test].bool()).double().mean()))
        thresholds.append(threshold)
    values = torch.tensor(accuracies, dtype=torch.float64)
    return {"accuracy": float(values.mean()), "accuracy_std": float(values.std()) if len(values) > 1 else 0.0,
            "threshold": float(torch.tensor(thresholds).mean())}


def verification_metrics(scores: torch.Tensor, genuine: torch.Tensor, folds: int = 10,
                         balance: bool = True, seed: int = 0) -> dict[str, float]:
    """AUC, EER, TAR@FAR=1e-2/1e-3, 10-fold accuracy and the threshold (mean over folds) for scored pairs.

    The ROC uses every pair. The 10-fold accuracy, as LFW's protocol, is measured on as many impostor as
    genuine pairs (with `balance`: every genuine pair and a seeded sample of impostors of the same number,
    shuffled): on all pairs of a test set it would mostly count impostors.
    """
    far, tar, _ = roc(scores, genuine)
    result = {"auc": auc(far, tar), "eer": equal_error_rate(far, tar)}
    for target in FAR_TARGETS:
        result[f"tar_at_far_{target:g}"] = tar_at_far(far, tar, target)  # tar_at_far_0.01, tar_at_far_0.001
    if balance:
        scores, genuine = balanced(scores, genuine, seed)
    kfold = kfold_accuracy(scores, genuine, folds)
    result.update(verification_accuracy=kfold["accuracy"], verification_accuracy_std=kfold["accuracy_std"],
                  threshold=kfold["threshold"], pairs=len(scores), genuine_pairs=int(genuine.sum()))
    return result


def balanced(scores: torch.Tensor, genuine: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Every genuine pair and as many impostor pairs (a seeded sample), in a seeded random order."""
    generator = torch.Generator().manual_seed(seed)
    positive, negative = genuine.nonzero().flatten(), (~genuine.bool()).nonzero().flatten()
    count = min(len(positive), len(negative))
    positive = positive[torch.randperm(len(positive), generator=generator)[:count]]
    negative = negative[torch.randperm(len(negative), generator=generator)[:count]]
    chosen = torch.cat([positive, negative])
    chosen = chosen[torch.randperm(len(chosen), generator=generator)]
    return scores[chosen], genuine[chosen]


def all_pairs(embeddings: torch.Tensor, labels: torch.Tensor, max_pairs: int = 4_000_000,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine scores, genuine) of every pair i < j, or of a seeded sample of `max_pairs` of them."""
    count = len(labels)
    first, second = torch.triu_indices(count, count, offset=1)
    if len(first) > max_pairs:
        keep = torch.randperm(len(first), generator=torch.Generator().manual_seed(seed))[:max_pairs]
        first, second = first[keep], second[keep]
    embeddings = torch.nn.functional.normalize(embeddings.float(), dim=1)
    scores = (embeddings[first] * embeddings[second]).sum(dim=1)
    return scores, labels[first] == labels[second]


def identification_metrics(embeddings: torch.Tensor, labels: torch.Tensor, max_rank: int = 20) -> dict:
    """Rank-1, rank-5, the CMC curve (first image of each identity in the gallery, the rest probes) and
    retrieval mAP (every image against all others)."""
    embeddings = torch.nn.functional.normalize(embeddings.float(), dim=1)
    labels = labels.long()
    first_of = {}
    for index, label in enumerate(labels.tolist()):
        first_of.setdefault(label, index)
    gallery = torch.tensor(sorted(first_of.values()))
    is_gallery = torch.zeros(len(labels), dtype=torch.bool)
    is_gallery[gallery] = True
    probes = (~is_gallery).nonzero().flatten()
    result: dict = {"gallery": len(gallery), "probes": len(probes)}
    if len(probes):
        similarity = embeddings[probes] @ embeddings[gallery].T  # (P, G)
        order = similarity.argsort(dim=1, descending=True)
        hits = labels[gallery][order] == labels[probes].view(-1, 1)  # (P, G)
        ranks = hits.float().argmax(dim=1) + 1  # identities without a gallery image cannot occur here
        cmc = [float((ranks <= k).double().mean()) for k in range(1, min(max_rank, len(gallery)) + 1)]
        result.update(rank1=cmc[0], rank5=cmc[min(4, len(cmc) - 1)], cmc=cmc)
    result["map"] = retrieval_map(embeddings, labels)
    return result


def retrieval_map(embeddings: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> float:
    """Mean average precision of every image as a query against all others (its own identity relevant)."""
    embeddings = torch.nn.functional.normalize(embeddings.float(), dim=1)
    total, queries = 0.0, 0
    for start in range(0, len(labels), chunk):
        rows = torch.arange(start, min(start + chunk, len(labels)))
        similarity = embeddings[rows] @ embeddings.T
        similarity[torch.arange(len(rows)), rows] = float("-inf")  # the query itself is not retrieved
        order = similarity.argsort(dim=1, descending=True)[:, :-1]  # (Q, N - 1), itself last: dropped
        relevant = (labels[order] == labels[rows].view(-1, 1)).double()
        count = relevant.sum(dim=1)
        precision = relevant.cumsum(dim=1) / torch.arange(1, relevant.shape[1] + 1, dtype=torch.float64)
        average = (precision * relevant).sum(dim=1) / count.clamp(min=1)
        total += float(average[count > 0].sum())
        queries += int((count > 0).sum())
    return total / max(queries, 1)
