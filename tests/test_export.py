"""Export (ONNX, TorchScript, torch.export) with parity checks, and the predict backends that run the exports.

Most tests use `make_run`: a fastnet run directory written directly with cnnkit's checkpoint format
(random weights, BatchNorm statistics made non-trivial), which takes milliseconds instead of a training
run. The CLI test uses the session's really trained run (conftest.trained_run).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy
import onnx
import pytest
import torch
import torch.nn as nn

from cnnkit.cli import main
from cnnkit.data.preprocess import Preprocessing
from cnnkit.engine.checkpoint import save_checkpoint
from cnnkit.errors import ConfigError
from cnnkit.export import (ExportError, ParityError, check_parity, export_model, export_run, load_predictor,
                           read_metadata)
from cnnkit.export.runtimes import RuntimeModel
from cnnkit.registry import create_model
from conftest import run_cli

CLASSES = ["Bag", "Sneaker", "T-shirt", "Trouser"]
PREPROCESSING = Preprocessing(1, (28, 28), (0.286,), (0.353,))
TOLERANCE = 1e-4


def make_run(run_dir: Path, seed: int = 0) -> Path:
    """A classification run directory with a random fastnet (4 classes, 1x28x28) as best.safetensors."""
    torch.manual_seed(seed)
    model = create_model("fastnet", num_classes=len(CLASSES), in_chans=1, input_size=28)
    for module in model.modules():  # fresh BatchNorm statistics (0 and 1) would hide a mistake in their use
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    record = {"task": "classify", "classes": CLASSES, "preprocessing": PREPROCESSING.to_dict(),
              "architecture": {"name": "fastnet", "args": {"num_classes": len(CLASSES), "in_chans": 1,
                                                          "input_size": [28, 28]}}}
    save_checkpoint(run_dir / "best.safetensors", model.state_dict(), record)
    return run_dir


def sample_images(count: int = 6, seed: int = 0) -> torch.Tensor:
    """uint8 (count, 1, 28, 28): smooth blobs rather than noise, so the classes differ between images."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 1, 7, 7, generator=generator)
    return (torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear") * 255).to(torch.uint8)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("export-run"))


@pytest.fixture(scope="module")
def torch_probabilities(run_dir) -> torch.Tensor:
    return load_predictor(run_dir, backend="torch").predict_proba(sample_images())


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """export(format, dynamic_batch) -> ExportResult, each export made once per module (ONNX takes ~2 s)."""
    folder, results = tmp_path_factory.mktemp("exports"), {}

    def export(export_format: str, dynamic_batch: bool):
        key = (export_format, dynamic_batch)
        if key not in results:
            suffix = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "torch-export": ".pt2"}[export_format]
            out = folder / f"{export_format}-{'dynamic' if dynamic_batch else 'batch1'}" / f"model{suffix}"
            results[key] = export_run(run_dir, export_format, out=out, dynamic_batch=dynamic_batch)
        return results[key]

    return export


@pytest.mark.parametrize("dynamic_batch", [False, True], ids=["batch1", "dynamic"])
@pytest.mark.parametrize("export_format", ["onnx", "torchscript", "torch-export"])
def test_export_round_trip_keeps_outputs_and_metadata(exported, torch_probabilities, export_format, dynamic_batch):
    result = exported(export_format, dynamic_batch)

    assert result.path.is_file() and result.format == export_format
    assert set(result.parity["max_abs_diff"]) == {"batch_1", "batch_4"}
    assert max(result.parity["max_abs_diff"].values()) <= TOLERANCE
    assert sorted(path.name for path in result.path.parent.iterdir()) == [result.path.name, result.path.name + ".json"], \
        "temporary files left behind"

    metadata = read_metadata(result.path)  # embedded in the file itself
    assert metadata["classes"] == CLASSES and metadata["task"] == "classify"
    assert Preprocessing.from_dict(metadata["preprocessing"]) == PREPROCESSING
    assert metadata["export"]["input"]["shape"] == ["batch" if dynamic_batch else 1, 1, 28, 28]
    sidecar = json.loads(result.metadata_path.read_text())
    assert sidecar["parity"] == result.parity and sidecar["export"]["source"]["sha256"]

    exported = load_predictor(result.path, trust_code=True)  # the file alone: classes and preprocessing from its metadata
    assert exported.classes == CLASSES
    probabilities = exported.predict_proba(sample_images())  # 6 images: one by one for a batch-1 file
    assert torch.allclose(probabilities, torch_probabilities, atol=TOLERANCE)


def test_onnx_file_passes_the_checker_and_carries_metadata_props(exported):
    path = exported("onnx", True).path
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    properties = {entry.key: entry.value for entry in proto.metadata_props}
    assert json.loads(properties["cnnkit"])["classes"] == CLASSES
    assert [node.name for node in proto.graph.input] == ["input"]
    assert [node.name for node in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


class BatchSpecialized(nn.Module):
    """Python control flow on the batch size: tracing keeps the branch of its example input (batch 2)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(28 * 28, len(CLASSES))

    def forward(self, x):
        logits = self.head(x.flatten(1))
        if x.shape[0] == 1:  # e.g. code that "squeezes" a single image differently
            return logits
        return logits + 0.01


def test_a_broken_export_fails_loudly_with_the_numbers_and_writes_nothing(tmp_path):
    record = {"task": "classify", "classes": CLASSES, "preprocessing": PREPROCESSING.to_dict(),
              "architecture": {"name": "batch_specialized", "args": {}}}
    target = tmp_path / "model.torchscript.pt"
    with pytest.raises(ParityError, match=r"batch 1: 0\.01.*tolerance 0\.0001") as caught, \
            pytest.warns(torch.jit.TracerWarning):  # the tracer noticed, but only the parity check stops it
        export_model(BatchSpecialized(), record, "torchscript", target, dynamic_batch=True)
    assert caught.value.differences["batch_1"] == pytest.approx(0.01, abs=1e-6)
    assert caught.value.differences["batch_4"] < TOLERANCE
    assert list(tmp_path.iterdir()) == [], "a failed export must leave no file behind"


def test_check_parity_threshold():
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 3)).eval()
    close = check_parity(model, lambda x: model(x) + 5e-5, PREPROCESSING, dynamic_batch=True)
    assert close["max_abs_diff"]["batch_4"] == pytest.approx(5e-5, rel=0.1)
    with pytest.raises(ParityError, match="2e-04|0.0002"):
        check_parity(model, lambda x: model(x) + 2e-4, PREPROCESSING, dynamic_batch=True)
    with pytest.raises(ParityError, match="nan"):
        check_parity(model, lambda x: model(x) * float("nan"), PREPROCESSING, dynamic_batch=True)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtime_backends_match_pytorch(run_dir, torch_probabilities, backend):
    classifier = load_predictor(run_dir, backend=backend)
    assert isinstance(classifier.model, RuntimeModel) and classifier.model.runtime == backend
    assert torch.allclose(classifier.predict_proba(sample_images()), torch_probabilities, atol=TOLERANCE)
    top = classifier.predict(sample_images()[:1], top_k=2)[0]
    assert [name for name, _ in top] == [CLASSES[int(i)] for i in torch_probabilities[0].topk(2).indices]


def test_onnx_cache_is_reused_and_rebuilt_when_the_checkpoint_changes(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)  # with its ONNX cache if another test made it already
    first = load_predictor(run, backend="onnxruntime")
    cached = run / "export" / "cache" / "best.onnx"
    stamp = cached.stat().st_mtime_ns
    load_predictor(run, backend="onnxruntime")
    assert cached.stat().st_mtime_ns == stamp, "an up-to-date cache must be reused"

    make_run(run, seed=2)  # new weights in the same run (a new best epoch)
    second = load_predictor(run, backend="onnxruntime")
    assert cached.stat().st_mtime_ns != stamp
    expected = load_predictor(run, backend="torch").predict_proba(sample_images())
    assert torch.allclose(second.predict_proba(sample_images()), expected, atol=TOLERANCE)
    assert not torch.allclose(first.predict_proba(sample_images()), expected, atol=1e-3)


def test_bad_inputs_give_clear_errors(run_dir, exported, tmp_path):
    foreign = tmp_path / "foreign.onnx"  # a valid ONNX model that cnnkit did not write
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "identity",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])])
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    with pytest.raises(ExportError, match="no cnnkit metadata"):
        load_predictor(foreign, backend="onnxruntime")
    with pytest.raises(ExportError, match="does not exist"):
        load_predictor(tmp_path / "missing.onnx")
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_run(run_dir, "tflite", out=tmp_path / "x.tflite")
    onnx_file = exported("onnx", False).path
    with pytest.raises(ConfigError, match="ONNX file: run it with --backend onnxruntime or openvino"):
        load_predictor(onnx_file, backend="torch")


def test_cli_export_then_predict_the_exported_file(trained_run, tmp_path, image_folder, capsys):
    run, _ = trained_run
    out = tmp_path / "fashion.onnx"
    result = run_cli("export", run, "--format", "onnx", "--dynamic-batch", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "parity with PyTorch: max abs difference batch 1" in result.stdout and out.is_file()

    image = sorted((image_folder / "test" / "Trouser").iterdir())[0]
    result = run_cli("predict", out, image, "--backend", "openvino", "--json", "--top-k", "2")
    assert result.returncode == 0, result.stderr
    predicted = json.loads(result.stdout)[0]["predictions"]
    expected = load_predictor(run, backend="torch").predict([image], top_k=2)[0]
    assert [p["class"] for p in predicted] == [name for name, _ in expected] and expected[0][0] == "Trouser"
    assert numpy.allclose([p["probability"] for p in predicted], [p for _, p in expected], atol=TOLERANCE)

    assert main(["export", str(tmp_path / "no-such-run")]) == 2  # in-process: the same code path as the command
    error = capsys.readouterr().err
    assert "cnnkit export: error:" in error and "no-such-run" in error and "Traceback" not in error


def test_export_refuses_tasks_it_cannot_describe_yet(tmp_path):
    record = {"task": "detect", "classes": CLASSES, "preprocessing": PREPROCESSING.to_dict(),
              "architecture": {"name": "x", "args": {}}}
    with pytest.raises(ExportError, match="exporting detect runs is not supported yet"):
        export_model(nn.Identity(), record, "onnx", tmp_path / "x.onnx")
    assert not os.listdir(tmp_path)


def test_choose_backend_measures_this_runs_images_and_auto_honours_the_choice(trained_run, tmp_path):
    """`cnnkit export --choose-backend` records the fastest path that agrees with PyTorch on the run's own
    validation images (in a child process); `--backend auto` then takes it, and ignores it once the
    checkpoint changed."""
    import shutil

    from conftest import run_cli

    from cnnkit.export.decide import AGREEMENT_FLOOR, decision_path, recorded_choice

    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    result = run_cli("export", run, "--dynamic-batch", "--out", tmp_path / "m.onnx", "--choose-backend")
    assert result.returncode == 0, result.stderr
    decision = recorded_choice(run)
    assert decision is not None and "backend for --backend auto" in result.stdout
    assert decision["split"] == "val" and decision["images"] > 0
    rows = {(row["runtime"], row["precision"]): row for row in decision["candidates"]}
    assert rows[("torch", "fp32")]["agreement"] == 1.0
    assert rows[("onnxruntime", "fp32")]["agreement"] >= AGREEMENT_FLOOR  # parity-checked fp32
    chosen = rows[(decision["runtime"], decision["precision"])]
    assert chosen["agreement"] >= AGREEMENT_FLOOR
    assert all(chosen["ms_per_image"] <= row["ms_per_image"] for key, row in rows.items()
               if key[0] != "torch" and row.get("agreement", 0) >= AGREEMENT_FLOOR)

    # auto follows the record: force a choice and see it taken.
    path = decision_path(run)
    forced = {**decision, "runtime": "openvino", "precision": "bf16"}
    path.write_text(json.dumps(forced))
    assert load_predictor(run, backend="auto").model.runtime == "openvino-bf16"
    forced["checkpoint_sha256"] = "0" * 64  # measured on another checkpoint: not used
    path.write_text(json.dumps(forced))
    assert load_predictor(run, backend="auto").model.runtime in ("openvino", "onnxruntime")


def test_a_failed_backend_measurement_costs_only_the_decision(tmp_path, capsys):
    from cnnkit.export.decide import choose_backend_in_child

    assert choose_backend_in_child(tmp_path / "missing-run") is None
    assert "`auto` keeps fp32" in capsys.readouterr().err
