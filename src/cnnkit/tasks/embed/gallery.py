"""A gallery of enrolled embeddings: names and unit vectors, searched by cosine similarity.

Stored as one safetensors file (the (N, D) embeddings) whose metadata holds the names and the run it was
made with, written atomically: no pickles. Search is exact (one matrix product): measured in
benchmarks/embedding.py, it stays within interactive latency up to the sizes reported there; an approximate
index (FAISS) is the next step for larger galleries and is not built in.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cnnkit.errors import CheckpointError, DataError
from cnnkit.files import atomic_write

KEY = "cnnkit_gallery"


class Gallery:
    """Enrolled (name, embedding) pairs. `Gallery.open(path)` reads one, or starts an empty one."""

    def __init__(self, embeddings: torch.Tensor | None = None, names: list[str] | None = None, run: str = ""):
        self.embeddings = embeddings if embeddings is not None else torch.zeros(0, 0)
        self.names = list(names or [])
        self.run = run

    @classmethod
    def open(cls, path: str | Path) -> Gallery:
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
            record = json.loads(metadata[KEY])
            embeddings, names = tensors["embeddings"], list(record["names"])
        except (SafetensorError, OSError, KeyError, ValueError, TypeError) as error:
            raise CheckpointError(f"{path} is not a cnnkit gallery ({type(error).__name__}: {error}); "
                                  "make a new one with `cnnkit gallery add`") from None
        if embeddings.dim() != 2 or len(names) != len(embeddings):
            raise CheckpointError(f"{path}: {len(names)} names for {tuple(embeddings.shape)} embeddings; the file is "
                                  "damaged: make it again with `cnnkit gallery add`")
        return cls(embeddings.float(), names, record.get("run", ""))

    def add(self, names: list[str], embeddings: torch.Tensor) -> None:
        embeddings = torch.nn.functional.normalize(embeddings.float(), dim=1)
        if len(self.names) and embeddings.shape[1] != self.embeddings.shape[1]:
            raise DataError(f"the gallery holds {self.embeddings.shape[1]}-d embeddings, these are "
                            f"{embeddings.shape[1]}-d: a gallery belongs to one run")
        self.embeddings = embeddings if not len(self.names) else torch.cat([self.embeddings, embeddings])
        self.names += list(names)

    def remove(self, name: str) -> int:
        """Drop every entry called `name`; returns how many."""
        keep = [index for index, entry in enumerate(self.names) if entry != name]
        removed = len(self.names) - len(keep)
        self.embeddings, self.names = self.embeddings[keep], [self.names[i] for i in keep]
        return removed

    def search(self, embeddings: torch.Tensor, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """For each query embedding, the `top_k` most similar entries (name, cosine similarity), best first."""
        if not self.names:
            raise DataError("the gallery is empty; add identities with `cnnkit gallery add`")
        queries = torch.nn.functional.normalize(embeddings.float(), dim=1)
        scores, indices = (queries @ self.embeddings.T).topk(min(top_k, len(self.names)), dim=1)
        return [[(self.names[i], round(float(s), 4)) for s, i in zip(row_s, row_i)]
                for row_s, row_i in zip(scores.tolist(), indices.tolist())]

    def save(self, path: str | Path) -> None:
        metadata = {KEY: json.dumps({"names": self.names, "run": self.run})}
        tensors = {"embeddings": self.embeddings.contiguous()}
        atomic_write(path, lambda temporary: save_file(tensors, temporary, metadata=metadata))
