"""What a user sees when the input is wrong: clear messages naming the culprit, exit status 2, no traceback.

Cases that depend on the real process (exit status, a warning reaching stderr, a training run) go
through a subprocess. Cases that fail before any work are run in-process through `cnnkit.cli.main`,
the same code `python -m cnnkit` calls, to keep the suite fast: it returns the exit status, and an
exception escaping it would fail the test with the traceback a user would see.
"""

from __future__ import annotations

import shutil

import pytest

import cnnkit.data.fashion_mnist as fashion_mnist
from cnnkit.cli import main
from conftest import FAST_SETTINGS, run_cli


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run `cnnkit ARGS...` in this process: (exit status, stdout, stderr)."""
    status = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def error_lines(stderr: str, command: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"cnnkit {command}: error: ")]
    assert len(lines) == 1, stderr
    return lines


# ---------------------------------------------------------------------------- datasets

def test_a_corrupt_image_is_skipped_and_named(image_folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    corrupt = data / "train" / "Bag" / "x.png"
    corrupt.write_bytes(b"this is not a PNG file \x00\x01\x02" * 10)
    result = run_cli("train", "--data", data, "--epochs", 1, "--out", tmp_path / "runs", "--name", "run",
                     *FAST_SETTINGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(corrupt) in result.stderr, result.stderr  # the warning names the file
    assert "skipped 1 unreadable image of 401" in result.stderr
    assert "320 train / 80 val images" in result.stdout  # the 400 good images, all used
    assert (tmp_path / "runs" / "run" / "best.safetensors").is_file()


def test_too_many_corrupt_images_stop_with_the_list(image_folder, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    for index in range(10):  # 10 of 410 > the 4 allowed (max_bad_fraction=0.01)
        (data / "train" / "Trouser" / f"bad{index}.png").write_bytes(b"garbage")
    status, _, stderr = cli(capsys, "train", "--data", data, "--epochs", 1, "--out", tmp_path / "runs",
                            *FAST_SETTINGS)
    assert status == 2
    (line,) = error_lines(stderr, "train")
    assert "10 unreadable images of 410" in line
    assert str(data / "train" / "Trouser" / "bad0.png") in line


def test_a_missing_dataset_folder(tmp_path):
    missing = tmp_path / "no" / "such" / "folder"
    result = run_cli("train", "--data", missing, "--epochs", 1, "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first == f"cnnkit train: error: dataset '{missing}': no such file or folder.", result.stderr
    assert not (tmp_path / "runs").exists()  # nothing written for a run that never started


def test_a_folder_without_class_folders(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    status, _, stderr = cli(capsys, "train", "--data", empty, "--epochs", 1, "--out", tmp_path / "runs")
    assert status == 2
    assert "Traceback" not in stderr
    assert f"image folder {empty}: it has no class folders" in stderr.splitlines()[0]


def test_fashion_mnist_missing_everywhere(tmp_path, capsys, monkeypatch):
    """Not in --data, $CNNKIT_DATA, the system folder or the cache, and the download fails."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("CNNKIT_DATA", str(empty))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the download cache lives under ~/.cache
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setattr(fashion_mnist, "DOWNLOAD_URL", "http://127.0.0.1:9/")  # refused at once, no network
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    status, _, stderr = cli(capsys, "train", "--data", "fashion-mnist", "--epochs", 1, "--out", tmp_path / "runs")
    assert status == 2
    assert "Traceback" not in stderr
    assert stderr.startswith("cnnkit train: error: Fashion-MNIST not found.")
    assert f"  - {empty}\n" in stderr and f"  - {tmp_path / 'system'}\n" in stderr  # where it looked
    assert "Download from http://127.0.0.1:9/ failed" in stderr
    assert "CNNKIT_DATA" in stderr and "--data DIR" in stderr  # what to do


# ---------------------------------------------------------------------------- settings

def test_an_unknown_model_suggests_close_names(image_folder, tmp_path, capsys):
    status, _, stderr = cli(capsys, "train", "--data", image_folder, "--model", "fastnett", "--epochs", 1,
                            "--out", tmp_path / "runs", *FAST_SETTINGS)
    assert status == 2
    (line,) = error_lines(stderr, "train")
    assert "unknown model 'fastnett'" in line and "Did you mean fastnet" in line
    assert "cnnkit models" in line


@pytest.mark.parametrize(("override", "expected"), [
    ("epoch=3", "unknown setting 'epoch'. Did you mean 'epochs'?"),
    ("lr=fast", "lr='fast' should be a number"),
    ("batch_size=0", "batch_size=0 must be greater than 0"),
    ("optimizer=adam", "optimizer='adam' is not one of sgd, adamw"),
    ("lr", "cannot read 'lr': overrides are written key=value"),
])
def test_a_bad_setting_is_named(capsys, tmp_path, override, expected):
    status, _, stderr = cli(capsys, "train", "--out", tmp_path / "runs", override)
    assert status == 2
    (line,) = error_lines(stderr, "train")
    assert expected in line
    assert not (tmp_path / "runs").exists()


def test_a_bad_setting_prints_exactly_one_line(capsys, tmp_path):
    status, stdout, stderr = cli(capsys, "train", "--out", tmp_path / "runs", "learning_rate=0.1")
    assert (status, stdout) == (2, "")
    assert stderr == ("cnnkit train: error: command line: unknown setting 'learning_rate'. "
                      "See `cnnkit train --help` for the list.\n")


# ---------------------------------------------------------------------------- runs and checkpoints

def test_evaluate_a_folder_without_checkpoints(tmp_path, capsys):
    status, _, stderr = cli(capsys, "evaluate", tmp_path)
    assert status == 2
    (line,) = error_lines(stderr, "evaluate")
    assert f"checkpoint {tmp_path / 'best.safetensors'} does not exist" in line


def test_predict_a_file_that_is_not_an_image(trained_run, tmp_path):
    run_dir, _ = trained_run
    notes = tmp_path / "notes.png"
    notes.write_text("shopping list: trousers, bag\n")
    result = run_cli("predict", run_dir, notes)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = error_lines(result.stderr, "predict")
    assert f"cannot read image {notes}" in line


def test_predict_a_missing_image(trained_run, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    status, stdout, stderr = cli(capsys, "predict", trained_run[0], missing)
    assert status == 2
    (line,) = error_lines(stderr, "predict")
    assert f"image file not found: {missing}" in line


@pytest.mark.parametrize("kept", ["header_cut", "tensors_cut"])
def test_a_truncated_checkpoint(trained_run, tmp_path, capsys, kept):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    best = run_dir / "best.safetensors"
    data = best.read_bytes()
    best.write_bytes(data[:100] if kept == "header_cut" else data[: len(data) // 2])
    for command in (["evaluate", run_dir], ["predict", run_dir, "x.png"]):
        status, stdout, stderr = cli(capsys, *command)
        assert status == 2
        (line,) = error_lines(stderr, command[0])
        assert str(best) in line
        assert "truncated" in line or "cannot read" in line


@pytest.mark.parametrize("top_k", ["0", "-1"])
def test_predict_rejects_a_top_k_below_one(trained_run, image_folder, capsys, top_k):
    image = image_folder / "test" / "Bag" / "000.png"
    status, stdout, stderr = cli(capsys, "predict", trained_run[0], image, "--top-k", top_k)
    assert status == 2, stdout
    (line,) = error_lines(stderr, "predict")
    assert "--top-k" in line
