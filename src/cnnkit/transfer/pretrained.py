"""Transfer learning: pretrained weights (found, loaded without unpickling code, fitted to a model) and
which parameters train when (feature extraction, fine-tuning, gradual unfreezing).

One loader for every task: classifiers fit weights with `adapt_state_dict` (head re-initialised where the
classes differ), segmentation models with `load_matching` (backbone/encoder tensors by name and shape,
"imagenet" meaning the ImageNet classifier of the model's backbone, `backbone_name`).

`--pretrained` takes any of:

    imagenet                          the model's default ImageNet weights from its source library
    ResNet50_Weights.IMAGENET1K_V2    a torchvision weight name (also "tv:...")
    timm:convnext_tiny.fb_in22k       a timm model/pretrained tag
    runs/my-run                       a cnnkit run directory (its best checkpoint); of a `--task pretrain`
                                      run, its backbone (`pretrain_backbone`: same --model, a fresh head)
    weights.safetensors | model.pth   a local file (.pth/.pt read with torch.load(weights_only=True))

Downloads (torchvision, timm) are cached by those libraries; offline they fail with a clear error.

Fitting (`adapt_state_dict`): tensors that match the model by name and shape are loaded. A first
convolution trained on RGB and used on grayscale gets its kernels summed over the colour channels
(a gray image replicated to RGB gives the same response), and one trained on gray used on RGB gets
its kernel spread over the channels (`fit_input_channels`); the classifier head is re-initialised when
the class count differs (or, for cnnkit runs, when the class names differ); anything else that
does not fit (e.g. a stem changed for small inputs) keeps its fresh initialisation and is reported.

Modes (`finetune=`), with pretrained weights:

    full      every layer trains; the backbone at backbone_lr_ratio (default 0.1) x the head's LR
    linear    feature extraction: the backbone is frozen (BatchNorm statistics included), the head trains
    gradual   gradual unfreezing (Howard & Ruder 2018): the head alone first, then one more backbone
              block from the top every `unfreeze_every` epochs, at the backbone LR

The new head starts (`head_init=`):

    random    freshly initialised, as the model builds it
    probe     fitted before the first epoch as a linear probe (cnnkit.transfer.linear_probe): L2-regularised
              logistic regression on the frozen backbone's features of the unaugmented training images,
              solved by L-BFGS, the L2 strength picked on the validation split. With finetune=linear the
              epochs then go on training that head by SGD, or with epochs=0 the probe is the training
              (better here: see below); with full/gradual it is LP-FT (Kumar et al. 2022, "Fine-Tuning
              can Distort Pretrained Features"): fine-tuning from a fitted head moves the pretrained
              features less than from a random one, whose large early gradients reach them.

`head_levels=N` (cnnkit.models.multilevel) gives the head features from the backbone's last N resolutions
instead of the last stage only; `freeze_bn` keeps every BatchNorm's pretrained statistics while the layers
train (a few hundred target images give poor running statistics). Measured as below, seeds 0 / 1 / 2: the
3-level probe alone 93.0 / 93.3 / 93.9%, after 40 SGD epochs of its head 88.2% (seed 0); fine-tuning from it
92.3 / 92.3 / 89.3%, with freeze_bn 92.7 / 91.8 / 93.5%.

Measured on benchmarks/transfer_learning.py (resnet20 pretrained on Fashion-MNIST classes 0-4, classes 5-9
from 200 training images; accuracy on 1,000 other *training* images of 5-9, seed 0): the Trainer's SGD
head (LR 0.5, random start) 83.8%, L-BFGS on the same frozen features 88.0%. The SGD head is unstable at
the one-cycle peak (its training loss jumped to 5.5 mid-run) and its checkpoint is picked on 50 images.

Normalisation: a network pretrained by cnnkit expects inputs normalised with its own training mean/std,
so a run that starts from a cnnkit run directory uses those (`pretrained_preprocessing`), not the target
data's: frozen layers (BatchNorm in eval mode included) cannot adapt to a shifted input. Measured as
above (pretrained without label smoothing): the L-BFGS probe reached 84.7% with the target data's
statistics, 89.8% with the pretrained run's.

Not done, measured: re-estimating the frozen BatchNorm statistics on the target images (AdaBN, Li et al.
2016) recovers most of that normalisation loss (84.7% -> 88.4%) but, once the inputs are normalised as in
pretraining, costs accuracy (89.8% -> 88.2%; seed 1: 87.7% -> 85.2%): the frozen layers after each
BatchNorm were trained on the source statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from cnnkit.data.preprocess import Preprocessing
from cnnkit.errors import CheckpointError, ConfigError, ModelError
from cnnkit.models.anatomy import backbone_blocks, classifier_module
from cnnkit.transfer.linear_probe import ProbeFit, fit_linear_probe, head_features


@dataclass
class PretrainedReport:
    """What happened to each tensor when pretrained weights were fitted to a model."""

    source: str
    loaded: list[str] = field(default_factory=list)
    channel_adapted: list[str] = field(default_factory=list)  # first kernels fitted: RGB <-> gray
    reset: list[str] = field(default_factory=list)  # kept fresh: head, or shapes that do not fit
    unused: list[str] = field(default_factory=list)  # in the weights but not in the model

    def summary(self) -> str:
        parts = [f"pretrained {self.source}: loaded {len(self.loaded)} tensors"]
        if self.channel_adapted:
            parts.append(f"fitted RGB/gray first kernels to the input channels in {', '.join(self.channel_adapted)}")
        if self.reset:
            shown = ", ".join(self.reset[:6]) + (" ..." if len(self.reset) > 6 else "")
            parts.append(f"re-initialised {len(self.reset)} ({shown})")
        if self.unused:
            parts.append(f"{len(self.unused)} unused")
        return "; ".join(parts)


def head_parameter_names(model: nn.Module) -> set[str]:
    """Fully qualified names of the head's parameters."""
    head = classifier_module(model)
    prefix = next(name for name, module in model.named_modules() if module is head)
    return {f"{prefix}.{name}" if prefix else name for name, _ in head.named_parameters()}


def load_pretrained_state(spec: str, model_name: str) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """Resolve `spec` to a state dict (and the class names, when the source is a cnnkit run)."""
    path = Path(spec)
    if path.is_dir():
        from cnnkit.engine.checkpoint import load_checkpoint  # noqa: PLC0415 - only for run directories

        tensors, record = load_checkpoint(path / "best.safetensors")
        if record.get("task") == "pretrain":  # a self-supervised run: its backbone, without a head
            return pretrain_backbone(path, tensors, record, model_name), None
        return tensors, list(record.get("classes", [])) or None
    if path.suffix in (".safetensors", ".pth", ".pt", ".bin") or path.exists():
        return _load_file(path), None
    if spec.startswith("timm:"):
        return _download(lambda: _timm_state(spec[len("timm:"):]), spec), None
    if spec.startswith("tv:") or "_Weights." in spec:
        name = spec[len("tv:"):] if spec.startswith("tv:") else spec
        return _download(lambda: _torchvision_state(name), spec), None
    if spec in ("imagenet", "default"):
        return _download(lambda: _default_state(model_name), f"{spec} weights of {model_name}"), None
    raise CheckpointError(f"--pretrained {spec!r}: not a file, run directory or known weight name. Use a path "
                          "(.safetensors/.pth), a run directory, 'imagenet', a torchvision name like "
                          "ResNet50_Weights.IMAGENET1K_V2, or timm:NAME.TAG")


def pretrain_backbone(path: Path, tensors: dict[str, torch.Tensor], record: dict,
                      model_name: str) -> dict[str, torch.Tensor]:
    """The backbone of a `--task pretrain` run (cnnkit.models.ssl keeps it as `backbone.`, its head removed):
    projection heads, decoders and momentum encoders stay behind; the classify run's head starts fresh."""
    backbone = record["architecture"]["args"].get("backbone")
    if backbone != model_name:
        raise ConfigError(f"pretrained={path}: that run pretrained a {backbone} backbone; fine-tune it with "
                          f"--model {backbone} (not {model_name})")
    return {name[len("backbone."):]: tensor for name, tensor in tensors.items() if name.startswith("backbone.")}


def pretrained_preprocessing(spec: str, preprocessing: Preprocessing) -> Preprocessing:
    """`preprocessing` with the mean/std a cnnkit run directory `spec` was trained with.

    A pretrained network expects its inputs normalised as in its own training; with the target data's
    statistics instead, every frozen layer sees shifted inputs. Other sources (library weights, plain
    files) and runs with another channel count leave `preprocessing` as it is.
    """
    path = Path(spec)
    if not path.is_dir():
        return preprocessing
    from cnnkit.engine.checkpoint import read_record  # noqa: PLC0415 - only for run directories

    source = read_record(path / "best.safetensors").get("preprocessing")
    if not source or int(source["channels"]) != preprocessing.channels:
        return preprocessing
    return replace(preprocessing, mean=tuple(source["mean"]), std=tuple(source["std"]))


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"pretrained weights {path} do not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as error:  # noqa: BLE001 - pickle/safetensors raise many types
        raise CheckpointError(f"cannot read pretrained weights {path}: {error}. Only state dicts of tensors are "
                              "accepted (torch.load with weights_only=True); save with torch.save(model.state_dict())"
                              ) from None
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict (name -> tensor)")
    return state


def _download(fetch, what: str) -> dict[str, torch.Tensor]:
    try:
        return fetch()
    except (OSError, RuntimeError, ValueError) as error:
        if isinstance(error, ValueError) and "weights" not in str(error).lower():
            raise
        raise CheckpointError(f"cannot get the pretrained weights {what}: {error}. Downloads need a network; "
                              "offline, pass a local .safetensors/.pth file or a cnnkit run directory") from None


def _torchvision_state(name: str) -> dict[str, torch.Tensor]:
    from torchvision.models import get_weight

    try:
        weights = get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise CheckpointError(f"unknown torchvision weights {name!r} (e.g. ResNet50_Weights.IMAGENET1K_V2)") from None
    return weights.get_state_dict(progress=True)


def _timm_state(tag: str) -> dict[str, torch.Tensor]:
    import timm

    return timm.create_model(tag, pretrained=True).state_dict()


def _default_state(model_name: str) -> dict[str, torch.Tensor]:
    from cnnkit.registry import get_entry

    entry = get_entry(model_name)
    if entry.source == "torchvision":
        from torchvision.models import get_model_weights

        return get_model_weights(model_name).DEFAULT.get_state_dict(progress=True)
    if entry.source == "timm":
        return _timm_state(model_name)
    raise CheckpointError(f"{model_name} is cnnkit's own model and has no ImageNet weights; pretrain it with "
                          "`cnnkit train` and pass the run directory")


def _match_prefix(ours: list[str], theirs: list[str]) -> tuple[str, str]:
    """(strip, add) so that add + name[len(strip):] maps their names onto ours (wrappers add 'model.' etc.)."""
    our_set = set(ours)
    for strip in ("", "module.", "model.", "_orig_mod."):
        stripped = [name[len(strip):] for name in theirs if name.startswith(strip)]
        if not stripped:
            continue
        for add in ("", "model.", "backbone.", "net."):
            if sum((add + name) in our_set for name in stripped) >= 0.5 * len(stripped):
                return strip, add
    return "", ""


def adapt_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                     source_classes: list[str] | None = None, classes: list[str] | None = None) -> PretrainedReport:
    """Load the fitting part of `state` into `model` (in place) and say what was done."""
    report = PretrainedReport(source)
    own = model.state_dict()
    strip, add = _match_prefix(list(own), list(state))
    renamed = {add + name[len(strip):]: tensor for name, tensor in state.items() if name.startswith(strip)}
    head = head_parameter_names(model)
    reset_head = source_classes is not None and classes is not None and list(source_classes) != list(classes)
    fitted = {}
    for name, target in own.items():
        tensor = renamed.get(name)
        if tensor is None or (reset_head and name in head):
            report.reset.append(name)
        elif tensor.shape == target.shape:
            fitted[name] = tensor
            report.loaded.append(name)
        elif fit_input_channels(tensor, target.shape).shape == target.shape:  # RGB <-> gray first kernels
            fitted[name] = fit_input_channels(tensor, target.shape)
            report.channel_adapted.append(name)
        else:
            report.reset.append(name)
    report.unused = sorted(set(renamed) - set(own))
    if not report.loaded and not report.channel_adapted:
        raise CheckpointError(f"none of the pretrained weights in {source} fit {type(model).__name__} "
                              "(different architecture?)")
    model.load_state_dict(fitted, strict=False)
    return report


FINETUNE_MODES = ("full", "linear", "gradual")


def load_matching(model: nn.Module, spec: str, architecture: dict) -> str:
    """Load the tensors of `spec` that fit `model` by name and shape; say how many.

    `spec` as for classification (a file, a run directory, a torchvision weight name such as
    FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1, timm:NAME). "imagenet" loads the ImageNet classifier
    of the model's backbone or encoder (resnet18 for unet_resnet18 ...) into it. Names are matched with or
    without the backbone's prefix (backbone., encoder.body.); RGB first-layer kernels are summed for
    grayscale models and the gray kernels spread over RGB for colour ones (`fit_input_channels`).
    """
    source = architecture["name"]
    if spec in ("imagenet", "default"):
        source = backbone_name(architecture)
    state, _ = load_pretrained_state(spec, source)
    own = model.state_dict()
    best: dict[str, torch.Tensor] = {}
    for strip in ("", "module.", "model.", "features."):
        for add in ("", "backbone.", "encoder.body.", "backbone.body.", "model.backbone.body.", TRUNK_PREFIX):
            renamed = {add + _trunk_name(k[len(strip):], add): v for k, v in state.items() if k.startswith(strip)}
            fitted = {}
            for name, tensor in renamed.items():
                target = own.get(name)
                if target is None:
                    continue
                tensor = fit_input_channels(tensor, target.shape)
                if tensor.shape == target.shape:
                    fitted[name] = tensor
            if len(fitted) > len(best):
                best = fitted
    if not best:
        raise CheckpointError(f"--pretrained {spec}: none of its tensors fit {architecture['name']} (by name and "
                              "shape)")
    model.load_state_dict(best, strict=False)
    return f"pretrained {spec}: loaded {len(best)} of {len(own)} tensors (the rest keep their fresh initialisation)"


# Detectors and instance segmenters on a zoo trunk (cnnkit.models.detection.zoo_trunk) hold a ResNet's
# layers under this prefix, its conv1/bn1 as stem.0/stem.1.
TRUNK_PREFIX = "model.backbone.trunk.stages."
_TRUNK_STEM = {"conv1.": "stem.0.", "bn1.": "stem.1."}


def _trunk_name(name: str, prefix: str) -> str:
    if prefix != TRUNK_PREFIX:
        return name
    for old, new in _TRUNK_STEM.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name


def fit_input_channels(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A first convolution's kernels fitted to another input channel count, or `tensor` unchanged.

    RGB -> gray: the three kernels summed (a gray image replicated to RGB gave the same response).
    Gray -> RGB (a classifier trained on Fashion-MNIST starting a colour model's encoder): the gray kernel
    spread over the channels, divided by 3, so an RGB image responds as its channel mean did, the
    luminance the gray network saw.
    """
    if tensor.shape == shape or tensor.dim() != 4 or len(shape) != 4 or tensor.shape[0] != shape[0] \
            or tensor.shape[2:] != shape[2:]:
        return tensor
    if tensor.shape[1] == 3 and shape[1] == 1:
        return tensor.sum(dim=1, keepdim=True)
    if tensor.shape[1] == 1 and shape[1] == 3:
        return tensor.expand(-1, 3, -1, -1) / 3
    return tensor


def backbone_name(architecture: dict) -> str:
    """The zoo classifier whose ImageNet weights fit the model's backbone/encoder."""
    name, args = architecture["name"], architecture["args"]
    if name.startswith("unet"):
        encoder = args.get("encoder") or {"unet_resnet18": "resnet18", "unet_resnet34": "resnet34",
                                          "unet_efficientnet_b0": "efficientnet_b0"}.get(name, "plain")
        if encoder == "plain" or encoder.startswith("timm:"):
            raise ConfigError(f"--pretrained imagenet: encoder={encoder!r} has no zoo weights; use a zoo encoder "
                              "(unet_resnet18, encoder=resnet34 ...) or pass --pretrained timm:NAME for timm encoders")
        return encoder
    for backbone in ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large"):
        if name.endswith(backbone) or f"_{backbone}_" in name:
            return backbone
    raise ConfigError(f"no ImageNet backbone known for {name}; pass a weights file or run directory instead")


HEAD_INITS = ("random", "probe")


class TransferSchedule:
    """Trainer callback that sets, at the start of each epoch, which parameters train.

    Frozen parameters get no gradient (requires_grad False), and frozen blocks run in eval mode, so
    their BatchNorm statistics and dropout stay as pretrained. With head_init="probe" it first fits
    the head (`fit_linear_probe`) on the features of `probe_loaders` = (train, val or None), loaders
    of unaugmented images.
    """

    def __init__(self, model: nn.Module, mode: str, unfreeze_every: int = 1, head_init: str = "random",
                 probe_loaders: tuple | None = None, freeze_bn: bool = False):
        if mode not in FINETUNE_MODES:
            raise ModelError(f"finetune={mode!r} is not one of {', '.join(FINETUNE_MODES)}")
        if head_init not in HEAD_INITS:
            raise ModelError(f"head_init={head_init!r} is not one of {', '.join(HEAD_INITS)}")
        if head_init == "probe" and probe_loaders is None:
            raise ModelError("head_init=probe needs the training images to fit the head on (probe_loaders)")
        self.model, self.mode, self.unfreeze_every = model, mode, unfreeze_every
        self.head_init, self.probe_loaders, self.probe = head_init, probe_loaders, None
        self.freeze_bn = freeze_bn
        self.head = classifier_module(model)
        self.blocks = backbone_blocks(model)

    def frozen_blocks(self, epoch: int) -> list[nn.Module]:
        if self.mode == "full":
            return []
        if self.mode == "linear":
            return [module for block in self.blocks for module in block]
        released = epoch // self.unfreeze_every  # gradual: blocks released from the top
        keep_frozen = max(0, len(self.blocks) - released)
        return [module for block in self.blocks[:keep_frozen] for module in block]

    def on_epoch_start(self, trainer, epoch: int) -> None:
        if epoch == 0 and self.head_init == "probe" and self.probe is None:  # a resumed run has its head
            self.fit_head()
            if trainer is None or trainer.dist.is_main:
                print(self.probe.summary(), flush=True)
        frozen = self.frozen_blocks(epoch)
        frozen_ids = {id(p) for module in frozen for p in module.parameters()}
        for parameter in self.model.parameters():
            parameter.requires_grad_(id(parameter) not in frozen_ids)
        for module in frozen:
            module.eval()
        if self.freeze_bn:  # BatchNorm of the layers that train keeps the pretrained statistics too
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def fit_head(self) -> ProbeFit:
        """Set the head to the linear probe fitted on the (frozen, eval-mode) backbone's features."""
        train_loader, val_loader = self.probe_loaders
        train = head_features(self.model, self.head, train_loader)
        val = head_features(self.model, self.head, val_loader) if val_loader is not None else None
        self.probe = fit_linear_probe(train, val, self.head.out_features)
        with torch.no_grad():
            self.head.weight.copy_(self.probe.weight)
            self.head.bias.copy_(self.probe.bias)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for parameter in (self.head.weight, self.head.bias):  # every rank starts from rank 0's fit
                torch.distributed.broadcast(parameter.data, src=0)
        return self.probe

    def describe(self) -> str:
        start = ", head fitted as a linear probe first" if self.head_init == "probe" else ""
        start += ", BatchNorm statistics kept as pretrained" if self.freeze_bn and self.mode != "linear" else ""
        if self.mode == "full":
            return "fine-tuning all layers" + start
        if self.mode == "linear":
            return f"feature extraction: {len(self.blocks)} backbone blocks frozen, head trained" + start
        return (f"gradual unfreezing of {len(self.blocks)} backbone blocks, one every {self.unfreeze_every} "
                "epoch(s)" + start)
