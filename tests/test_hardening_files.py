"""Hostile files (issue 26): each gives its documented error or a counted skip, no traceback, no canary file,
bounded memory. The corpus is generated here at test time (no binary blobs):

- code: a .pt2 whose pickled sample inputs write a canary, a TorchScript archive and a `.pt` carrying the same
  pickle; through `cnnkit.export.load_predictor`, `cnnkit predict` and `cnnkit serve`;
- checkpoint records: invalid JSON, a list, missing keys, std=0, one class for four logits, no classes, sizes
  that would ask the allocator for terabytes; an ONNX file whose metadata is not JSON;
- YAML anchor bombs in a --config file, a key=value override, a --model spec and a YOLO data.yaml (RSS measured
  in a subprocess);
- detection annotations: decompression bombs, VOC inf sizes, COCO ids that are lists/dicts, `annotations` 5 /
  null / missing, JSON nested 100,000 deep, `file_name: ../../etc/passwd`;
- image folders: a folder named x.png and a symlink loop (counted as skipped), a 169 MP PNG of ~170 kB (refused
  before decoding, in training reads and predict; RSS measured).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import onnx
import pytest
from safetensors.torch import load_file, save_file

from cnnkit.cli import main
from cnnkit.errors import CheckpointError, CnnkitError, DataError
from cnnkit.export import ExportError, export_run, load_predictor, read_metadata
from test_export import make_run

ROOT = Path(__file__).resolve().parents[1]


class CanaryPayload:
    """A pickle that creates `canary` when unpickled (what an attacker's file would do, harmlessly)."""

    def __init__(self, canary: Path):
        self.canary = str(canary)

    def __reduce__(self):
        return (open, (self.canary, "w"))


def with_member_replaced(source: Path, target: Path, suffix: str, data: bytes) -> Path:
    """A copy of zip archive `source` whose member ending in `suffix` holds `data`."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            out.writestr(info, data if info.filename.endswith(suffix) else archive.read(info))
    return target


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A run and its genuine .pt2 and TorchScript exports (cnnkit metadata inside)."""
    folder = tmp_path_factory.mktemp("hardening-exports")
    run = make_run(folder / "run")
    pt2 = export_run(run, "torch-export", out=folder / "model.pt2").path
    script = export_run(run, "torchscript", out=folder / "model.torchscript.pt").path
    return run, pt2, script


def assert_clean_error(status: int, error: str, *words: str) -> None:
    assert status == 2, error
    assert "Traceback" not in error and all(word in error for word in words), error


def test_pt2_payload_is_live_and_refused_everywhere(exports, tmp_path, capsys):
    import torch

    _run, pt2, script = exports
    # The payload works: torch.export.load itself runs it (the reason for the refusal).
    control = tmp_path / "control-canary"
    live = with_member_replaced(pt2, tmp_path / "live.pt2", "sample_inputs/model.pt",
                                pickle.dumps(CanaryPayload(control), protocol=2))
    with pytest.raises(Exception):  # noqa: B017 - the payload is no valid sample input: any error
        torch.export.load(str(live))
    assert control.exists(), "torch.export.load did not run the payload: the test would prove nothing"
    capsys.readouterr()  # torch's own log of the failed load

    canary = tmp_path / "canary"
    payload = pickle.dumps(CanaryPayload(canary), protocol=2)
    files = [with_member_replaced(pt2, tmp_path / "hostile.pt2", "sample_inputs/model.pt", payload),
             with_member_replaced(script, tmp_path / "hostile.torchscript.pt", "/data.pkl", payload),
             with_member_replaced(script, tmp_path / "hostile.pt", "/data.pkl", payload)]
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(image)
    for file in files:
        with pytest.raises(ExportError, match=f"{file.name} is a .* file, which is code.*--trust-code"):
            load_predictor(file)
        for command in (["predict", str(file), str(image)], ["serve", str(file), "--port", "1"]):
            status = main(command)
            assert_clean_error(status, capsys.readouterr().err, file.name, "--trust-code", "ONNX")
        assert read_metadata(file)["classes"], "the metadata is read from the archive without loading it"
    assert not canary.exists(), "a refused file ran code"


def test_trusted_exports_load_and_print_their_sha256(exports, capsys):
    from cnnkit.export.exporter import file_sha256

    _run, pt2, script = exports
    for file in (pt2, script):
        assert load_predictor(file, trust_code=True).classes
        assert file_sha256(file) in capsys.readouterr().err


def _rewrite(run: Path, target: Path, text: str) -> Path:
    target.mkdir()
    save_file(load_file(run / "best.safetensors"), str(target / "best.safetensors"), metadata={"cnnkit": text})
    return target


BAD_RECORDS = {
    "invalid-json": ("{not json", "not valid JSON"),
    "a-list": ("[1, 2]", "must be a JSON mapping, not a list"),
    "missing-keys": ('{"task": "classify"}', "is missing"),
    "std-zero": ({"preprocessing": {"std": [0.0]}}, "preprocessing.std must be positive"),
    "one-class-four-logits": ({"classes": ["a"]}, "1 classes but its model has 4 outputs"),
    "empty-classes": ({"classes": []}, "classes must be a list of 1 to"),
    "huge-input": ({"architecture": {"name": "fastnet", "args": {"num_classes": 4, "in_chans": 1,
                                                                 "input_size": [10**9, 10**9]}}},
                   "arguments must be finite and at most"),
    "huge-width": ({"classes": [str(n) for n in range(900_000)],
                    "architecture": {"name": "fastnet", "args": {"num_classes": 900_000, "in_chans": 1,
                                                                 "input_size": [28, 28]}}},
                   "weights, but the file holds"),
    "nan-mean": ('{"preprocessing": {"channels": 1, "image_size": [28, 28], "mean": [NaN], "std": [1]}}',
                 "preprocessing.mean must be 1 finite number"),
}


@pytest.mark.parametrize("name", list(BAD_RECORDS))
def test_broken_checkpoint_records_give_one_clear_error(exports, tmp_path, capsys, name):
    run, _pt2, _script = exports
    change, words = BAD_RECORDS[name]
    if isinstance(change, dict):
        record = json.loads(json.dumps(read_metadata_of(run)))
        for key, value in change.items():
            record[key] = {**record[key], **value} if key == "preprocessing" else value
        text = json.dumps(record)
    else:
        text = change
    broken = _rewrite(run, tmp_path / name, text)
    with pytest.raises(CheckpointError, match=words) as caught:
        load_predictor(broken, backend="torch")
    assert "best.safetensors" in str(caught.value)
    status = main(["predict", str(broken), str(_png(tmp_path / "x.png", 28, 28)), "--backend", "torch"])
    assert_clean_error(status, capsys.readouterr().err, "best.safetensors")


def read_metadata_of(run: Path) -> dict:
    from cnnkit.engine.checkpoint import read_record

    return read_record(run / "best.safetensors")


def test_onnx_with_invalid_json_metadata(tmp_path):
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "identity",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])])
    model = onnx.helper.make_model(graph)
    for name, text, words in (("bad.onnx", "{oops", "not valid JSON"), ("list.onnx", "[]", "JSON mapping"),
                              ("deep.onnx", "[" * 100_000, "not valid JSON")):
        model.metadata_props.clear()
        model.metadata_props.add(key="cnnkit", value=text)
        onnx.save(model, str(tmp_path / name))
        with pytest.raises(CnnkitError, match=words) as caught:
            load_predictor(tmp_path / name, backend="onnxruntime")
        assert name in str(caught.value)


# Peak RSS measured from a baseline: Linux resets VmHWM (the peak) on writing 5 to /proc/self/clear_refs, so what
# imports (torch: ~700 MB at its peak) cost before the baseline does not hide what the case costs after it.
PEAK_RSS = """
    import json, resource
    def _status(key):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith(key + ":"))
    def baseline():
        global base_rss
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        base_rss = _status("VmRSS")
    def peak():
        return _status("VmHWM")
"""


def _measure(script: str, tmp_path: Path) -> dict:
    """Run `script` in a fresh interpreter and return its `results` dict, with "growth_mib": how far the peak RSS
    (ru_maxrss) rose above its value once the script's imports were done (it calls `baseline()` there)."""
    prologue = textwrap.dedent(PEAK_RSS)
    code = prologue + textwrap.dedent(script) + textwrap.dedent("""
        results["growth_mib"] = peak() - base_rss
        print(json.dumps(results))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join([f'*{chr(97 + level)}'] * 10)}]\n" for level in range(8))


def test_yaml_anchor_bombs_are_refused_in_bounded_memory(tmp_path):
    assert len(BOMB) < 1100  # 10**9 strings once expanded
    (tmp_path / "config.yaml").write_text(BOMB)
    (tmp_path / "data.yaml").write_text(BOMB.replace("i: &i", "names: &i"))
    (tmp_path / "net.yaml").write_text("layers: " + BOMB.replace("\n", "\n  ").split("a:", 1)[0] + "\n" + BOMB)
    (tmp_path / "under-data.yaml").write_text("data:\n" + textwrap.indent(BOMB, "  "))
    results = _measure(f"""
        import json
        from pathlib import Path
        from cnnkit.config import load_yaml, parse_key_values
        from cnnkit.data.detection.formats import read_class_names
        from cnnkit.errors import CnnkitError
        from cnnkit.models.custom import load_spec
        baseline()
        results = {{}}
        for name, call in [("config", lambda: load_yaml("config.yaml")), ("under-data", lambda: load_yaml("under-data.yaml")),
                           ("data.yaml", lambda: read_class_names(Path("data.yaml"))),
                           ("spec", lambda: load_spec("net.yaml"))]:
            try:
                call()
                results[name] = "accepted"
            except CnnkitError as error:
                results[name] = str(error)
        results["override"] = repr(parse_key_values(["x=" + {BOMB.replace(chr(10), ", ")!r}.join("{{}}")]))[:200]
    """, tmp_path)
    for name in ("config", "under-data", "data.yaml", "spec"):
        message = results[name]
        assert "aliases" in message and "not supported" in message and len(message) < 500, (name, message)
        assert name.split(".")[0].split("-")[-1] in message or name == "spec" and "net.yaml" in message
    print(f"\nYAML bombs (4 readers): peak RSS growth {results['growth_mib']:.1f} MiB")
    assert results["growth_mib"] < 50, results  # expanded, the bomb is gigabytes


def _png(path: Path, width: int, height: int, mode: str = "L") -> Path:
    """A real PNG of zeros, streamed row by row (the writer holds one row, not the image)."""
    colour_type, channels = {"L": (0, 1), "RGBA": (6, 4)}[mode]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row, parts = zlib.compressobj(9), b"\0" * (1 + width * channels), []
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


def test_huge_png_symlink_loop_and_png_folder_are_skipped_and_counted(tmp_path):
    bomb = _png(tmp_path / "bomb.png", 13_000, 13_000)  # 169 MP
    assert bomb.stat().st_size < 400_000
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for index in range(60):
            _png(tmp_path / "data" / name / f"{index}.png", 8, 8)
    (tmp_path / "data" / "a" / "folder.png").mkdir()
    (tmp_path / "data" / "a" / "loop.png").symlink_to("loop.png")
    os.link(bomb, tmp_path / "data" / "b" / "huge.png")
    results = _measure("""
        import json, warnings
        from cnnkit.data.folder import load_image_folder
        from cnnkit.data.images import decode_image
        from cnnkit.errors import DataError
        baseline()
        results = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = load_image_folder("data", channels=1, size=(8, 8), max_bad_fraction=0.1, num_workers=1)
        results["images"] = len(dataset)
        results["warnings"] = [str(w.message) for w in caught if "skipped" in str(w.message)]
        try:
            decode_image("bomb.png", 1, (28, 28))
        except DataError as error:
            results["predict"] = str(error)
    """, tmp_path)
    assert results["images"] == 120
    (warning,) = results["warnings"]
    assert "skipped 3 unreadable images of 123" in warning, warning
    assert "folder.png" in warning and "loop.png" in warning and "huge.png" in warning
    assert "169,000,000 pixels, more than the cap" in results["predict"]
    print(f"\n169 MP PNG ({bomb.stat().st_size:,} bytes) in training and predict: peak RSS growth "
          f"{results['growth_mib']:.1f} MiB")
    assert results["growth_mib"] < 100, results  # decoded, the bomb alone is 169 MB


def _coco(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


GOOD_COCO = {"images": [{"id": 1, "file_name": "x.png", "width": 8, "height": 8}],
             "categories": [{"id": 1, "name": "a"}],
             "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}]}
COCO_CASES = {
    "image-id-list": ({"images": [{**GOOD_COCO["images"][0], "id": [1]}]}, "ids are integers"),
    "category-id-dict": ({"categories": [{"id": {"a": 1}, "name": "a"}]}, "ids are integers"),
    "annotation-id-list": ({"annotations": [{**GOOD_COCO["annotations"][0], "image_id": [1]}]}, "ids are integers"),
    "annotations-5": ({"annotations": 5}, "'annotations': 5"),
    "annotations-null": ({"annotations": None}, "'annotations': None"),
    "annotations-missing": ({"annotations": "DROP"}, "no 'annotations' key"),
    "passwd": ({"images": [{**GOOD_COCO["images"][0], "file_name": "../../etc/passwd"}]}, "points outside"),
    "absolute": ({"images": [{**GOOD_COCO["images"][0], "file_name": "/etc/passwd"}]}, "points outside"),
    "inf-box": ({"annotations": [{**GOOD_COCO["annotations"][0], "bbox": [1, 1, 1e999, 2]}]}, "finite number"),
    "huge-size": ({"images": [{**GOOD_COCO["images"][0], "width": 10**12}]}, "whole number of pixels"),
}


def test_hostile_detection_annotations_are_data_errors(tmp_path):
    from cnnkit.data.detection.annotations import image_size
    from cnnkit.data.detection.coco import read_coco
    from cnnkit.data.detection.voc import read_voc_file

    _png(tmp_path / "x.png", 8, 8)
    for name, (change, words) in COCO_CASES.items():
        data = {**GOOD_COCO, **change}
        if data["annotations"] == "DROP":
            del data["annotations"]
        with pytest.raises(DataError, match=words) as caught:
            read_coco(_coco(tmp_path, name, data), image_dir=tmp_path)
        assert f"{name}.json" in str(caught.value), caught.value
    with pytest.raises(DataError, match="nested too deeply"):
        read_coco(_coco(tmp_path, "deep", "[" * 100_000 + "]" * 100_000), image_dir=tmp_path)
    assert len(read_coco(_coco(tmp_path, "good", GOOD_COCO), image_dir=tmp_path).images) == 1

    bomb = tmp_path / "bomb.png"  # a header declaring 20,000 x 20,000: past Pillow's own limit
    data = bytearray(_png(tmp_path / "tiny.png", 1, 1).read_bytes())
    data[16:24] = struct.pack(">II", 20_000, 20_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    bomb.write_bytes(bytes(data))
    with pytest.raises(DataError, match="bomb.png declares too many pixels"):
        image_size(bomb, "where.xml")
    voc = {"inf.xml": ("<size><width>inf</width><height>8</height></size>", "<size> holds 'inf'"),
           "nan-box.xml": ("<object><name>a</name><bndbox><xmin>nan</xmin><ymin>0</ymin><xmax>1</xmax><ymax>1</ymax>"
                           "</bndbox></object>", "expected a number"),
           "passwd.xml": ("", "points outside"),
           "bomb.xml": ("", "declares too many pixels")}
    for name, (body, words) in voc.items():
        file_name = {"passwd.xml": "../../etc/passwd", "bomb.xml": "bomb.png"}.get(name, "x.png")
        path = tmp_path / name
        path.write_text(f"<annotation><filename>{file_name}</filename>{body}</annotation>")
        with pytest.raises(DataError, match=words) as caught:
            read_voc_file(path, ["a"], tmp_path)
        assert name in str(caught.value)


def test_max_image_pixels_setting_caps_training_reads(image_folder, tmp_path):
    """The pixel cap is a training setting: 28x28 images above a cap of 100 pixels are all skipped (an error)."""
    from conftest import run_cli

    result = run_cli("train", "--data", image_folder / "train", "--epochs", 1, "--out", tmp_path,
                     "max_image_pixels=100", "report=false")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "max_image_pixels" in run_cli("train", "--help").stdout
