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
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


from cnnkit.errors import ConfigError
from cnnkit.files import atomic_write_text
from cnnkit.task_table import TASKS


# Seeds feed torch/numpy generators (numpy takes < 2**32); epoch seeds are derived from it by arithmetic.
MAX_SEED = 2**32 - 1

# The batch fits the data: an epoch has at least this many optimizer steps. A larger batch_size is
# capped to floor(training images / MIN_STEPS_PER_EPOCH) (the Trainer says so once, when it starts);
# an epoch with no step at all is an error. 4: the smallest test fixtures (320 images, batch 64) keep
# their batch, and 300 detection scenes at the default batch 256 get 4 steps instead of 1.
MIN_STEPS_PER_EPOCH = 4


def fit_batch_size(batch_size: int, num_images: int) -> int:
    """The batch size a run uses: `batch_size`, capped so `num_images` give MIN_STEPS_PER_EPOCH batches."""
    return max(1, min(batch_size, num_images // MIN_STEPS_PER_EPOCH))


_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str | float, name: str = "budget") -> float:
    """"15m" -> 900.0, "1h30m" -> 5400.0, "90s", "1.5h". A bare number is refused: minutes or hours?"""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        raise ConfigError(f"{name}={text!r} has no unit: write {name}={text:g}m (minutes), {name}={text:g}s or "
                          f"{name}={text:g}h")
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", str(text).strip().lower())
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([hms])", "", str(text).strip().lower()).strip():
        raise ConfigError(f"{name}={text!r} is not a duration: write e.g. {name}=15m, {name}=900s, {name}=1.5h "
                          f"or {name}=1h30m")
    seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if not seconds > 0:
        raise ConfigError(f"{name}={text!r} must be longer than 0 seconds")
    return seconds


def setting(default: Any = None, help: str = "", *, factory: Any = None) -> Any:
    """A TrainConfig field whose `help` is the line `cnnkit train --help` prints beside it."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything that defines a training run. Field names are the YAML keys and the `key=value` names.

    Each field's `metadata["help"]` is the line `cnnkit train --help` prints beside it.
    """

    # --- task ---
    task: str = setting("classify", '"classify", "detect" (boxes), "segment" (a class per pixel) or "instance" (masks)')

    # --- data ---
    data: str = setting("fashion-mnist", '"fashion-mnist", a directory of class folders, or a CSV (path,label)')
    val_fraction: float = setting(0.1, "held out from the training data, seeded; the test split is never used to tune")
    image_size: int | None = setting(None, "resize users' images to this square size; None keeps the dataset's size")
    channels: int | None = setting(None, "1 (grayscale) or 3 (RGB); None infers it from the data")
    batch_size: int = setting(256, "images per optimizer step (split across processes under torchrun)")

    # --- augmentation (training only; `cnnkit augment preview` shows what the model sees) ---
    hflip: bool = setting(True, "random horizontal flips (batched tensor op)")
    vflip: bool = setting(False, 'random vertical flips (only for data without an "up")')
    translate: int = setting(2, "random translation by up to this many pixels (pad and crop, batched)")
    rotate: float = setting(0.0, "random rotation within +- this many degrees")
    scale: float = setting(0.0, "random zoom by a factor in [1 - scale, 1 + scale]")
    shear: float = setting(0.0, "random x-shear within +- this many degrees")
    resized_crop: float = setting(0.0, "RandomResizedCrop: smallest area fraction kept (e.g. 0.35); 0 disables")
    brightness: float = setting(0.0, "colour jitter: brightness factor in [1 - x, 1 + x]")
    contrast: float = setting(0.0, "colour jitter: contrast factor in [1 - x, 1 + x]")
    saturation: float = setting(0.0, "colour jitter: saturation factor in [1 - x, 1 + x] (RGB)")
    hue: float = setting(0.0, "colour jitter: hue shift in [-x, x] turns, x <= 0.5 (RGB)")
    auto_augment: str = setting("none", '"autoaugment", "randaugment", "trivialaugment" or "none" (per image)')
    random_erasing: float = setting(0.0, "probability of blacking out a random rectangle (cutout)")
    mixup: float = setting(0.0, "MixUp's Beta(alpha, alpha); 0 disables (e.g. 0.2)")
    cutmix: float = setting(
        0.0, "CutMix's Beta(alpha, alpha); 0 disables (e.g. 1.0); with mixup, half the batches each")
    mix_probability: float = setting(1.0, "chance a batch is mixed when mixup/cutmix is on")
    data_mode: str = setting(
        "auto", '"memory" (one uint8 tensor), "stream" (decode files per batch), "auto": memory if it fits')
    num_workers: int = setting(-1, "decoding processes for streamed data; -1 picks min(8, cores - 1)")
    decode: str = setting(
        "cpu", 'streamed image folders: "cpu" (workers decode with PIL) or "gpu" (workers read the bytes; JPEGs '
               "are decoded in batches on the run's device with torchvision's nvJPEG path, then augmented there)")
    max_bad_fraction: float = setting(
        0.01, "image folders / CSVs: unreadable files skipped while at most max(1, this x N) are bad; 0: none")
    max_image_pixels: int = setting(
        89_478_485, "image files declaring more pixels (width x height) are skipped as unreadable (bombs)")

    # --- model ---
    model: str = setting("fastnet", "a registered name; `cnnkit models` lists them")
    model_args: dict = setting(help="extra keyword arguments for the model builder", factory=dict)
    drop_rate: float | None = setting(
        None, "dropout rate, for models that have dropout; None keeps the model's default")
    pretrained: str | None = setting(
        None, '"imagenet", a torchvision/timm weight name, a .safetensors/.pth file or a run dir')
    finetune: str = setting("full", 'with pretrained: "full", "linear" (feature extraction) or "gradual" (unfreezing)')
    backbone_lr_ratio: float = setting(0.1, "classify with pretrained: the backbone's LR as a fraction of the head's")
    unfreeze_every: int = setting(1, "finetune=gradual: release one more backbone block every this many epochs")
    head_init: str = setting(
        "random", 'with pretrained: "probe" fits the new head first (L-BFGS linear probe on frozen features)')
    head_levels: int = setting(
        0, "0: the model's own head; N: a new linear head over the last N resolution levels' pooled features "
                "(CNNs; helps feature extraction)")
    head_grid: int = setting(
        1, "with head_levels: each level average-pooled to head_grid x head_grid (1: global average)")
    freeze_bn: bool = setting(
        False, "with pretrained: BatchNorm keeps the pretrained statistics in the layers that train (few images)")

    # --- optimization ---
    epochs: int = setting(
        10, "passes over the training split (0: none, for feature extraction whose probe head is the training)")
    budget: str | float | None = setting(
        None, 'train for this long instead of a number of epochs: "15m", "900s", "1.5h", "1h30m". The Trainer times '
              "its steps, plans the epochs and the LR schedule to end inside the budget, and re-plans as it goes "
              "(the last epoch may be partial); counted from the first step")
    optimizer: str = setting("sgd", '"sgd" (Nesterov momentum) or "adamw"')
    lr: float | None = setting(
        None, "peak learning rate; None: 0.2 (SGD) or 2e-3 (AdamW) per 256 images of batch, scaled linearly")
    momentum: float = setting(0.9, "SGD momentum, or AdamW's beta1")
    weight_decay: float = setting(5e-4, "not applied to norm layers and biases")
    schedule: str = setting("onecycle", '"constant", "step", "cosine", "cosine_restarts" or "onecycle"')
    warmup_epochs: float = setting(
        0.0, "linear warm-up (fractions allowed); onecycle has its own ramp (`onecycle_pct`)")
    onecycle_pct: float = setting(0.25, "fraction of training spent ramping up in the one-cycle schedule")
    step_epochs: int = setting(30, '"step": multiply the LR by `step_gamma` every this many epochs')
    step_gamma: float = setting(0.1, '"step": the LR factor applied every step_epochs')
    restart_epochs: int = setting(10, '"cosine_restarts": length of the first cycle (SGDR\'s T_0)')
    restart_mult: int = setting(1, '"cosine_restarts": each cycle is this many times longer than the last (T_mult)')
    min_lr_ratio: float = setting(0.0, "the LR decays to lr * min_lr_ratio")
    label_smoothing: float = setting(0.1, "cross-entropy targets (1 - s) for the class, s spread over all classes")
    grad_clip_norm: float | None = setting(None, "clip the global gradient norm to this value")
    grad_clip_value: float | None = setting(None, "clip every gradient element to [-value, value]")
    drop_path_rate: float | None = setting(
        None, "stochastic depth, for models with residual blocks; None: model default")
    grad_checkpointing: bool = setting(False, "recompute activations in backward: less memory, ~30% more compute")
    accumulate_steps: int = setting(1, "gradient accumulation: optimizer step every this many batches")
    precision: str = setting("auto", '"auto" (bf16 where the hardware has it), "fp32", "bf16" or "fp16" (CUDA only)')
    channels_last: bool = setting(True, "NHWC memory format: faster convolutions on CPU (oneDNN) and tensor cores")
    ema_decay: float = setting(0.0, "exponential moving average of the weights; 0 disables it")
    compile: bool = setting(False, "torch.compile the model (measured no gain for CPU training: opt-in)")

    # --- evaluation ---
    tta: bool = setting(False, "test-time augmentation: average the logits of each image and its mirror image")

    # --- class imbalance ---
    class_weights: str = setting(
        "none", 'loss weight per class from training counts: "none", "inverse" (1/n) or "effective"')
    class_weights_beta: float = setting(
        0.999, "class_weights=effective: weight (1 - beta) / (1 - beta^n) (Cui et al. 2019); with n in the "
               "thousands (segmentation counts pixels) every class gets the same weight: use beta nearer 1")
    sampler: str = setting(
        "shuffle", '"shuffle" (each image once per epoch) or "oversample" (classes equally often, with replacement; '
                   'task=segment: images weighted by their rarest class)')
    loss: str = setting(
        "ce", '"ce" (cross-entropy) or "focal" (Lin et al. 2017: (1 - p)^gamma down-weights easy images)')
    focal_gamma: float = setting(2.0, "loss=focal: the focusing exponent gamma; 0 is cross-entropy")

    # --- segmentation ---
    seg_loss: str | None = setting(
        None, 'task=segment: "ce", "dice", "focal", "tversky" or a weighted sum, e.g. "ce+dice", "ce+0.5*dice"; '
              'None: `loss`')
    ignore_index: int = setting(
        255, "task=segment: mask value of unlabelled pixels, left out of the loss and the metrics")
    tversky_alpha: float = setting(0.3, "seg_loss=tversky: weight of false positives (alpha = beta = 0.5 is Dice)")
    tversky_beta: float = setting(0.7, "seg_loss=tversky: weight of false negatives (> alpha: recall on tiny structures)")

    # --- medical imaging (task=segment on a study layout: a studies CSV or patient folders; cnnkit.data.medical) ---
    window: str | None = setting(
        None, 'study volumes / DICOM: "brain", "lung", "bone", "soft-tissue", "C,W" (HU), "dicom" (the file\'s '
              'own), "percentile[:LOW,HIGH]" (MRI; 0.5,99.5) or "minmax"; None: minmax. Stored in the checkpoint')
    slice_stack: int = setting(
        1, "study volumes: 1 (2-D slices) or 3 (2.5-D: a slice and its two neighbours as channels)")
    empty_slice_fraction: float = setting(
        1.0, "study volumes: share of all-background training slices kept (seeded); < 1 balances tiny foregrounds")
    voxel_spacing: float | None = setting(
        None, "study volumes: resample to this isotropic spacing in mm before slicing (None: as scanned); "
              "volume predictions return to the scan's grid")

    # --- detection ---
    detect_augment: str = setting(
        "default", 'task=detect: box-aware augmentation preset: "none", "light", "default", "strong"')

    # --- embedding (face recognition, metric learning) ---
    embedding_dim: int = setting(128, "task=embed: length of the L2-normalised embedding")
    embed_loss: str = setting("arcface", 'task=embed: "arcface", "cosface", "sphereface", "softmax", "triplet" '
                              '(batch-hard), "triplet_semihard" or "contrastive"')
    margin: float | None = setting(None, "task=embed: the loss's margin; None: the paper's (arcface 0.5, cosface 0.35, "
                                   "triplet 0.2 ...)")
    margin_scale: float | None = setting(None, "task=embed: margin losses' logit scale s; None: the paper's (64)")
    subcenters: int = setting(1, "task=embed, arcface: centres per identity (sub-center ArcFace; 3 is the paper's)")
    images_per_identity: int = setting(4, "task=embed, triplet/contrastive: K images of each of batch_size / K "
                                       "identities per batch (P x K sampling)")
    margin_lr_multiplier: float = setting(1.0, "task=embed: the margin head's LR (the identities' centres) as a "
                                          "multiple of the network's")

    # --- self-supervised pretraining (task=pretrain) ---
    method: str = setting("simclr", 'task=pretrain: "simclr", "moco" (v2: momentum encoder + queue), "mae" or "beit" '
                          "(masked image modelling, HOG targets); mae/beit need a ViT: --model vit_mini")
    temperature: float | None = setting(None, "task=pretrain, simclr/moco: the contrastive softmax temperature; "
                                        "None: 0.2")
    projection_dim: int = setting(128, "task=pretrain, simclr/moco: output width of the projection MLP")
    moco_queue: int = setting(4096, "task=pretrain, moco: negative keys kept from earlier batches")
    moco_momentum: float = setting(0.99, "task=pretrain, moco: the key encoder's EMA momentum")
    mask_ratio: float | None = setting(None, "task=pretrain, mae/beit: fraction of patches masked; None: 0.75 (mae), "
                                       "0.4 (beit)")
    masking: str = setting("random", 'task=pretrain, beit: which patches are masked: "random" (uniformly) or "block" '
                           "(BEiT's blockwise masking: rectangles of >= 4 patches at 7x7, 16 at 14x14, aspect 0.3-3.3)")
    views: str = setting("simclr", 'task=pretrain: the views\' augmentation: "simclr" (crop 0.2-1, flip, brightness '
                         '/ contrast 0.4, blur; crop 0.35-1 + flip for mae/beit) or "config" (the augmentation '
                         "settings above)")
    knn_k: int = setting(200, "task=pretrain: neighbours of the kNN monitor (cosine, weighted), run every val_every "
                         "epochs when the data has labels")
    knn_temperature: float = setting(0.1, "task=pretrain: temperature of the kNN monitor's vote weights")
    probe_monitor: bool = setting(False, "task=pretrain: also fit a linear probe on the kNN monitor's bank at each "
                                  "validation (val_linear_probe_accuracy; a few seconds each)")

    # --- run ---
    monitor: str | None = setting(
        None, "metric that picks the best checkpoint and stops early; None: the task's own (val_accuracy for "
                "classify, val_map50 for detect, val_miou for segment ...)")
    early_stopping_patience: int = setting(0, "stop after this many epochs without improvement; 0 disables it")
    val_every: int = setting(
        1, "validate after every N-th epoch and after the last (the best checkpoint is chosen among those)")
    seed: int = setting(0, "fixes the split, initial weights, batch order and augmentation")
    out: str = setting("runs", "parent directory of run directories")
    name: str | None = setting(None, "run directory name; default: <model>-<data>-<timestamp>")
    device: str = setting("auto", '"auto", "cpu", "cuda", "cuda:1" ...')
    num_threads: int = setting(0, "CPU threads for PyTorch; 0 keeps PyTorch's default (one per core)")
    sync_bn: bool = setting(False, "convert BatchNorm to SyncBatchNorm under torchrun (DDP)")
    progress: bool = setting(True, "show a progress bar")
    report: bool = setting(
        True, "write report.html (curves, confusion matrix, mistakes, Grad-CAM ...) when training ends")
    logger: str = setting("none", "also log to a viewer: none, tensorboard (RUN_DIR/tensorboard/ event files; pip "
                                  "install 'cnnkit[tensorboard]') or mlflow ($MLFLOW_TRACKING_URI, else RUN_DIR/mlruns; "
                                  "pip install 'cnnkit[mlflow]'): scalars per epoch, the config, the report's pictures")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check value ranges and choices; raise ConfigError naming the field."""
        self._validate_numbers()
        if self.name is not None and (not self.name.strip() or self.name in (".", "..")
                                      or any(sep in self.name for sep in ("/", "\\", "\0"))):
            raise ConfigError(f"name={self.name!r} must be a plain folder name (no / or \\, not . or ..): the run "
                              "directory goes inside `out`; use out=DIR to choose where")
        choices = {
            "optimizer": ("sgd", "adamw"),
            "schedule": ("constant", "step", "cosine", "cosine_restarts", "onecycle"),
            "precision": ("auto", "fp32", "bf16", "fp16"),
            "data_mode": ("auto", "memory", "stream"),
            "decode": ("cpu", "gpu"),
            "finetune": ("full", "linear", "gradual"),
            "head_init": ("random", "probe"),
            "task": tuple(TASKS),
            "auto_augment": ("none", "autoaugment", "randaugment", "trivialaugment"),
            "detect_augment": ("none", "light", "default", "strong"),  # cnnkit.data.detection.transforms presets
            "logger": ("none", "tensorboard", "mlflow"),
            "masking": ("random", "block"),
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
        if self.budget is not None:
            self.budget_seconds()  # checks the text

    def _validate_numbers(self) -> None:
        """Every number finite and in a range the code can use (inf/nan LRs train nothing and "succeed")."""
        for setting_field in dataclasses.fields(self):
            value = getattr(self, setting_field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{setting_field.name}={value} must be a finite number")
        at_least = {"weight_decay": 0.0, "num_threads": 0, "num_workers": -1, "warmup_epochs": 0.0,
                    "early_stopping_patience": 0, "min_lr_ratio": 0.0, "momentum": 0.0, "step_gamma": 0.0,
                    "max_bad_fraction": 0.0, "translate": 0, "seed": 0, "max_image_pixels": 1}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= {low}")
        at_most = {"momentum": 0.999999, "min_lr_ratio": 1.0, "max_bad_fraction": 1.0, "onecycle_pct": 0.99,
                   "num_threads": 4096, "seed": MAX_SEED}
        for name, high in at_most.items():
            if getattr(self, name) > high:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be <= {high}")
        if not self.onecycle_pct > 0:
            raise ConfigError(f"onecycle_pct={self.onecycle_pct} must be in (0, 1)")
        for name in ("grad_clip_norm", "image_size"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be greater than 0 (or unset)")

    def _validate_class_imbalance(self) -> None:
        for name, allowed in (("class_weights", ("none", "inverse", "effective")),
                              ("sampler", ("shuffle", "oversample")), ("loss", ("ce", "focal"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.sampler == "oversample" and self.task not in ("classify", "segment"):
            raise ConfigError(f"sampler=oversample is for task=classify and task=segment, not task={self.task}; "
                              "use sampler=shuffle")
        if not 0.0 <= self.class_weights_beta < 1.0:
            raise ConfigError(f"class_weights_beta={self.class_weights_beta} must be in [0, 1) (e.g. 0.999)")
        if not self.focal_gamma >= 0.0:
            raise ConfigError(f"focal_gamma={self.focal_gamma} must be >= 0 (0 is cross-entropy; 2 is the paper's)")

    def _validate_segmentation(self) -> None:
        if self.seg_loss is not None:
            parse_loss_spec(self.seg_loss)
        if self.slice_stack not in (1, 3):
            raise ConfigError(f"slice_stack={self.slice_stack} must be 1 (2-D) or 3 (2.5-D, one slice per channel)")
        if self.voxel_spacing is not None and not self.voxel_spacing > 0:
            raise ConfigError(f"voxel_spacing={self.voxel_spacing} must be a positive number of mm (or unset)")
        if not 0.0 < self.empty_slice_fraction <= 1.0:
            raise ConfigError(f"empty_slice_fraction={self.empty_slice_fraction} must be in (0, 1]")
        if not (self.tversky_alpha >= 0 and self.tversky_beta >= 0 and self.tversky_alpha + self.tversky_beta > 0):
            raise ConfigError("tversky_alpha and tversky_beta must be >= 0 and not both 0")
        if self.ignore_index < 0:
            raise ConfigError(f"ignore_index={self.ignore_index} must be >= 0 (255 by default)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def budget_seconds(self) -> float | None:
        """`budget` in seconds ("15m" -> 900.0), None without a budget."""
        return None if self.budget is None else parse_duration(self.budget, "budget")

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
LOSS_NAMES = ("ce", "dice", "focal", "tversky")


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
    if isinstance(value, str) and (float in allowed or int in allowed) and str not in allowed:
        value = _number_from_text(value)  # YAML 1.1 reads 1e-3 (no dot) and .inf-like text as strings
    for kind in allowed:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (str, bool, dict) and isinstance(value, kind):
            return value
    raise ConfigError(f"{where}: {name}={value!r} should be {_describe_kinds(allowed)}")


_KIND_WORDS = {float: "a number", int: "a whole number", bool: "true or false", str: "text", dict: "a mapping"}


def _describe_kinds(allowed: tuple) -> str:
    """(float, NoneType) -> "a number (or null)": what a user can type, not Python's type names."""
    words = [_KIND_WORDS.get(kind, getattr(kind, "__name__", str(kind))) for kind in allowed if kind is not type(None)]
    return " or ".join(words) + (" (or null)" if type(None) in allowed else "")


def _number_from_text(text: str) -> Any:
    """"1e-3" -> 0.001, "3" -> 3; other text is returned unchanged (and then refused by its type check)."""
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        return float(stripped)
    except ValueError:
        return text


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
        try:  # cnnkit.safe_yaml: no aliases (a 1 kB value could expand to gigabytes)
            from cnnkit.safe_yaml import load as load_yaml_text

            parsed[key.strip()] = load_yaml_text(text, f"{key.strip()}=") if text.strip() else None
        except ConfigError:
            parsed[key.strip()] = text
    return parsed


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML mapping of TrainConfig fields."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    from cnnkit.safe_yaml import load_file

    content = load_file(path, ConfigError) or {}  # no aliases, size capped; errors name the line
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
    import yaml  # here, not at the top: `cnnkit --help` and every settings error skip importing it

    atomic_write_text(Path(path), yaml.safe_dump(config.to_dict(), sort_keys=False))
