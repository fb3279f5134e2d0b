"""Shared fixtures of the end-to-end tests: a tiny Fashion-MNIST image folder and one trained run.

The dataset is 4 easy classes of Fashion-MNIST written as PNG files (train/<class>/*.png and
test/<class>/*.png), so the image-folder loader is what every end-to-end test goes through.
The IDX files are read here with numpy, not with cnnkit, so the fixture does not depend on the
code under test.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
from PIL import Image

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Folder name -> Fashion-MNIST label. Four classes a small CNN separates in a few epochs.
CLASSES = {"Bag": 8, "Sneaker": 7, "T-shirt": 0, "Trouser": 1}
TRAIN_PER_CLASS = 100
TEST_PER_CLASS = 20
# val_fraction=0.2 of 400 training images: 80 validation, 320 training (5 batches of 64).
VAL_IMAGES = 80
TEST_IMAGES = TEST_PER_CLASS * len(CLASSES)
# Settings that train the fixture to >= 0.9 validation accuracy in 6 epochs (measured: 0.94-0.975 for
# seeds 0-2). The default LR scales with the batch: 0.05 at batch 64 (0.2, tuned for 256, diverges here).
FAST_SETTINGS = ["num_threads=1", "batch_size=64", "val_fraction=0.2"]
TRAIN_EPOCHS = 6
CLI_TIMEOUT_S = 120


def _read_idx(path: Path) -> numpy.ndarray:
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return numpy.frombuffer(data, dtype=numpy.uint8, offset=4 + 4 * dims).reshape(shape)


@pytest.fixture(scope="session")
def fashion_images() -> dict[str, dict[str, numpy.ndarray]]:
    """{"train"|"test": {class folder name: (N, 28, 28) uint8}} from the installed Fashion-MNIST."""
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}")
    result = {}
    for split, prefix, count in (("train", "train", TRAIN_PER_CLASS), ("test", "t10k", TEST_PER_CLASS)):
        images = _read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        result[split] = {name: images[labels == label][:count] for name, label in CLASSES.items()}
    return result


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory, fashion_images) -> Path:
    """A dataset root with train/<class>/NNN.png and test/<class>/NNN.png (400 + 80 grayscale PNGs)."""
    root = tmp_path_factory.mktemp("fashion4")
    for split, by_class in fashion_images.items():
        for name, images in by_class.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for index, image in enumerate(images):
                Image.fromarray(image, mode="L").save(folder / f"{index:03d}.png")
    return root


def cli_env() -> dict[str, str]:
    """The environment for cnnkit subprocesses: one OpenMP thread (2 shared cores), no tqdm noise."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_cli(*args, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run `python -m cnnkit ARGS...` in a subprocess; return the completed process (text output)."""
    return subprocess.run([sys.executable, "-m", "cnnkit", *map(str, args)], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, image_folder) -> tuple[Path, subprocess.CompletedProcess]:
    """One run trained through the real CLI: (run directory, the finished `cnnkit train` process).

    Read-only for the tests that use it: copy it before changing anything inside.
    """
    out = tmp_path_factory.mktemp("runs")
    # progress stays on: it also controls the header and the closing "done: ... run directory" line.
    result = run_cli("train", "--data", image_folder, "--model", "fastnet", "--epochs", TRAIN_EPOCHS,
                     "--out", out, "--name", "run", *FAST_SETTINGS, cwd=out)
    assert result.returncode == 0, f"cnnkit train failed:\n{result.stdout}\n{result.stderr}"
    return out / "run", result


@pytest.fixture(scope="session")
def chrome():
    """A headless Chromium driven through selenium (Debian's chromium + chromium-driver).

    `make test` installs both when run as root; elsewhere the browser tests are skipped with the
    command that installs them."""
    import shutil

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("needs Debian's chromium and chromium-driver: sudo apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1024"):
        options.add_argument(flag)
    options.binary_location = binary
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()
