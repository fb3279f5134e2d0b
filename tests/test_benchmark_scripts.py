"""The benchmark scripts as scripts.

They run as `python benchmarks/NAME.py`, which puts benchmarks/ first on sys.path: a script named like a
standard-library module (ssl.py, statistics.py ...) would replace that module for every benchmark and every
library it imports (seen: benchmarks/ssl.py broke `import ssl` inside urllib). And the peers comparison must
run (and say so) where the peer is not installed."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_no_benchmark_script_shadows_a_standard_module():
    shadowing = sorted(path.name for path in BENCHMARKS.glob("*.py") if path.stem in sys.stdlib_module_names)
    assert not shadowing, f"rename these benchmark scripts (they hide standard modules): {shadowing}"


def test_peers_quick_runs_without_the_peer_and_says_so(tmp_path):
    """Issue 25: benchmarks/peers.py --quick works where ultralytics is not installed, and the result says so."""
    import json
    import subprocess

    script = BENCHMARKS / "peers.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--rows", "classify", "--minutes", "0.05",
                           "--peer-python", str(tmp_path / "no-such-python"), "--out", str(tmp_path / "runs"),
                           "--results-dir", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads((tmp_path / "peers-quick.json").read_text())["results"][0]
    assert row["peer"]["missing"].startswith("no peer environment")
    assert 0.0 <= row["cnnkit"]["accuracy"] <= 1.0 and row["row"] == "classify/fastnet/0.05min"
    assert "no peer environment" in (tmp_path / "peers-quick.md").read_text()


def test_resolution_ceiling_keeps_grid_aligned_masks_and_loses_objects_below_the_stride(tmp_path):
    """benchmarks/scenes_data.py --resolution-ceiling: masks made of 4x4 blocks survive stride 4 but for their
    corners (bilinear upsampling rounds them); at stride 8 a 4x4 object in an 8x8 cell is outvoted and lost."""
    import numpy
    from PIL import Image

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from scenes_data import resolution_ceiling
    finally:
        sys.path.remove(str(BENCHMARKS))
    (tmp_path / "test" / "masks").mkdir(parents=True)
    (tmp_path / "classes.txt").write_text("Ankle boot\nBag\n")  # names with spaces stay one class
    mask = numpy.zeros((16, 16), dtype=numpy.uint8)
    mask[0:4, 0:4], mask[8:16, 8:16] = 1, 2
    Image.fromarray(mask).save(tmp_path / "test" / "masks" / "000000.png")
    ceiling = resolution_ceiling(tmp_path, strides=(4, 8))
    assert 0.95 < ceiling[4]["miou"] < 1.0 and set(ceiling[4]["iou"]) == {"background", "Ankle boot", "Bag"}
    assert ceiling[8]["iou"]["Ankle boot"] == 0.0 and ceiling[8]["miou"] < 1.0


def test_segmentation_rows_of_a_tag_or_seed_stand_beside_the_earlier_ones():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from segmentation import row_name
    finally:
        sys.path.remove(str(BENCHMARKS))
    names = {row_name("deeplabv3_fastnet+garments", tag, seed) for tag in (None, "enc12") for seed in (0, 1, 2)}
    assert len(names) == 6 and "deeplabv3_fastnet+garments" in names
    assert row_name("deeplabv3_fastnet+garments", "enc12", 2) == "deeplabv3_fastnet+garments-enc12-seed2"
