"""JPEG decoding on the GPU for streamed image folders (`decode=gpu`): the workers only read the files' bytes.

On a GPU, decoding JPEGs in DataLoader workers is often what the GPU waits for (a large photo is ~10-30 ms of
CPU per image). `torchvision.io.decode_jpeg(list_of_bytes, device="cuda")` decodes a whole batch with nvJPEG
instead (torchvision does this well; nothing here is hand-written). The path:

1. Workers read each file's bytes (plain `bytes`, cheap to send between processes) for .jpg/.jpeg files; other formats are
   decoded and augmented in the worker exactly as `StreamingLoader` does.
2. The main process decodes the batch's JPEGs on the device in one call, converts grey/RGB, then applies the
   same per-sample pipeline (resized crop, flips ...: torchvision.transforms.v2 runs on CUDA tensors) with the
   sample's own seed, so augmentation follows the same (seed, epoch, position) rule as the CPU path.
3. A JPEG the device cannot decode is decoded once more on the CPU (PIL, `decode_image`); only a file neither
   can read counts as unreadable, with the CPU path's accounting.

Order, sharding, unreadable files and batch counts are `StreamingLoader`'s: this class changes only where the
bytes become pixels (its `_collate` and `_on_device` hooks). The pixels may differ from PIL's by a grey level
(two JPEG decoders), which is why this is a setting and not the default. On the CPU (`device=cpu`) the same
code runs with torchvision's CPU decoder, which is how the tests check it; it has not yet been timed on a GPU.
torchvision 0.29 marks its decoders deprecated in favour of TorchCodec (which has a CUDA JPEG decoder too):
the move is one function here when cnnkit's torch pin allows it.
"""

from __future__ import annotations

import torch

from cnnkit.data.images import decode_image
from cnnkit.data.streaming import StreamingLoader, _SeededFileDataset
from cnnkit.errors import DataError

JPEG_SUFFIXES = (".jpg", ".jpeg")


class _BytesOrDecoded(_SeededFileDataset):
    """Keyed like `_SeededFileDataset`; a JPEG comes back as its bytes, anything else decoded and augmented."""

    def __getitem__(self, key: tuple[int, int]):
        index, sample_seed = key
        path = self.paths[index]
        if path.suffix.lower() in JPEG_SUFFIXES:
            try:
                data = path.read_bytes()  # plain bytes: a tensor per file would cost a shared-memory handle each
            except OSError:
                return None
            return ("jpeg", data, self.labels[index], index, sample_seed)
        sample = super().__getitem__(key)
        return None if sample is None else ("decoded", sample[0], sample[1], index, sample_seed)


def _as_tensor(data: bytes) -> torch.Tensor:
    """A file's bytes as the uint8 1-D tensor decode_jpeg takes."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


class GpuJpegLoader(StreamingLoader):
    """`StreamingLoader` whose JPEGs are decoded on `device` in batches (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        base = self.dataset
        self.dataset = _BytesOrDecoded(base.paths, base.labels, base.classes, base.channels, base.size,
                                       base.transform)

    @staticmethod
    def _collate(samples):
        kept = [sample for sample in samples if sample is not None]
        return kept or None

    def _on_device(self, batch):
        from torchvision.io import ImageReadMode, decode_jpeg

        jpegs = [sample for sample in batch if sample[0] == "jpeg"]
        decoded = {}
        if jpegs:
            mode = ImageReadMode.GRAY if self.channels == 1 else ImageReadMode.RGB
            try:
                images = decode_jpeg([_as_tensor(sample[1]) for sample in jpegs], mode=mode, device=self.device)
            except RuntimeError:  # one bad file fails the batch call: decode them one by one
                images = [self._decode_one(_as_tensor(sample[1]), mode) for sample in jpegs]
            for sample, image in zip(jpegs, images):
                if image is None:
                    image = self._decode_on_cpu(sample[3])
                if image is not None:
                    decoded[sample[3]] = self._augment(image, sample[4])
        images, labels, indices = [], [], []
        for kind, data, label, index, _ in batch:
            image = data.to(self.device, non_blocking=True) if kind == "decoded" else decoded.get(index)
            if image is None:
                continue
            images.append(image)
            labels.append(label)
            indices.append(index)
        if not images:
            return None
        return torch.stack(images), torch.tensor(labels), torch.tensor(indices)

    def _decode_one(self, data: torch.Tensor, mode):
        from torchvision.io import decode_jpeg

        try:
            return decode_jpeg(data, mode=mode, device=self.device)
        except RuntimeError:
            return None

    def _decode_on_cpu(self, index: int) -> torch.Tensor | None:
        try:
            return decode_image(self.dataset.paths[index], self.channels, None).to(self.device)
        except DataError:
            return None

    def _augment(self, image: torch.Tensor, sample_seed: int) -> torch.Tensor:
        """The sample's pipeline (resize or resized crop, flips ...) on the device, drawing from its own seed."""
        from torchvision.transforms import v2

        dataset = self.dataset
        if dataset.size is not None and tuple(image.shape[-2:]) != tuple(dataset.size):
            image = v2.functional.resize(image, list(dataset.size), antialias=True)
        if dataset.transform is None:
            return image
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(sample_seed)
        try:
            return dataset.transform(image)
        finally:
            generator.set_state(state)
