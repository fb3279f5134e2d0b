"""MedMNIST (Yang et al. 2023, "MedMNIST v2") from its published .npz files on local disk: never downloaded.

Users download the files themselves (https://medmnist.com, Zenodo); cnnkit reads them, checks their MD5
against the published value, and can write them as an image folder the classify task trains on.

An .npz holds six arrays (the layout tests/test_medical_data.py builds synthetically):

    train_images, val_images, test_images   uint8 (N, H, W) grey or (N, H, W, 3) colour
    train_labels, val_labels, test_labels   (N, 1) class index, or (N, L) 0/1 for multi-label (ChestMNIST)

The checksums below are the published MD5s of the 28x28 2-D files of MedMNIST v2 (Zenodo record 6496656,
as listed in MedMNIST/MedMNIST medmnist/info.py, v2.1.0); they were not re-computed here (no download).
Files of other sizes (MedMNIST+ 64/128/224) or versions: pass `md5=` yourself, or check=False.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy
import torch

from cnnkit.errors import DataError

# name -> (MD5 of NAME.npz (28x28, v2), task, channels)
PUBLISHED = {
    "pathmnist": ("a8b06965200029087d5bd730944a56c1", "multi-class", 3),
    "chestmnist": ("02c8a6516a18b556561a56cbdd36c4a8", "multi-label", 1),
    "dermamnist": ("0744692d530f8e62ec473284d019b0c7", "multi-class", 3),
    "octmnist": ("c68d92d5b585d8d81f7112f81e2d0842", "multi-class", 1),
    "pneumoniamnist": ("28209eda62fecd6e6a2d98b1501bb15f", "binary-class", 1),
    "retinamnist": ("bd4c0672f1bba3e3a89f0e4e876791e4", "ordinal-regression", 3),
    "breastmnist": ("750601b1f35ba3300ea97c75c52ff8f6", "binary-class", 1),
    "bloodmnist": ("7053d0359d879ad8a5505303e11de1dc", "multi-class", 3),
    "tissuemnist": ("ebe78ee8b05294063de985d821c1c34b", "multi-class", 1),
    "organamnist": ("866b832ed4eeba67bfb9edee1d5544e6", "multi-class", 1),
    "organcmnist": ("0afa5834fb105f7705a7d93372119a21", "multi-class", 1),
    "organsmnist": ("e5c39f1af030238290b9557d9503af9d", "multi-class", 1),
}
SPLITS = ("train", "val", "test")


@dataclass
class MedMNIST:
    """The splits of one MedMNIST file.

    Attributes:
        name: The dataset name from the file name (e.g. "pathmnist").
        images: {split: uint8 (N, C, H, W)}.
        labels: {split: int64 (N,) class indices, or (N, L) 0/1 for multi-label}.
        multilabel: Whether labels are (N, L) 0/1 vectors.
        md5: The file's MD5 (what was checked).
    """

    name: str
    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    multilabel: bool
    md5: str

    @property
    def num_classes(self) -> int:
        train = self.labels["train"]
        return int(train.shape[1]) if self.multilabel else int(train.max()) + 1


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dataset_name(path: str | Path) -> str:
    """"pathmnist_64.npz" -> "pathmnist"."""
    return re.sub(r"(_\d+)?$", "", Path(path).name.removesuffix(".npz").lower())


def read_medmnist(path: str | Path, md5: str | None = None, check: bool = True) -> MedMNIST:
    """Read a MedMNIST .npz from disk (never downloads).

    Args:
        path: The .npz file.
        md5: The expected MD5; default: the published one of the dataset's 28x28 file (see the module docstring).
        check: Compare the file's MD5 with the expected one.

    Raises:
        DataError: Naming the file: missing (with where to get it), checksum mismatch (a partial or different
            download), a missing array, or images and labels of different lengths.
    """
    path = Path(path).expanduser()
    name = dataset_name(path)
    if not path.is_file():
        raise DataError(f"MedMNIST file {path} not found; cnnkit never downloads it: get {path.name} from "
                        "https://medmnist.com (Zenodo) and pass its path")
    actual = file_md5(path)
    expected = md5 or (PUBLISHED[name][0] if name in PUBLISHED and path.name.lower() == f"{name}.npz" else None)
    if check and expected is None:
        raise DataError(f"{path}: no published checksum is known for {path.name}; pass md5=... (from the MedMNIST "
                        "site) or check=False")
    if check and actual != expected.lower():
        raise DataError(f"{path} has MD5 {actual}, not the expected {expected}: a partial or different download; "
                        "download it again (or pass the right md5=)")
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as error:  # noqa: BLE001 - zipfile / numpy errors on bad files
        raise DataError(f"cannot read {path} as a MedMNIST .npz: {error}") from None
    images, labels = {}, {}
    for split in SPLITS:
        for kind in ("images", "labels"):
            if f"{split}_{kind}" not in arrays:
                raise DataError(f"{path} has no {split}_{kind} array (it has {', '.join(sorted(arrays))}); "
                                "not a MedMNIST file")
        pictures, targets = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(pictures) != len(targets):
            raise DataError(f"{path}: {len(pictures)} {split} images but {len(targets)} labels")
        if pictures.dtype != numpy.uint8 or pictures.ndim not in (3, 4):
            raise DataError(f"{path}: {split}_images must be uint8 (N, H, W) or (N, H, W, 3), got "
                            f"{pictures.dtype} {pictures.shape}")
        tensor = torch.from_numpy(pictures)
        images[split] = tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2).contiguous()
        labels[split] = torch.from_numpy(targets.astype(numpy.int64))
    multilabel = labels["train"].ndim == 2 and labels["train"].shape[1] > 1
    if not multilabel:
        labels = {split: value.reshape(-1) for split, value in labels.items()}
    return MedMNIST(name, images, labels, multilabel, actual)


def write_image_folder(data: MedMNIST, out: str | Path, class_names: list[str] | None = None) -> Path:
    """OUT/{train,val,test}/CLASS/NNNNN.png: the layout `cnnkit train --data OUT` reads (classify; it
    carves its own validation split from train/, so OUT/val/ is kept for your own use).

    Raises:
        DataError: For multi-label files (one folder per class cannot hold them).
    """
    from PIL import Image

    if data.multilabel:
        raise DataError(f"{data.name} is multi-label: an image folder holds one class per image")
    names = class_names or [str(k) for k in range(data.num_classes)]
    out = Path(out)
    for split in SPLITS:
        for index, (image, label) in enumerate(zip(data.images[split], data.labels[split].tolist())):
            folder = out / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            pixels = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(folder / f"{index:06d}.png")
    return out
