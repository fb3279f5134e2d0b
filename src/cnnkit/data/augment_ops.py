"""Batched geometric and colour augmentations, random erasing, and the AutoAugment-family policies.

Each class follows ``augment.BatchAugmentation``: ``sample`` draws every sample's parameters for an
epoch at once (from the loader's seeded generator), ``apply`` transforms a uint8 (B, C, H, W) batch.

- ``RandomWarp``: rotation, zoom, shear and RandomResizedCrop as ONE affine matrix per image, applied
  to the whole batch by a single ``F.affine_grid`` + ``F.grid_sample`` (bilinear; outside the image
  is black). One resampling, however many of the four are on.
- ``ColorJitter``: brightness, contrast, saturation as per-image factors (one multiply-add each over the
  batch); hue as a rotation of the chroma plane in YIQ space (a batched matrix product), which is
  close to, but not exactly, torchvision's HSV hue shift.
- ``RandomErasing``: one rectangle per chosen image, set to black with one masked fill.
- ``PolicyAugment``: AutoAugment / RandAugment / TrivialAugmentWide pick different operations for
  every image, so they run per image through torchvision.transforms.v2 (each batch's draws are seeded
  from the epoch's generator: a resumed run repeats them).

Costs, per batch of 256 Fashion-MNIST images on one thread, are measured in
benchmarks/augment_speed.py (results/augment_speed.md): the batched ops against torchvision.v2 per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cnnkit.errors import ConfigError

# RGB -> YIQ, and its inverse computed once (a per-batch linalg.inv on a GPU waits for the host).
_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_FROM_YIQ = torch.linalg.inv(_TO_YIQ)
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _on(device: torch.device, constant: torch.Tensor, _cache: dict = {}) -> torch.Tensor:  # noqa: B006 - the cache
    """A module constant on `device`, copied there once per device (no blocking copy per batch)."""
    if device.type == "cpu":
        return constant
    key = (id(constant), device)
    if key not in _cache:
        _cache[key] = constant.to(device)
    return _cache[key]


def _params_to(params: torch.Tensor, device: torch.device) -> torch.Tensor:
    """An epoch's parameters of one batch, on the images' device without blocking the host."""
    from cnnkit.data.augment import _to_device  # augment.py imports this module: imported at call time

    return _to_device(params, device)


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.round_().clamp_(0, 255).to(torch.uint8)


class RandomWarp:
    """Random rotation (degrees), zoom (1 +- scale), x-shear (degrees) and resized crop, as one warp.

    The parameters are the 2x3 ``affine_grid`` matrices (output -> input coordinates, normalised to
    [-1, 1]), so ``apply`` is two library calls whatever is enabled.
    """

    def __init__(self, rotate: float = 0.0, scale: float = 0.0, shear: float = 0.0, resized_crop: float = 0.0):
        if not 0 <= scale < 1:
            raise ConfigError(f"scale={scale} must be in [0, 1): the zoom factor is drawn from [1 - scale, 1 + scale]")
        self.rotate, self.scale, self.shear, self.resized_crop = rotate, scale, shear, resized_crop

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(num_samples, generator=generator, dtype=torch.float64)

        angle = torch.deg2rad(uniform(-self.rotate, self.rotate))
        zoom = uniform(1 - self.scale, 1 + self.scale)
        shear = torch.tan(torch.deg2rad(uniform(-self.shear, self.shear)))
        if self.resized_crop:
            # RandomResizedCrop: area fraction in [resized_crop, 1], log-uniform aspect ratio in [3/4, 4/3];
            # width and height as fractions of the image, clamped to fit, centre uniform where it fits.
            area = uniform(self.resized_crop, 1.0)
            ratio = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
            width = torch.sqrt(area * ratio).clamp(max=1.0)
            height = torch.sqrt(area / ratio).clamp(max=1.0)
            centre_x = (uniform(0, 1) * (1 - width) + width / 2) * 2 - 1
            centre_y = (uniform(0, 1) * (1 - height) + height / 2) * 2 - 1
        else:
            width = height = torch.ones(num_samples, dtype=torch.float64)
            centre_x = centre_y = torch.zeros(num_samples, dtype=torch.float64)
        # Columns: angle, zoom, shear, crop width, crop height, crop centre x, y (in [-1, 1] units).
        return torch.stack([angle, zoom, shear, width, height, centre_x, centre_y], dim=1)

    @staticmethod
    def matrices(params: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The (N, 2, 3) output -> input matrices of ``params`` for (height, width) images."""
        angle, zoom, shear, crop_w, crop_h, centre_x, centre_y = params.T
        shear = -shear  # torchvision's sign convention: the same parameters give TF.affine's image
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Forward map in pixel units about the centre: rotate(angle) @ shear_x @ zoom. Its inverse
        # takes output pixels back to input pixels; normalised coordinates rescale x by W/2, y by H/2.
        forward = torch.zeros(len(params), 2, 2, dtype=torch.float64)
        forward[:, 0, 0], forward[:, 0, 1] = cos * zoom, (cos * shear - sin) * zoom
        forward[:, 1, 0], forward[:, 1, 1] = sin * zoom, (sin * shear + cos) * zoom
        to_pixels = torch.diag(torch.tensor([width / 2, height / 2], dtype=torch.float64))
        inverse = torch.linalg.inv(to_pixels) @ torch.linalg.inv(forward) @ to_pixels
        # Then the crop: the warped output's [-1, 1] square lands on the crop window of the input.
        crop = torch.zeros(len(params), 2, 3, dtype=torch.float64)
        crop[:, 0, 0], crop[:, 1, 1] = crop_w, crop_h
        crop[:, 0, 2], crop[:, 1, 2] = centre_x, centre_y
        theta = crop[:, :, :2] @ inverse
        return torch.cat([theta, crop[:, :, 2:]], dim=2).to(torch.float32)

    def apply(self, images: torch.Tensor, labels: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, channels, height, width = images.shape
        theta = _params_to(self.matrices(params, height, width), images.device)
        grid = F.affine_grid(theta, [batch, channels, height, width], align_corners=False)
        warped = F.grid_sample(_as_float(images), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return _to_uint8(warped), labels


class ColorJitter:
    """Per-image brightness, contrast and saturation factors and hue shift, batched (see module docstring)."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0):
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        def factor(strength: float) -> torch.Tensor:
            return 1 - strength + 2 * strength * torch.rand(num_samples, generator=generator)

        hue = (2 * torch.rand(num_samples, generator=generator) - 1) * self.hue
        return torch.stack([factor(self.brightness), factor(self.contrast), factor(self.saturation), hue], dim=1)

    def apply(self, images: torch.Tensor, labels: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = _params_to(params, images.device)
        x = _as_float(images)
        view = (-1, 1, 1, 1)
        if self.brightness:
            x = x * params[:, 0].view(view)
        rgb = x.shape[1] == 3
        weights = _on(x.device, _LUMA)
        if self.contrast:
            gray = (x * weights).sum(1, keepdim=True) if rgb else x
            mean = gray.clamp(0, 255).mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * params[:, 1].view(view) + mean
        if rgb and self.saturation:
            gray = (x * weights).sum(1, keepdim=True)
            x = (x - gray) * params[:, 2].view(view) + gray
        if rgb and self.hue:
            x = self._rotate_hue(x, params[:, 3])
        return _to_uint8(x), labels

    @staticmethod
    def _rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
        """Rotate each image's chroma (I, Q of YIQ) by its angle: a hue shift that keeps luma."""
        to_yiq, from_yiq = _on(x.device, _TO_YIQ), _on(x.device, _FROM_YIQ)
        angle = turns * 2 * math.pi
        rotation = torch.zeros(len(x), 3, 3, device=x.device)
        rotation[:, 0, 0] = 1
        rotation[:, 1, 1], rotation[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
        rotation[:, 2, 1], rotation[:, 2, 2] = torch.sin(angle), torch.cos(angle)
        matrix = from_yiq @ rotation @ to_yiq  # (B, 3, 3)
        return torch.einsum("bij,bjhw->bihw", matrix, x)


class RandomErasing:
    """With probability ``probability``, black out one rectangle of 2-33% of the image (aspect 0.3-3.3)."""

    def __init__(self, probability: float, area: tuple[float, float] = (0.02, 0.33),
                 aspect: tuple[float, float] = (0.3, 3.3)):
        self.probability, self.area, self.aspect = probability, area, aspect

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        rand = lambda: torch.rand(num_samples, generator=generator)  # noqa: E731
        erase = (rand() < self.probability).float()
        area = self.area[0] + (self.area[1] - self.area[0]) * rand()
        log_low, log_high = math.log(self.aspect[0]), math.log(self.aspect[1])
        aspect = torch.exp(log_low + (log_high - log_low) * rand())
        height, width = torch.sqrt(area * aspect).clamp(max=1), torch.sqrt(area / aspect).clamp(max=1)
        top, left = rand() * (1 - height), rand() * (1 - width)
        # Columns: erase?, top, left, height, width (fractions of the image).
        return torch.stack([erase, top, left, height, width], dim=1)

    def apply(self, images: torch.Tensor, labels: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, height, width = images.shape
        params = _params_to(params, images.device)
        erase, top, left, box_h, box_w = params.T
        rows = torch.arange(height, device=images.device).view(1, -1, 1) + 0.5
        cols = torch.arange(width, device=images.device).view(1, 1, -1) + 0.5
        inside_rows = (rows >= (top * height).view(-1, 1, 1)) & (rows < ((top + box_h) * height).view(-1, 1, 1))
        inside_cols = (cols >= (left * width).view(-1, 1, 1)) & (cols < ((left + box_w) * width).view(-1, 1, 1))
        mask = inside_rows & inside_cols & erase.bool().view(-1, 1, 1)  # (B, H, W)
        return images.masked_fill(mask.unsqueeze(1), 0), labels


class PolicyAugment:
    """AutoAugment (ImageNet policy), RandAugment or TrivialAugmentWide, per image via torchvision.v2."""

    def __init__(self, policy: str):
        from torchvision.transforms import v2

        policies = {"autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
                    "randaugment": lambda: v2.RandAugment(num_ops=2, magnitude=9),
                    "trivialaugment": lambda: v2.TrivialAugmentWide()}
        if policy not in policies:
            raise ConfigError(f"auto_augment={policy!r} is not one of {', '.join(policies)} or none")
        self.policy, self.transform = policy, policies[policy]()

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, 2**62, (num_samples,), generator=generator)  # one seed per image

    def apply(self, images: torch.Tensor, labels: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = torch.empty_like(images)
        # The policies draw from torch's global generator: seed it from the batch's first parameter (a batch
        # is the same images in the same order whenever its epoch is replayed), and leave it as it was.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(params[0]) if len(params) else 0)
            for index in range(len(images)):
                output[index] = self.transform(images[index])
        return output, labels
