"""Normalization statistics come from the training split, travel in the checkpoint and are used at predict time."""

import json

import pytest
import torch
from PIL import Image

import cnnkit
from cnnkit.tasks.classification import prepare_data
from cnnkit.config import TrainConfig
from cnnkit.data import compute_mean_std
from cnnkit.data.preprocess import Preprocessing


def test_statistics_come_from_the_training_split_only(image_folder):
    data = prepare_data(TrainConfig(data=str(image_folder), val_fraction=0.2, seed=3))
    mean, std = compute_mean_std(data.train.images)
    assert data.preprocessing.mean == pytest.approx(tuple(mean)) and data.preprocessing.std == pytest.approx(tuple(std))
    everything = torch.cat([data.train.images, data.val.images])
    assert compute_mean_std(everything)[0][0] != pytest.approx(mean[0], abs=1e-7)  # the val images would change it


def test_checkpoint_preprocessing_is_what_predict_applies(trained_run):
    run_dir = trained_run[0]
    record = json.loads((run_dir / "best.json").read_text())
    stored = Preprocessing.from_dict(record["preprocessing"])
    classifier = cnnkit.load(run_dir)
    assert classifier.preprocessing == stored and stored.image_size == (28, 28) and stored.channels == 1

    image = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8)
    expected = (image.float() / 255 - stored.mean[0]) / stored.std[0]
    with torch.no_grad():
        manual = classifier.model(expected).softmax(dim=1)
    assert torch.allclose(classifier.predict_proba(image), manual, atol=1e-5)

    # An RGB picture at another size goes through the same stored conversion (grayscale, 28x28).
    picture = Image.fromarray(image[0, 0].numpy()).convert("RGB").resize((56, 56), Image.Resampling.NEAREST)
    assert classifier.preprocessing.load([picture]).shape == (1, 1, 28, 28)

    # Different statistics give different outputs: the stored ones are really used.
    classifier.preprocessing = Preprocessing(1, (28, 28), (0.0,), (1.0,))
    assert not torch.allclose(classifier.predict_proba(image), manual, atol=1e-3)
