"""A gallery of enrolled embeddings: names and unit vectors, searched by cosine similarity.

Stored as one safetensors file (the (N, D) embeddings) whose metadata holds the names and the run it was
made with, written atomically: no pickles.

Search is exact (one matrix product) up to APPROXIMATE_FROM entries. Past that, where exact search no longer
answers in ~10 ms on a laptop CPU (benchmarks/embedding.py measures both), `save` also writes an approximate
index next to the gallery, `GALLERY.faiss`: FAISS's HNSW graph over inner products (FAISS does this well;
nothing here is hand-written), in FAISS's own file format (not a pickle). `search` uses it when it matches
the gallery (same entry count and fingerprint) and `exact=False`; FAISS is the optional extra
`cnnkit[gallery]`: without it, search stays exact and says nothing is lost but time.
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
# Galleries from this size get an approximate index (exact search: ~10 ms a query near 100k 128-d entries on
# a 2-core EPYC, benchmarks/embedding.py).
APPROXIMATE_FROM = 100_000
HNSW_NEIGHBOURS = 32  # M: graph degree (FAISS's default range 16-64; 32: recall@5 > 0.95 measured at 128-d)
HNSW_SEARCH_DEPTH = 128  # efSearch: candidates kept while searching (higher: better recall, slower)


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _fingerprint(embeddings: torch.Tensor) -> str:
    """Cheap identity of the vectors an index was built from: count and a few sums."""
    if embeddings.numel() == 0:
        return "0"
    return f"{len(embeddings)}:{float(embeddings.sum()):.6e}:{float(embeddings[:, 0].abs().sum()):.6e}"


class Gallery:
    """Enrolled (name, embedding) pairs. `Gallery.open(path)` reads one, or starts an empty one."""

    def __init__(self, embeddings: torch.Tensor | None = None, names: list[str] | None = None, run: str = ""):
        self.embeddings = embeddings if embeddings is not None else torch.zeros(0, 0)
        self.names = list(names or [])
        self.run = run
        self.index = None  # a FAISS index of exactly these embeddings, or None (exact search)

    def build_index(self) -> bool:
        """Build the approximate (HNSW) index of the current embeddings; False when FAISS is not installed."""
        faiss = _faiss()
        if faiss is None or not self.names:
            self.index = None
            return False
        index = faiss.IndexHNSWFlat(self.embeddings.shape[1], HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_SEARCH_DEPTH
        index.add(self.embeddings.contiguous().numpy())
        self.index = index
        return True

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
        gallery = cls(embeddings.float(), names, record.get("run", ""))
        index_path, faiss = _index_path(path), _faiss()
        if index_path.is_file() and faiss is not None and record.get("index") == _fingerprint(gallery.embeddings):
            try:
                gallery.index = faiss.read_index(str(index_path))
                gallery.index.hnsw.efSearch = HNSW_SEARCH_DEPTH
            except RuntimeError:  # damaged: exact search still answers
                gallery.index = None
        return gallery

    def add(self, names: list[str], embeddings: torch.Tensor) -> None:
        embeddings = torch.nn.functional.normalize(embeddings.float(), dim=1)
        if len(self.names) and embeddings.shape[1] != self.embeddings.shape[1]:
            raise DataError(f"the gallery holds {self.embeddings.shape[1]}-d embeddings, these are "
                            f"{embeddings.shape[1]}-d: a gallery belongs to one run")
        self.embeddings = embeddings if not len(self.names) else torch.cat([self.embeddings, embeddings])
        self.names += list(names)
        if self.index is not None:  # HNSW takes new entries in place
            self.index.add(embeddings.contiguous().numpy())

    def remove(self, name: str) -> int:
        """Drop every entry called `name`; returns how many."""
        keep = [index for index, entry in enumerate(self.names) if entry != name]
        removed = len(self.names) - len(keep)
        self.embeddings, self.names = self.embeddings[keep], [self.names[i] for i in keep]
        if removed:
            self.index = None  # HNSW cannot drop entries: rebuilt on save
        return removed

    def search(self, embeddings: torch.Tensor, top_k: int = 5, exact: bool = False) -> list[list[tuple[str, float]]]:
        """For each query embedding, the `top_k` most similar entries (name, cosine similarity), best first.

        Uses the approximate index when the gallery has a matching one (see the module docstring) and not `exact`.
        """
        if not self.names:
            raise DataError("the gallery is empty; add identities with `cnnkit gallery add`")
        queries = torch.nn.functional.normalize(embeddings.float(), dim=1)
        k = min(top_k, len(self.names))
        if self.index is not None and not exact:
            scores_np, indices_np = self.index.search(queries.numpy(), k)
            scores, indices = torch.from_numpy(scores_np), torch.from_numpy(indices_np)
        else:
            scores, indices = (queries @ self.embeddings.T).topk(k, dim=1)
        return [[(self.names[i], round(float(s), 4)) for s, i in zip(row_s, row_i)]
                for row_s, row_i in zip(scores.tolist(), indices.tolist())]

    def save(self, path: str | Path, approximate: bool | None = None) -> None:
        """Write the gallery; with `approximate` (None: from APPROXIMATE_FROM entries, when FAISS is installed)
        also its HNSW index, GALLERY.faiss. The gallery is written last: its fingerprint names the index."""
        if approximate is None:
            approximate = len(self.names) >= APPROXIMATE_FROM
        record = {"names": self.names, "run": self.run}
        index_path = _index_path(path)
        if approximate and (self.index is not None and self.index.ntotal == len(self.names) or self.build_index()):
            faiss = _faiss()
            atomic_write(index_path, lambda temporary: faiss.write_index(self.index, str(temporary)))
            record["index"] = _fingerprint(self.embeddings)
        elif index_path.is_file():
            index_path.unlink()  # an index of other embeddings must not answer for these
        metadata = {KEY: json.dumps(record)}
        tensors = {"embeddings": self.embeddings.contiguous()}
        atomic_write(path, lambda temporary: save_file(tensors, temporary, metadata=metadata))


def _index_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".faiss")
