"""Training configuration: one typed dataclass with defaults that already work.

A run is described by `TrainConfig`. A flat YAML file may override fields, and so may `key=value`
arguments on the command line (applied last). There is no inheritance between config files: what a
run used is saved, resolved, as `config.yaml` in its run directory.

The defaults are the `make demo` recipe: the `fastnet` model on Fashion-MNIST, measured in
benchmarks/demo_accuracy.py (see the README for the figures).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cnnkit.errors import ConfigError
from cnnkit.files import atomic_write_text
from cnnkit.task_table import TASKS


@dataclass
class TrainConfig:
    """Everything that defines a training run. Field names are the YAML keys and the `key=value` names.

    Each field's `metadata["help"]` is the line `cnnkit train --help` prints beside it.
    """

    # --- task ---
    task: str = field(default="classify", metadata={
        "help": '"classify", "detect" (boxes), "segment" (a class per pixel) or "instance" (masks)'})

    # --- data ---
    data: str = field(default="fashion-mnist", metadata={
        "help": '"fashion-mnist", a directory of class folders, or a CSV (path,label)'})
    val_fraction: float = field(default=0.1, metadata={
        "help": "held out from the training data, seeded; the test split is never used to tune"})
    image_size: int | None = field(default=None, metadata={
        "help": "resize users' images to this square size; None keeps the dataset's size"})
    channels: int | None = field(default=None, metadata={
        "help": "1 (grayscale) or 3 (RGB); None infers it from the data"})
    batch_size: int = field(default=256, metadata={
        "help": "images per optimizer step (split across processes under torchrun)"})

    # --- augmentation (training only; `cnnkit augment preview` shows what the model sees) ---
    hflip: bool = field(default=True, metadata={
        "help": "random horizontal flips (batched tensor op)"})
    vflip: bool = field(default=False, metadata={
        "help": 'random vertical flips (only for data without an "up")'})
    translate: int = field(default=2, metadata={
        "help": "random translation by up to this many pixels (pad and crop, batched)"})
    rotate: float = field(default=0.0, metadata={
        "help": "random rotation within +- this many degrees"})
    scale: float = field(default=0.0, metadata={
        "help": "random zoom by a factor in [1 - scale, 1 + scale]"})
    shear: float = field(default=0.0, metadata={
        "help": "random x-shear within +- this many degrees"})
    resized_crop: float = field(default=0.0, metadata={
        "help": "RandomResizedCrop: smallest area fraction kept (e.g. 0.35); 0 disables"})
    brightness: float = field(default=0.0, metadata={
        "help": "colour jitter: brightness factor in [1 - x, 1 + x]"})
    contrast: float = field(default=0.0, metadata={
        "help": "colour jitter: contrast factor in [1 - x, 1 + x]"})
    saturation: float = field(default=0.0, metadata={
        "help": "colour jitter: saturation factor in [1 - x, 1 + x] (RGB)"})
    hue: float = field(default=0.0, metadata={
        "help": "colour jitter: hue shift in [-x, x] turns, x <= 0.5 (RGB)"})
    auto_augment: str = field(default="none", metadata={
        "help": '"autoaugment", "randaugment", "trivialaugment" or "none" (per image)'})
    random_erasing: float = field(default=0.0, metadata={
        "help": "probability of blacking out a random rectangle (cutout)"})
    mixup: float = field(default=0.0, metadata={
        "help": "MixUp's Beta(alpha, alpha); 0 disables (e.g. 0.2)"})
    cutmix: float = field(default=0.0, metadata={
        "help": "CutMix's Beta(alpha, alpha); 0 disables (e.g. 1.0); with mixup, half the batches each"})
    mix_probability: float = field(default=1.0, metadata={
        "help": "chance a batch is mixed when mixup/cutmix is on"})
    data_mode: str = field(default="auto", metadata={
        "help": '"memory" (one uint8 tensor), "stream" (decode files per batch), "auto": memory if it fits'})
    num_workers: int = field(default=-1, metadata={
        "help": "decoding processes for streamed data; -1 picks min(8, cores - 1)"})

    # --- model ---
    model: str = field(default="fastnet", metadata={
        "help": "a registered name; `cnnkit models` lists them"})
    model_args: dict = field(default_factory=dict, metadata={
        "help": "extra keyword arguments for the model builder"})
    drop_rate: float | None = field(default=None, metadata={
        "help": "dropout rate, for models that have dropout; None keeps the model's default"})
    pretrained: str | None = field(default=None, metadata={
        "help": '"imagenet", a torchvision/timm weight name, a .safetensors/.pth file or a run dir'})
    finetune: str = field(default="full", metadata={
        "help": 'with pretrained: "full", "linear" (feature extraction) or "gradual" (unfreezing)'})
    backbone_lr_ratio: float = field(default=0.1, metadata={
        "help": "with pretrained: the backbone's LR as a fraction of the head's"})
    unfreeze_every: int = field(default=1, metadata={
        "help": "finetune=gradual: release one more backbone block every this many epochs"})
    head_init: str = field(default="random", metadata={
        "help": 'with pretrained: "probe" fits the new head first (L-BFGS linear probe on frozen features)'})
    head_levels: int = field(default=0, metadata={
        "help": "0: the model's own head; N: a new linear head over the last N resolution levels' pooled features "
                "(CNNs; helps feature extraction)"})
    head_grid: int = field(default=1, metadata={
        "help": "with head_levels: each level average-pooled to head_grid x head_grid (1: global average)"})
    freeze_bn: bool = field(default=False, metadata={
        "help": "with pretrained: BatchNorm keeps the pretrained statistics in the layers that train (few images)"})

    # --- optimization ---
    epochs: int = field(default=10, metadata={
        "help": "passes over the training split (0: none, for feature extraction whose probe head is the training)"})
    optimizer: str = field(default="sgd", metadata={
        "help": '"sgd" (Nesterov momentum) or "adamw"'})
    lr: float | None = field(default=None, metadata={
        "help": "peak learning rate; None: 0.2 (SGD) or 2e-3 (AdamW) per 256 images of batch, scaled linearly"})
    momentum: float = field(default=0.9, metadata={
        "help": "SGD momentum, or AdamW's beta1"})
    weight_decay: float = field(default=5e-4, metadata={
        "help": "not applied to norm layers and biases"})
    schedule: str = field(default="onecycle", metadata={
        "help": '"constant", "step", "cosine", "cosine_restarts" or "onecycle"'})
    warmup_epochs: float = field(default=0.0, metadata={
        "help": "linear warm-up (fractions allowed); onecycle has its own ramp (`onecycle_pct`)"})
    onecycle_pct: float = field(default=0.25, metadata={
        "help": "fraction of training spent ramping up in the one-cycle schedule"})
    step_epochs: int = field(default=30, metadata={
        "help": '"step": multiply the LR by `step_gamma` every this many epochs'})
    step_gamma: float = field(default=0.1, metadata={
        "help": '"step": the LR factor applied every step_epochs'})
    restart_epochs: int = field(default=10, metadata={
        "help": '"cosine_restarts": length of the first cycle (SGDR\'s T_0)'})
    restart_mult: int = field(default=1, metadata={
        "help": '"cosine_restarts": each cycle is this many times longer than the last (T_mult)'})
    min_lr_ratio: float = field(default=0.0, metadata={
        "help": "the LR decays to lr * min_lr_ratio"})
    label_smoothing: float = field(default=0.1, metadata={
        "help": "cross-entropy targets (1 - s) for the class, s spread over all classes"})
    grad_clip_norm: float | None = field(default=None, metadata={
        "help": "clip the global gradient norm to this value"})
    grad_clip_value: float | None = field(default=None, metadata={
        "help": "clip every gradient element to [-value, value]"})
    drop_path_rate: float | None = field(default=None, metadata={
        "help": "stochastic depth, for models with residual blocks; None: model default"})
    grad_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in backward: less memory, ~30% more compute"})
    accumulate_steps: int = field(default=1, metadata={
        "help": "gradient accumulation: optimizer step every this many batches"})
    precision: str = field(default="auto", metadata={
        "help": '"auto" (bf16 where the hardware has it), "fp32", "bf16" or "fp16" (CUDA only)'})
    channels_last: bool = field(default=True, metadata={
        "help": "NHWC memory format: faster convolutions on CPU (oneDNN) and tensor cores"})
    ema_decay: float = field(default=0.0, metadata={
        "help": "exponential moving average of the weights; 0 disables it"})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile the model (measured no gain for CPU training: opt-in)"})

    # --- evaluation ---
    tta: bool = field(default=False, metadata={
        "help": "test-time augmentation: average the logits of each image and its mirror image"})

    # --- class imbalance ---
    class_weights: str = field(default="none", metadata={
        "help": 'loss weight per class from training counts: "none", "inverse" (1/n) or "effective"'})
    class_weights_beta: float = field(default=0.999, metadata={
        "help": "class_weights=effective: weight (1 - beta) / (1 - beta^n) (Cui et al. 2019)"})
    sampler: str = field(default="shuffle", metadata={
        "help": '"shuffle" (each image once per epoch) or "oversample" (classes equally often, with replacement)'})
    loss: str = field(default="ce", metadata={
        "help": '"ce" (cross-entropy) or "focal" (Lin et al. 2017: (1 - p)^gamma down-weights easy images)'})
    focal_gamma: float = field(default=2.0, metadata={
        "help": "loss=focal: the focusing exponent gamma; 0 is cross-entropy"})

    # --- segmentation ---
    seg_loss: str | None = field(default=None, metadata={
        "help": 'task=segment: "ce", "dice", "focal" or a weighted sum, e.g. "ce+dice", "ce+0.5*dice"; None: `loss`'})
    ignore_index: int = field(default=255, metadata={
        "help": "task=segment: mask value of unlabelled pixels, left out of the loss and the metrics"})

    # --- detection ---
    detect_augment: str = field(default="default", metadata={
        "help": 'task=detect: box-aware augmentation preset: "none", "light", "default", "strong"'})

    # --- run ---
    monitor: str | None = field(default=None, metadata={
        "help": "metric that picks the best checkpoint and stops early; None: the task's own (val_accuracy for "
                "classify, val_map50 for detect, val_miou for segment ...)"})
    early_stopping_patience: int = field(default=0, metadata={
        "help": "stop after this many epochs without improvement; 0 disables it"})
    val_every: int = field(default=1, metadata={
        "help": "validate after every N-th epoch and after the last (the best checkpoint is chosen among those)"})
    seed: int = field(default=0, metadata={
        "help": "fixes the split, initial weights, batch order and augmentation"})
    out: str = field(default="runs", metadata={
        "help": "parent directory of run directories"})
    name: str | None = field(default=None, metadata={
        "help": "run directory name; default: <model>-<data>-<timestamp>"})
    device: str = field(default="auto", metadata={
        "help": '"auto", "cpu", "cuda", "cuda:1" ...'})
    num_threads: int = field(default=0, metadata={
        "help": "CPU threads for PyTorch; 0 keeps PyTorch's default (one per core)"})
    sync_bn: bool = field(default=False, metadata={
        "help": "convert BatchNorm to SyncBatchNorm under torchrun (DDP)"})
    progress: bool = field(default=True, metadata={
        "help": "show a progress bar"})
    report: bool = field(default=True, metadata={
        "help": "write report.html (curves, confusion matrix, mistakes, Grad-CAM ...) when training ends"})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check value ranges and choices; raise ConfigError naming the field."""
        choices = {
            "optimizer": ("sgd", "adamw"),
            "schedule": ("constant", "step", "cosine", "cosine_restarts", "onecycle"),
            "precision": ("auto", "fp32", "bf16", "fp16"),
            "data_mode": ("auto", "memory", "stream"),
            "finetune": ("full", "linear", "gradual"),
            "head_init": ("random", "probe"),
            "task": tuple(TASKS),
            "auto_augment": ("none", "autoaugment", "randaugment", "trivialaugment"),
            "detect_augment": ("none", "light", "default", "strong"),  # cnnkit.data.detection.transforms presets
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr={self.lr!r} must be greater than 0 (or unset for the batch-size-scaled default)")
        if self.epochs == 0 and not (self.pretrained and self.finetune == "linear" and self.head_init == "probe"):
            raise ConfigError("epochs=0 trains nothing; it is only for feature extraction with a probe head "
                              "(pretrained=... finetune=linear head_init=probe), where the probe fit is the training")
        positive = ("batch_size", "epochs", "accumulate_steps", "backbone_lr_ratio", "unfreeze_every",
                    "step_epochs", "restart_epochs", "restart_mult", "head_grid", "val_every")
        for name in positive:
            if name == "epochs" and self.epochs == 0:
                continue
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be greater than 0")
        if not isinstance(self.head_levels, int) or self.head_levels < 0:
            raise ConfigError(f"head_levels={self.head_levels!r} must be 0 (the model's own head) or a positive integer")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction} must be in [0, 1)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay={self.ema_decay} must be in [0, 1) (0 disables EMA)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        self.augment_config()  # checks the augmentation values
        for name in ("mixup", "cutmix", "grad_clip_value"):
            if (getattr(self, name) or 0) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        if not 0.0 <= self.mix_probability <= 1.0:
            raise ConfigError(f"mix_probability={self.mix_probability} must be in [0, 1]")
        if self.drop_path_rate is not None and not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate={self.drop_path_rate} must be in [0, 1)")
        self._validate_segmentation()
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels={self.channels} must be 1, 3 or left unset")
        if self.val_fraction == 0 and (self.monitor or "val_").startswith("val_"):
            raise ConfigError("val_fraction=0 leaves nothing to validate on; set monitor=train_loss "
                              "or keep a validation fraction")
        self._validate_class_imbalance()

    def _validate_class_imbalance(self) -> None:
        for name, allowed in (("class_weights", ("none", "inverse", "effective")),
                              ("sampler", ("shuffle", "oversample")), ("loss", ("ce", "focal"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if not 0.0 <= self.class_weights_beta < 1.0:
            raise ConfigError(f"class_weights_beta={self.class_weights_beta} must be in [0, 1) (e.g. 0.999)")
        if not self.focal_gamma >= 0.0:
            raise ConfigError(f"focal_gamma={self.focal_gamma} must be >= 0 (0 is cross-entropy; 2 is the paper's)")

    def _validate_segmentation(self) -> None:
        if self.seg_loss is not None:
            parse_loss_spec(self.seg_loss)
        if self.ignore_index < 0:
            raise ConfigError(f"ignore_index={self.ignore_index} must be >= 0 (255 by default)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def augment_config(self) -> AugmentConfig:
        """The training loader's AugmentConfig (MixUp/CutMix go to the task, not the loader)."""
        names = ("hflip", "vflip", "translate", "rotate", "scale", "shear", "resized_crop", "brightness",
                 "contrast", "saturation", "hue", "auto_augment", "random_erasing")
        return AugmentConfig(**{name: getattr(self, name) for name in names})


AUTO_AUGMENT_POLICIES = ("none", "autoaugment", "randaugment", "trivialaugment")


@dataclass
class AugmentConfig:
    """Which batched augmentations the training loader applies (all off by default).

    Attributes:
        hflip: Flip each image left-right with probability 1/2.
        vflip: Flip each image upside down with probability 1/2 (for data without an "up":
            satellite, microscopy; wrong for clothes or digits).
        translate: Shift each image by up to this many pixels in each direction (pad by
            ``translate``, then crop back to the original size at a random offset, as in the
            standard CIFAR recipe). 0 disables it.
        translate_padding: "reflect" (default; airbench's CIFAR choice: no artificial black
            border) or "zeros" (an image with a black background, like Fashion-MNIST, is
            extended with black either way, so both are fine there).
        rotate: Rotate by an angle drawn uniformly from [-rotate, rotate] degrees.
        scale: Zoom by a factor drawn uniformly from [1 - scale, 1 + scale].
        shear: Shear along x by an angle drawn uniformly from [-shear, shear] degrees.
        resized_crop: RandomResizedCrop's smallest area fraction (e.g. 0.35): crop a random
            region of that to 100% of the area, aspect ratio 3/4..4/3, and resize it to the
            image size. 0 disables it. Rotation, scale, shear and the crop are one resampling.
        brightness, contrast, saturation: Colour jitter strengths, as torchvision's ColorJitter:
            a factor drawn from [1 - x, 1 + x] per image (saturation needs RGB).
        hue: Hue shift drawn from [-hue, hue] (fractions of a turn, at most 0.5; RGB only).
        auto_augment: "autoaugment" (the ImageNet policy), "randaugment" (2 ops, magnitude 9),
            "trivialaugment" (TrivialAugmentWide), or "none". Per image, through torchvision.
        random_erasing: Probability of erasing one random rectangle (2-33% of the area, aspect
            0.3..3.3) to black: cutout / random erasing (Zhong et al. 2017).
    """

    hflip: bool = False
    vflip: bool = False
    translate: int = 0
    translate_padding: Literal["reflect", "zeros"] = "reflect"
    rotate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    resized_crop: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    auto_augment: str = "none"
    random_erasing: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rotate", "scale", "shear", "brightness", "contrast", "saturation", "hue", "random_erasing",
                     "resized_crop"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0 (0 disables it)")
        limits = {"scale": 1.0, "brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.5,
                  "random_erasing": 1.0, "resized_crop": 1.0}
        for name, limit in limits.items():
            if getattr(self, name) > limit:
                raise ConfigError(f"{name}={getattr(self, name)} must be at most {limit}")
        if self.auto_augment not in AUTO_AUGMENT_POLICIES:
            raise ConfigError(f"auto_augment={self.auto_augment!r} is not one of {', '.join(AUTO_AUGMENT_POLICIES)}")


# Terms of the segmentation loss spec (seg_loss); cnnkit.losses.segmentation computes them.
LOSS_NAMES = ("ce", "dice", "focal")


def parse_loss_spec(spec: str) -> list[tuple[float, str]]:
    """"ce+0.5*dice" -> [(1.0, "ce"), (0.5, "dice")].

    Raises:
        ConfigError: For an unknown term or a malformed weight.
    """
    terms = []
    for part in spec.replace(" ", "").lower().split("+"):
        match = re.fullmatch(r"(?:([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\*)?([a-z]+)", part)
        if not match or match.group(2) not in LOSS_NAMES:
            raise ConfigError(f"seg_loss={spec!r}: cannot read {part!r}; write terms from {', '.join(LOSS_NAMES)} "
                              "joined by +, each with an optional weight, e.g. ce+dice or ce+0.5*dice")
        terms.append((float(match.group(1) or 1.0), match.group(2)))
    return terms


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value: Any, annotation: Any, where: str) -> Any:
    """Check `value` against the field's type annotation, converting ints to floats where a float is expected."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{where}: {name} cannot be empty (null)")
    for kind in allowed:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (str, bool, dict) and isinstance(value, kind):
            return value
    names = " or ".join(getattr(kind, "__name__", str(kind)) for kind in allowed)
    raise ConfigError(f"{where}: {name}={value!r} should be {names}")


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """Merge `overrides` into `values`, checking each key and type; `where` names the source in errors."""
    types_by_name = _field_types()
    merged = dict(values)
    for key, value in overrides.items():
        if key not in types_by_name:
            close = difflib.get_close_matches(key, list(types_by_name), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown setting {key!r}.{hint} See `cnnkit train --help` for the list.")
        merged[key] = _coerce(key, value, types_by_name[key], where)
    return merged


def parse_key_values(items: list[str]) -> dict[str, Any]:
    """Parse command-line `key=value` items; values are read as YAML scalars (1e-3, true, null, [a, b])."""
    parsed = {}
    for item in items:
        key, separator, text = item.partition("=")
        if not separator or not key:
            raise ConfigError(f"cannot read {item!r}: overrides are written key=value, e.g. lr=0.1")
        try:
            parsed[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            parsed[key.strip()] = text
    return parsed


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML mapping of TrainConfig fields."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path} must hold a mapping of settings (key: value), not {type(content).__name__}")
    return content


def make_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Build a TrainConfig from defaults, then an optional YAML file, then overrides (highest priority)."""
    values: dict[str, Any] = {}
    if path is not None:
        values = apply_overrides(values, load_yaml(path), str(path))
    values = apply_overrides(values, overrides or {}, "command line")
    try:
        return TrainConfig(**values)
    except ConfigError as error:
        source = f"{path} / command line" if path else "command line"
        raise ConfigError(f"{source}: {error}") from None


def as_config(config: "TrainConfig | dict | str | Path | None" = None,
              overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A TrainConfig from any of the forms the API takes, `overrides` applied last (each key checked).

    Args:
        config: A TrainConfig, a dict of settings, a YAML file (a run's config.yaml included), or None
            for the defaults.
        overrides: Settings that take precedence, e.g. {"epochs": 5}.
    """
    overrides = overrides or {}
    if isinstance(config, TrainConfig):
        return TrainConfig(**apply_overrides(config.to_dict(), overrides, "overrides"))
    if isinstance(config, dict):
        return TrainConfig(**apply_overrides(apply_overrides({}, config, "config"), overrides, "overrides"))
    return make_config(config, overrides)


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(Path(path), yaml.safe_dump(config.to_dict(), sort_keys=False))
