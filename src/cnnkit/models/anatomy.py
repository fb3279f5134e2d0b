"""Where a classifier's parts are: its head (the final classification layer) and its backbone's blocks.

Transfer learning needs both for any model of the zoo, whichever library built it: the head is reset
or fitted on its own, the blocks are frozen and released one by one (engine/transfer.py), and the
multi-level head (multilevel.py) reads features from the blocks.
"""

from __future__ import annotations

import torch.nn as nn

from cnnkit.errors import ModelError


def classifier_module(model: nn.Module) -> nn.Module:
    """The model's final classification layer (its "head").

    timm models (and cnnkit's multi-level head) say so themselves (`get_classifier`); otherwise the last
    nn.Linear registered in the model, which is the head of every torchvision classifier and of cnnkit's
    own models.
    """
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(model).__name__} has no nn.Linear classifier to reset or train on its own")
    return linears[-1]


def backbone_blocks(model: nn.Module) -> list[list[nn.Module]]:
    """The backbone as blocks from the input to the top: what gradual unfreezing releases one by one.

    Walks down through wrappers with a single parametrised child, then takes the children that hold
    parameters (the items of Sequential/ModuleList containers count as blocks of their own), leaving
    out the head. A model that knows its blocks says so (`feature_blocks()`, the multi-level head).
    """
    if hasattr(model, "feature_blocks"):
        return model.feature_blocks()
    head = classifier_module(model)
    module = model
    while True:
        children = [child for child in module.children() if any(True for _ in child.parameters())]
        if len(children) == 1 and children[0] is not head and not isinstance(children[0], (nn.Conv2d, nn.Linear)):
            module = children[0]
            continue
        break
    blocks = []
    for child in children:
        if child is head:
            continue
        # A container of composite blocks (ResNet's layer1 = [BasicBlock, ...]) yields its blocks; a
        # container of plain layers (a conv-bn-act stem) is one block.
        parts = list(child.children()) if isinstance(child, (nn.Sequential, nn.ModuleList)) else []
        composite = parts and all(any(True for _ in part.children()) for part in parts
                                  if any(True for _ in part.parameters()))
        items = parts if composite else [child]
        for item in items:
            if any(True for _ in item.parameters()) and not any(m is head for m in item.modules()):
                blocks.append([item])
    return blocks


def replace_module(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put `new` where `old` is registered inside `model` (by identity)."""
    for name, module in model.named_modules():
        if module is old and name:
            parent_name, _, attribute = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attribute, new)  # containers' items too ("12"): their names need not be 0..n-1
            return
    raise ModelError(f"{type(old).__name__} is not a submodule of {type(model).__name__}")
