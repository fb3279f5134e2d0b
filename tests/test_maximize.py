"""Activation maximization: the optimized input must excite its target far more than noise or real images do."""

from __future__ import annotations

import pytest
import torch

import cnnkit
from cnnkit.errors import ConfigError, ModelError
from cnnkit.inspect.maximize import Regularization, maximize, parse_indices, total_variation
from conftest import run_cli

LAYER = "stages.1.conv2"  # fastnet's middle stage: 64 channels at 14x14 for 28x28 inputs
CHANNELS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def classifier(trained_run):
    return cnnkit.load(trained_run[0], device="cpu")


def _channel_means(model, layer: str, inputs: torch.Tensor) -> torch.Tensor:
    """(N, C): each input's mean activation of every channel of `layer`, measured independently of maximize()."""
    captured = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        model(inputs)
    handle.remove()
    return captured[0].mean(dim=(2, 3))


def test_optimized_inputs_excite_their_channels_more_than_noise_and_real_images(classifier, image_folder):
    model, preprocessing = classifier.model, classifier.preprocessing
    result = maximize(model, preprocessing, layer=LAYER, channels=CHANNELS)
    assert result.images.dtype == torch.uint8 and result.images.shape == (4, 1, 28, 28)
    generator = torch.Generator().manual_seed(1)
    noise = preprocessing.normalize(torch.randint(0, 256, (32, 1, 28, 28), generator=generator, dtype=torch.uint8))
    real = preprocessing.normalize(preprocessing.load(sorted((image_folder / "test").glob("*/*.png"))))
    optimized = _channel_means(model, LAYER, result.inputs)
    noise_means, real_means = _channel_means(model, LAYER, noise), _channel_means(model, LAYER, real)
    for row, channel in enumerate(CHANNELS):
        score = float(optimized[row, channel])
        assert score == pytest.approx(result.scores[row], abs=1e-4)
        assert score > result.start_scores[row] + 0.1
        # "much more than noise": measured 13-66 standard deviations of 32 noise images above their mean for a
        # bf16-trained fixture; 7.3-66 when it trains in fp32 (CPUs without native bf16), so the bar is 5
        noise = noise_means[:, channel]
        assert (score - float(noise.mean())) / float(noise.std()) > 5, (channel, score)
        # and more than any of the 80 real test images (measured: by 0.2-2.6)
        assert score > float(real_means[:, channel].max()), (channel, score)


def test_class_maximization_makes_the_model_confident(classifier):
    targets = [0, 1, 2, 3]
    result = maximize(classifier.model, classifier.preprocessing, classes=targets)
    with torch.no_grad():
        probabilities = classifier.model(result.inputs).softmax(dim=1)
    assert probabilities.argmax(dim=1).tolist() == targets
    assert float(probabilities.max(dim=1).values.min()) > 0.9
    assert all(after > before + 1 for after, before in zip(result.scores, result.start_scores))


def test_regularizers_keep_images_smooth_and_in_range(classifier):
    pixel_range = maximize(classifier.model, classifier.preprocessing, layer=LAYER, channels=[0])
    free = maximize(classifier.model, classifier.preprocessing, layer=LAYER, channels=[0],
                    regularization=Regularization(jitter=0, l2=0.0, total_variation=0.0, blur_every=0))
    # the regularized picture is smoother; the model left as it was: eval mode, weights unchanged
    assert float(total_variation(pixel_range.inputs)) < float(total_variation(free.inputs))
    assert not classifier.model.training
    assert all(parameter.grad is None for parameter in classifier.model.parameters())


def test_bad_requests_say_what_to_do(classifier):
    model, preprocessing = classifier.model, classifier.preprocessing
    with pytest.raises(ConfigError, match="channel 64 is out of range: layer stages.1.conv2 has channels 0..63"):
        maximize(model, preprocessing, layer=LAYER, channels=[64])
    with pytest.raises(ModelError, match="conv layers: stem.0"):
        maximize(model, preprocessing, layer="nope", channels=[0])
    with pytest.raises(ConfigError, match="class 9 is out of range"):
        maximize(model, preprocessing, classes=[9])
    with pytest.raises(ConfigError, match="layer"):
        maximize(model, preprocessing)
    assert parse_indices("0-3,9") == [0, 1, 2, 3, 9]
    with pytest.raises(ConfigError, match="0,1,2 or 0-7"):
        parse_indices("a,b")


def test_cli_maximize_writes_png(trained_run, tmp_path, capsys):
    from cnnkit.cli import main

    run_dir, _ = trained_run
    result = run_cli("inspect", "maximize", run_dir, "--layer", "stages.0.conv2", "--channels", "0-2",
                     "--steps", "20", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "maximize-stages.0.conv2.png"
    assert result.stdout.strip() == str(path) and path.stat().st_size > 0
    for arguments, message in [(["--class", "Hat"], "unknown class 'Hat'; classes: Bag, Sneaker"),
                               (["--channels", "0"], "--channels needs --layer"),
                               ([], "nothing to maximize"),
                               (["--layer", "stem.0", "--steps", "0"], "--steps must be 1 or more")]:
        assert main(["inspect", "maximize", str(run_dir), *arguments, "--out", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err


def test_a_long_title_on_a_narrow_grid_is_wrapped_not_clipped(tmp_path, monkeypatch):
    import torch

    import cnnkit.tasks.plots as plots

    titles = []
    original = plots.save_figure

    def keep_title(figure, path):
        titles.append(figure._suptitle.get_text())
        return original(figure, path)

    monkeypatch.setattr(plots, "save_figure", keep_title)
    images = [torch.zeros(1, 28, 28, dtype=torch.uint8)] * 2
    plots.plot_image_grid(images, ["a", "b"], "inputs that excite classes (logit; p: the model's probability for them)",
                          tmp_path / "grid.png")
    assert "\n" in titles[0] and max(len(line) for line in titles[0].splitlines()) <= 4 * 14
