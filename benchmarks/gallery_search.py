"""Gallery search: exact (one matrix product) against the approximate HNSW index (FAISS), by gallery size.

Where does exact search stop answering in ~10 ms, and what does the approximate index cost in build time
and recall? The galleries are clustered like real embeddings: identities of 5 images each, every image its
identity's random 128-d centre plus noise, L2-normalised; queries are new images of enrolled identities.
Recall@1 = how often the index's best match is exact search's; recall@5 = the fraction of exact search's top 5
that the index also returns. Both through
cnnkit.tasks.embed.Gallery (`search(..., exact=True)` and the index `save(approximate=True)` writes).

    .venv/bin/python benchmarks/gallery_search.py                       # 10k, 100k, 300k, 1M
    .venv/bin/python benchmarks/gallery_search.py --sizes 10000 100000 --quick

Writes benchmarks/results/gallery_search.json and .md.
"""

from __future__ import annotations

import argparse
import time

import _common

NAME = "gallery_search"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000, 1_000_000])
    parser.add_argument("--dimension", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200, help="queries per size (latency: one at a time)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results-dir")
    return parser.parse_args()


def measure(size: int, dimension: int, queries: int) -> dict:
    import torch

    from cnnkit.tasks.embed import Gallery

    generator = torch.Generator().manual_seed(size)
    identities = max(1, size // 5)
    centres = torch.randn(identities, dimension, generator=generator)
    owner = torch.arange(size) % identities
    vectors = torch.nn.functional.normalize(centres[owner] + 0.6 * torch.randn(size, dimension, generator=generator),
                                            dim=1)
    asked = torch.randint(0, identities, (queries,), generator=generator)
    probes = torch.nn.functional.normalize(centres[asked] + 0.6 * torch.randn(queries, dimension, generator=generator),
                                           dim=1)
    gallery = Gallery(vectors, [str(i) for i in range(size)])
    started = time.perf_counter()
    gallery.build_index()
    build_seconds = time.perf_counter() - started

    def latency(exact: bool) -> tuple[float, list]:
        gallery.search(probes[:1], 5, exact=exact)  # warm-up
        times, answers = [], []
        for index in range(queries):
            started = time.perf_counter()
            answers.append(gallery.search(probes[index:index + 1], 5, exact=exact)[0])
            times.append((time.perf_counter() - started) * 1000)
        return _common.summarize(times)["median"], answers

    exact_ms, exact_answers = latency(True)
    approximate_ms, approximate_answers = latency(False)
    recall = sum(len({n for n, _ in a} & {n for n, _ in e}) for a, e in zip(approximate_answers, exact_answers)) / (
        5 * queries)
    recall_1 = sum(a[0][0] == e[0][0] for a, e in zip(approximate_answers, exact_answers)) / queries
    row = {"size": size, "exact_ms": exact_ms, "hnsw_ms": approximate_ms, "hnsw_recall_at_1": recall_1,
           "hnsw_recall_at_5": recall, "hnsw_build_seconds": build_seconds}
    print(f"{size}: exact {exact_ms:.2f} ms, HNSW {approximate_ms:.3f} ms (recall@1 {recall_1:.3f}, @5 {recall:.3f}, "
          f"built in {build_seconds:.1f} s)", flush=True)
    return row


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)
    header = _common.run_header(args.quick)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    sizes = [1000, 5000] if args.quick else args.sizes
    queries = 20 if args.quick else args.queries
    rows = [measure(size, args.dimension, queries) for size in sizes]
    table = _common.markdown_table(
        ["gallery size", "exact ms / query", "HNSW ms / query", "HNSW recall@1", "HNSW recall@5", "HNSW build s"],
        [[f"{r['size']:,}", f"{r['exact_ms']:.2f}", f"{r['hnsw_ms']:.3f}", f"{r['hnsw_recall_at_1']:.3f}",
          f"{r['hnsw_recall_at_5']:.3f}",
          f"{r['hnsw_build_seconds']:.1f}"] for r in rows])
    body = (f"{args.dimension}-d clustered embeddings (5 per identity), one query at a time, top 5, median of "
            f"{queries} queries, {args.threads} threads; HNSW: FAISS IndexHNSWFlat, M=32, efSearch=128 "
            f"(cnnkit.tasks.embed.gallery). `cnnkit gallery add` writes the index from 100,000 entries.\n\n{table}\n")
    _common.finish(NAME, "Gallery search: exact against the approximate index", header, {"results": rows}, body,
                   args.results_dir)


if __name__ == "__main__":
    main()
