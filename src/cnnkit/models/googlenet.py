"""GoogLeNet (Inception v1): Szegedy et al. 2015, "Going Deeper with Convolutions", CVPR.
The implementation is torchvision's (`torchvision.models.GoogLeNet`, with batch normalisation after every
convolution, which the paper predates), subclassed only so that forward always returns logits.

Auxiliary classifiers: the paper attaches two (after inception 4a and 4d) and adds their losses to the
main loss "with a discount weight (0.3)" during training; at inference they are discarded. Here, with
`aux_logits=True` (the default), forward in training mode stores the two auxiliary logits on the model
(`model.aux_logits_out`) and returns only the main logits; `auxiliary_loss` turns them into the weighted
loss. A task adds it like this:

    logits = model(images)                      # (B, K), in train and eval mode alike
    loss = F.cross_entropy(logits, targets)
    aux = auxiliary_loss(model, targets, F.cross_entropy)
    if aux is not None:                         # None in eval mode and for every other model
        loss = loss + aux                       # main + 0.3 * (aux1 + aux2)

`aux_logits=False` builds the network without them (6.6M parameters, the paper's inference network).

Deviations from the paper: batch normalisation (torchvision's); the auxiliary heads pool adaptively to
4x4 instead of a 5x5/3 average pool (the same 4x4 at 224 px); `drop_rate` defaults to the paper's 0.4
(torchvision's default is 0.2); the auxiliary heads keep the paper's 0.7 dropout.

in_chans: the first convolution (7x7, stride 2) is replaced by a fresh one taking `in_chans` channels.
Small inputs (< 64 px): that convolution becomes 3x3 with stride 1 and the max-pool after it is removed,
so 28x28 images reach inception 3 at 14x14, 4 at 7x7 and 5 at 4x4 (the paper: 28, 14 and 7 at 224 px).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torchvision.models as tvm

from cnnkit.models.adapt import check_args, is_small, new_conv, zoo_input_size
from cnnkit.registry import register_model

AUX_LOSS_WEIGHT = 0.3  # Szegedy et al. 2015, section 5: the auxiliary losses' discount weight
PAPER_DROPOUT = 0.4  # section 5: "a dropout layer with 40% ratio of dropped outputs" before the classifier


class GoogLeNet(tvm.GoogLeNet):
    """torchvision's GoogLeNet whose forward returns logits (B, num_classes) in training mode too.

    In training mode with auxiliary classifiers, their logits are kept in `aux_logits_out`
    (aux1 after inception 4a, aux2 after 4d), else `aux_logits_out` is None.
    """

    aux_logits_out: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, aux2, aux1 = self._forward(self._transform_input(x))  # torchvision's order
        self.aux_logits_out = (aux1, aux2) if aux1 is not None and aux2 is not None else None
        return logits


def auxiliary_loss(model: nn.Module, targets: torch.Tensor,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
    """The paper's auxiliary loss, 0.3 * (loss(aux1) + loss(aux2)), of the model's last forward.

    Call it right after `model(images)` in a training step and add the result to the main loss. It
    reads and clears the auxiliary logits that forward stored, so the graph they hold is not kept.

    Args:
        model: The model just run; may be wrapped in DistributedDataParallel or torch.compile.
        targets: The batch's targets, as passed to `loss_fn` for the main logits.
        loss_fn: The main loss function, called as loss_fn(aux_logits, targets).

    Returns:
        The weighted auxiliary loss, or None when the model produced no auxiliary logits (eval mode,
        aux_logits=False, or a model without auxiliary classifiers).
    """
    model = getattr(model, "module", model)  # DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile
    outputs = getattr(model, "aux_logits_out", None)
    if outputs is None:
        return None
    model.aux_logits_out = None
    return AUX_LOSS_WEIGHT * sum(loss_fn(logits, targets) for logits in outputs)


@register_model(family="googlenet", source="torchvision")
def googlenet(num_classes: int = 1000, in_chans: int = 3, input_size: int | tuple[int, int] = 224,
              drop_rate: float | None = None, aux_logits: bool = True) -> GoogLeNet:
    """GoogLeNet / Inception v1 (Szegedy et al. 2015) with BN, 6.6M parameters on ImageNet (+6.4M aux heads)."""
    check_args(num_classes, in_chans, drop_rate)
    model = GoogLeNet(num_classes=num_classes, aux_logits=aux_logits, transform_input=False,
                      init_weights=True, dropout=PAPER_DROPOUT if drop_rate is None else drop_rate,
                      dropout_aux=0.7)
    if is_small(zoo_input_size(input_size)):
        model.conv1.conv = new_conv(model.conv1.conv, in_chans, kernel_size=3, stride=1)
        model.maxpool1 = nn.Identity()
    elif in_chans != 3:
        model.conv1.conv = new_conv(model.conv1.conv, in_chans)
    return model
