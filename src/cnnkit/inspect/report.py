"""The run report: one self-contained `report.html` per run directory, plus its plots as PNG files.

    from cnnkit.inspect.report import write_report
    write_report("runs/fastnet-fashion-mnist-20261125-101500")   # -> RUN_DIR/report.html, RUN_DIR/report/*.png

Everything comes from the run directory itself (config.yaml, metrics.jsonl, best.safetensors), so the
report can be made again at any time (`cnnkit report RUN_DIR`). The HTML embeds every picture as a
base64 PNG and loads nothing from the network: it can be mailed or archived as one file.

Sections: overview, config, model summary, training curves (every run); for classification also the
confusion matrix, per-class metrics, the most confidently wrong images, first-layer filters, feature maps
and Grad-CAM of a few images; for other tasks what their package's `TaskInfo.report_sections` draws
(detection: mAP, per-class AP, PR curves, predictions beside the ground truth; segmentation: mIoU, per-class
IoU/Dice, masks; embeddings: ROC, CMC, score histograms, a PCA of the identities, the hardest false matches). The test split is used when the dataset has one, else the validation split;
it is evaluated once, in batches, with the run's precision (so the numbers match `cnnkit evaluate`).
A section that cannot be drawn (no conv layer, data moved away) says why in the report instead of
failing: the report is written at the end of every training run and must not lose it.

Written here: plots with matplotlib (Agg backend, no display), HTML with the standard library.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnkit.errors import CheckpointError, CnnkitError
from cnnkit.tasks.plots import check_time as _check_time
from cnnkit.tasks.plots import html_image as _img
from cnnkit.tasks.plots import missing as _missing
from cnnkit.tasks.plots import plot_image_grid  # noqa: F401 - cnnkit.inspect.maximize draws with it from here
from cnnkit.tasks.plots import pyplot as _pyplot
from cnnkit.tasks.plots import save_figure as _save

NUM_WRONG = 16        # most confidently wrong images shown
NUM_SAMPLES = 4       # images (of different classes) for Grad-CAM; the first also for feature maps
NUM_WRONG_EXPLAINED = 2  # of the wrong images, how many also get a Grad-CAM
FEATURE_CHANNELS = 8  # channels per layer in the feature-map picture
CURVE_SKIP = ("count", "images_per_second", "seconds")  # per-epoch numbers that are not learning curves


@dataclass
class Section:
    """One part of the report: an anchor id, a heading and its HTML body."""

    id: str
    title: str
    body: str


@dataclass
class Evaluation:
    """One pass over the evaluation split: the meter's metrics and the pictures the report needs."""

    split: str
    metrics: dict
    total: int                                     # images in the split (metrics["count"] may be fewer)
    wrong: list[tuple[float, int, int, torch.Tensor]] = field(default_factory=list)  # (p, predicted, true, image)
    samples: list[tuple[int, torch.Tensor]] = field(default_factory=list)            # (true class, image)


def write_report(run_dir: str | Path, *, device: str = "cpu", max_seconds: float = 60.0) -> Path:
    """Write RUN_DIR/report.html (self-contained) and its plots as RUN_DIR/report/*.png.

    Args:
        run_dir: A run directory written by `cnnkit train` (needs best.safetensors; config.yaml and
            metrics.jsonl are used when present).
        device: Where the model runs for evaluation, feature maps and Grad-CAM.
        max_seconds: Time budget: evaluation stops early (the report says after how many images) and the
            per-image pictures are skipped once it is spent. Loading the data is not interrupted.

    Returns:
        The path of report.html.

    Raises:
        CheckpointError: `run_dir` is not a run directory, or its best checkpoint is unreadable.
    """
    from cnnkit.engine.checkpoint import read_record
    from cnnkit.files import atomic_write_text

    started = time.perf_counter()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a directory; pass the run directory that `cnnkit train` printed")
    record = read_record(run_dir / "best.safetensors")
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):  # a report made again must not show pictures of an earlier one
        old.unlink()
    history = _read_history(run_dir / "metrics.jsonl")
    task = record["task"]
    sections = [_guarded("config", "Config", lambda: _config_section(run_dir, record)),
                _guarded("summary", "Model summary", lambda: _summary_section(record)),
                _guarded("curves", "Training curves", lambda: _curves_section(history, out))]
    facts: dict[str, str] = {}
    from cnnkit.tasks import task_info

    info = task_info(task)
    if info.report_details:
        sections += _classification_sections(run_dir, device, out, started + max_seconds, facts)
    elif info.report_sections is not None:
        sections += _task_sections(info.report_sections, task, run_dir, device, out, started + max_seconds, facts)
    else:
        sections.append(_task_note(task))
    logger = record.get("config", {}).get("logger", "none")
    if logger != "none":
        facts[logger] = _viewer_pictures(logger, run_dir, out, len(history))
    facts["report made in"] = f"{time.perf_counter() - started:.1f} s"
    path = run_dir / "report.html"
    atomic_write_text(path, _render(run_dir, record, history, facts, sections))
    return path


def _viewer_pictures(kind: str, run_dir: Path, out: Path, step: int) -> str:
    """Add the report's PNGs to the viewer the run logged to (logger=tensorboard|mlflow) as report/NAME."""
    from cnnkit.engine.run_loggers import log_report_pictures

    try:
        return log_report_pictures(kind, run_dir, sorted(out.glob("*.png")), step)
    except Exception as error:  # noqa: BLE001 - the report itself must still be written
        return f"pictures not added ({error})"


def _guarded(section_id: str, title: str, build) -> Section:
    """build() -> body HTML; an error becomes a short note in the section instead of a lost report."""
    try:
        return Section(section_id, title, build())
    except Exception as error:  # noqa: BLE001 - see the module docstring: the report must still be written
        return Section(section_id, title, _missing(error))


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _config_section(run_dir: Path, record: dict) -> str:
    path = run_dir / "config.yaml"
    if path.is_file():
        text = path.read_text()
    else:
        import yaml

        text = yaml.safe_dump(record.get("config", {}), sort_keys=False)
    return f"<pre>{html.escape(text)}</pre>"


def _summary_section(record: dict) -> str:
    from cnnkit.inspect.summary import summary
    from cnnkit.registry import create_model

    architecture = record["architecture"]
    model = create_model(architecture["name"], **architecture["args"])  # weights do not change the summary
    preprocessing = record["preprocessing"]
    table = summary(model, input_size=(preprocessing["channels"], *preprocessing["image_size"])).table()
    return f"<pre>{html.escape(table)}</pre>"


def _curves_section(history: list[dict], out: Path) -> str:
    """Loss, accuracy, other validation metrics and learning rate per epoch, train and validation."""
    if not history:
        return '<p class="missing">No metrics.jsonl: no epoch has finished.</p>'
    plt = _pyplot()
    keys = [key for key in dict.fromkeys(k for line in history for k in line) if not key.endswith(CURVE_SKIP)]
    panels = [("loss", ["train_loss", "val_loss"]), ("accuracy", ["train_accuracy", "val_accuracy"])]
    others = [k for k in keys if k.startswith("val_") and k not in ("val_loss", "val_accuracy")]
    panels += [("other validation metrics", others), ("learning rate (at the start of the epoch)", ["lr"])]
    panels = [(title, [k for k in names if k in keys]) for title, names in panels]
    panels = [(title, names) for title, names in panels if names]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, (title, names) in zip(axes.flat, panels):
        for name in names:
            points = [(line["epoch"], line[name]) for line in history if isinstance(line.get(name), (int, float))]
            axis.plot(*zip(*points), marker="o", markersize=3, label=name)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("epoch")
        epochs = sorted({line["epoch"] for line in history if isinstance(line.get("epoch"), int)})
        if len(epochs) <= 10:  # whole epochs only (one epoch: a single tick, not 0.96 ... 1.04)
            axis.set_xticks(epochs)
        else:
            from matplotlib.ticker import MaxNLocator

            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    path = _save(figure, out / "curves.png")
    return (_img(path, "training curves") + "<p>Train values are averages over each epoch's augmented "
            "batches; validation values are measured after the epoch.</p>")


def _task_sections(report_sections, task: str, run_dir: Path, device: str, out: Path, deadline: float,
                   facts: dict[str, str]) -> list[Section]:
    """The task package's own sections (TaskInfo.report_sections), from its predictor of the run."""
    from cnnkit.tasks import load_run

    try:
        predictor = load_run(run_dir, device=device)
        task_facts, parts = report_sections(predictor, out, deadline)
    except Exception as error:  # noqa: BLE001 - data moved away, for example: config, model and curves remain
        return [_task_note(task, error)]
    facts.update(task_facts)
    return [Section(section_id, title, body) for section_id, title, body in parts]


def _task_note(task: str, error: Exception | None = None) -> Section:
    """The section of a run whose task draws nothing more (or whose evaluation failed: why)."""
    why = "" if error is None else ('<p class="missing">Its evaluation could not be made: '
                                    f"{html.escape(str(error) or type(error).__name__)}</p>")
    return Section("task", "Task", f"<p>This is a <b>{html.escape(str(task))}</b> run: the report shows its "
                   f"config, model and training curves.</p>{why}")


def _classification_sections(run_dir: Path, device: str, out: Path, deadline: float,
                              facts: dict[str, str]) -> list[Section]:
    from cnnkit.tasks import load_run

    try:
        classifier = load_run(run_dir, device=device)
    except CnnkitError as error:
        return [Section("evaluation", "Evaluation", _missing(error))]
    try:
        evaluation = _evaluate(classifier, deadline)
    except Exception as error:  # noqa: BLE001 - data moved away, for example: the filters still tell something
        return [Section("evaluation", "Evaluation", _missing(error)),
                _guarded("filters", "First-layer filters", lambda: _filters(classifier, out))]
    metrics = evaluation.metrics
    facts[f"{evaluation.split} accuracy"] = f"{metrics['accuracy']:.4f} ({metrics['count']} images)"
    facts["balanced accuracy"] = f"{metrics['balanced_accuracy']:.4f}"
    if metrics["count"] < evaluation.total:
        facts["note"] = (f"time budget spent: evaluated {metrics['count']} of {evaluation.total} images; "
                         "`cnnkit report RUN_DIR --max-seconds 600` evaluates more")
    classes = classifier.classes
    return [
        _guarded("confusion", f"Confusion matrix ({evaluation.split})", lambda: _confusion(metrics, classes, out)),
        _guarded("per-class", f"Per-class metrics ({evaluation.split})", lambda: _per_class(metrics)),
        _guarded("wrong", "Most confidently wrong", lambda: _wrong(classifier, evaluation, out)),
        _guarded("filters", "First-layer filters", lambda: _filters(classifier, out)),
        _guarded("features", "Feature maps", lambda: _features(classifier, evaluation, out, deadline)),
        _guarded("gradcam", "Grad-CAM", lambda: _gradcam(classifier, evaluation, out, deadline)),
    ]


def _evaluate(classifier, deadline: float) -> Evaluation:
    """One batched pass over the test (else validation) split, keeping the pictures the report shows."""
    from cnnkit.device import resolve_precision
    from cnnkit.engine.evaluate import evaluate_split
    from cnnkit.tasks.base import config_of
    from cnnkit.tasks.classification import ClassificationTask, make_loader, prepare_data

    config = config_of(classifier.record)
    data = prepare_data(config, classifier.preprocessing)
    split, dataset = ("test", data.test) if data.test is not None else ("val", data.val)
    if dataset is None:
        raise CheckpointError(f"the dataset {config.data} has neither a test nor a validation split")
    device = classifier.device
    loader = make_loader(dataset, classifier.preprocessing, config, device, train=False)
    wrong: list[tuple[float, int, int, torch.Tensor]] = []
    samples: dict[int, torch.Tensor] = {}

    def keep_pictures(images, targets, result) -> bool:
        nonlocal wrong
        confidence, predicted = result["outputs"].float().softmax(dim=1).max(dim=1)
        images, targets = images.float().cpu(), targets.cpu()
        confidence, predicted = confidence.cpu(), predicted.cpu()
        for index in (predicted != targets).nonzero().flatten().tolist():
            wrong.append((float(confidence[index]), int(predicted[index]), int(targets[index]), images[index]))
        wrong = sorted(wrong, key=lambda item: -item[0])[:NUM_WRONG]
        for index, label in enumerate(targets.tolist()):
            if len(samples) < NUM_SAMPLES and label not in samples:
                samples[label] = images[index]
        return time.perf_counter() > deadline  # the time budget: stop, and say how many were evaluated

    task = ClassificationTask(classifier.model, classifier.classes)
    meter = evaluate_split(task, classifier.model, loader, device, resolve_precision(config.precision, device),
                           on_batch=keep_pictures)
    metrics = meter.compute(per_class=True)
    return Evaluation(split, metrics, len(dataset), wrong, sorted(samples.items()))


def _as_uint8(images: torch.Tensor, preprocessing) -> torch.Tensor:
    """Normalized float (N, C, H, W) -> the uint8 images the model saw (de-normalized)."""
    mean = torch.tensor(preprocessing.mean).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing.std).view(1, -1, 1, 1)
    return (images.float() * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8)


def _confusion(metrics: dict, classes: list[str], out: Path) -> str:
    plt = _pyplot()
    counts = torch.tensor(metrics["confusion_matrix"], dtype=torch.float64)
    share = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)  # each row: where that class's images went
    size = len(classes)
    side = min(16.0, 2.5 + 0.45 * size)
    figure, axis = plt.subplots(figsize=(side + 1.5, side))
    image = axis.imshow(share.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true class")
    if size <= 30:
        axis.set_xticks(range(size), classes, rotation=45, ha="right", fontsize=8)
        axis.set_yticks(range(size), classes, fontsize=8)
        for row in range(size):
            for column in range(size):
                value = int(counts[row, column])
                if value:
                    axis.text(column, row, str(value), ha="center", va="center", fontsize=7,
                              color="white" if share[row, column] > 0.5 else "black")
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    path = _save(figure, out / "confusion.png")
    return _img(path, "confusion matrix") + ("<p>Rows are true classes, columns predicted classes; numbers are "
                                             "image counts, colour the share of the row.</p>")


def _per_class(metrics: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{v['precision']:.4f}</td><td>{v['recall']:.4f}</td>"
                   f"<td>{v['f1']:.4f}</td><td>{v['support']}</td></tr>" for name, v in metrics["per_class"].items())
    return ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
            f"{rows}</table><p>accuracy {metrics['accuracy']:.4f}, balanced accuracy (mean recall) "
            f"{metrics['balanced_accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}, loss {metrics['loss']:.4f} "
            f"over {metrics['count']} images.</p>")


def _wrong(classifier, evaluation: Evaluation, out: Path) -> str:
    if not evaluation.wrong:
        return "<p>No image of this split is misclassified.</p>"
    classes = classifier.classes
    images = _as_uint8(torch.stack([image for *_, image in evaluation.wrong]), classifier.preprocessing)
    labels = [f"true {classes[true]}\npredicted {classes[predicted]} ({p:.2f})"
              for p, predicted, true, _ in evaluation.wrong]
    title = f"the {len(labels)} most confidently wrong {evaluation.split} images"
    path = plot_image_grid(images, labels, title, out / "wrong.png")
    return _img(path, "most confidently wrong images") + ("<p>Confident mistakes are where to look first: a wrong "
                                                          "label in the data, or classes the model confuses.</p>")


def _filters(classifier, out: Path) -> str:
    from cnnkit.inspect.visualize import plot_filters

    path = plot_filters(classifier.model, None, out / "filters.png")
    return _img(path, "first-layer filters") + ("<p>The kernels of the first convolution, each scaled to its own "
                                                "range: trained first layers look like edge and colour detectors.</p>")


def _features(classifier, evaluation: Evaluation, out: Path, deadline: float) -> str:
    """The first FEATURE_CHANNELS channels of the first, middle and last conv layers, one row per layer."""
    from cnnkit.inspect.visualize import _normalize_each, feature_maps

    _check_time(deadline)
    if not evaluation.samples:
        return '<p class="missing">No evaluation image to show.</p>'
    label, image = evaluation.samples[0]
    maps = feature_maps(classifier.model, image[None])  # {layer: (C, H, W)}; image is already normalized
    tiles, labels = [], []
    for layer, tensor in maps.items():
        shown = _normalize_each(tensor[:FEATURE_CHANNELS])  # each channel scaled to [0, 1]
        tiles += [(shown[index:index + 1] * 255).round().to(torch.uint8) for index in range(len(shown))]  # (1, h, w)
        labels += [f"{layer} {tuple(tensor.shape)}" if index == 0 else f"channel {index}"
                   for index in range(len(shown))]
    title = (f"feature maps of one {classifier.classes[label]} image: first {FEATURE_CHANNELS} channels of the "
             "first, middle and last conv layers")
    path = plot_image_grid(tiles, labels, title, out / "features.png", columns=FEATURE_CHANNELS, cmap="viridis")
    return _img(path, "feature maps") + ("<p>Each channel is scaled to its own range. Early layers keep the image's "
                                         "shape (edges, regions); deep layers are coarse maps of parts. All channels "
                                         "of any layer: <code>cnnkit inspect features RUN_DIR IMAGE</code>.</p>")


def _gradcam(classifier, evaluation: Evaluation, out: Path, deadline: float) -> str:
    from cnnkit.inspect.gradcam import gradcam, plot_gradcam

    classes = classifier.classes
    chosen = [(image, label, "") for label, image in evaluation.samples]
    chosen += [(image, true, "wrong-") for _, _, true, image in evaluation.wrong[:NUM_WRONG_EXPLAINED]]
    pictures, layers = [], {}
    for index, (image, true, kind) in enumerate(chosen):
        _check_time(deadline)
        inputs = image[None].to(classifier.device)  # (1, C, H, W), normalized
        heatmap, predicted, layer = gradcam(classifier.model, inputs)
        layers[layer] = True
        title = f"true {classes[true]}, predicted {classes[predicted]}"
        path = plot_gradcam(_as_uint8(image[None], classifier.preprocessing)[0], heatmap, title,
                            out / f"gradcam-{kind}{index}.png")
        pictures.append(_img(path, path.stem, css="small"))
    return (f"<p>Where the evidence for the predicted class lies: Grad-CAM at layer {html.escape(', '.join(layers))}"
            " (chosen for the model's family; <code>cnnkit explain --layer</code> picks another). The last pictures "
            "explain confidently wrong predictions.</p>" + f'<div class="row">{"".join(pictures)}</div>')


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
nav a { margin-right: 1em; } pre { background: #f5f5f5; padding: 0.8em; overflow: auto; font-size: 12px;
max-height: 32em; } table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc;
padding: 0.2em 0.6em; text-align: right; } td:first-child, th:first-child, #overview td { text-align: left; }
img { max-width: 100%; } figure { margin: 0.5em 0; } figure.small { display: inline-block; margin: 0.3em; }
figure.small img { width: 270px; } figcaption { font-size: 11px; color: #777; } .missing { color: #a33; }
.row { display: flex; flex-wrap: wrap; }
"""


def _render(run_dir: Path, record: dict, history: list[dict], facts: dict[str, str], sections: list[Section]) -> str:
    """The whole page: overview facts, a table of contents, then the sections."""
    architecture = record.get("architecture", {})
    config = record.get("config", {})
    best = record.get("metrics", {})
    overview = {"run directory": str(run_dir), "task": str(record.get("task", "classify")),
                "model": str(architecture.get("name")), "data": str(config.get("data")),
                "epochs": f"{len(history)} of {config.get('epochs')}",
                "best epoch": ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in best.items() if k in ("epoch", "val_loss", "val_accuracy")),
                **facts}
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in overview.items())
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections)
    title = f"cnnkit report: {run_dir.name}"
    version = html.escape(str(record.get("versions", {}).get("cnnkit", "")))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<table id="overview">{rows}</table><nav>{nav}</nav>{body}'
            f"<footer><p>made by cnnkit {version} from the files of the run directory</p></footer></body></html>\n")
