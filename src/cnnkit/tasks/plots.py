"""Pictures shared by the run report's task sections (each task's `report.py`) and `cnnkit.inspect.report`.

Tasks sit below `inspect` (imports point down), so the helpers both need live here: matplotlib on the Agg
backend, a labelled image grid, PNGs embedded in HTML, a section that reports its own failure, and the
upscaling that keeps drawn boxes and labels readable on small canvases.
"""

from __future__ import annotations

import base64
import html
import math
import textwrap
import time
from pathlib import Path
from typing import Callable

import torch

READABLE_SIDE = 256  # drawings of smaller images are upscaled to this shorter side before boxes and labels


def pyplot():
    """matplotlib.pyplot on the Agg backend: files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path) -> Path:
    """Save `figure` as a PNG at `path` (folders made) and close it."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot().close(figure)
    return path


def plot_image_grid(images: torch.Tensor | list[torch.Tensor], labels: list[str], title: str, path: str | Path,
                    columns: int | None = None, cmap: str = "gray", tile_inches: float = 1.9) -> Path:
    """Draw uint8 images (C, H, W), C = 1 or 3, sizes may differ, as a grid with a label above each image.

    One-channel images use `cmap` over the full uint8 range; three-channel images are drawn as RGB.
    """
    plt = pyplot()
    count = len(images)
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(tile_inches * columns + 0.2, (tile_inches + 0.1) * rows + 0.6),
                                squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < count:
            picture = images[index].cpu()
            if picture.shape[0] == 1:
                axis.imshow(picture[0].numpy(), cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
            else:
                axis.imshow(picture[:3].permute(1, 2, 0).numpy(), interpolation="nearest")
            axis.set_title(labels[index], fontsize=7)
    # A long title on a narrow grid (maximize's 2-4 images) was clipped: wrap it to the figure's width
    # (about 14 characters per inch at 10 pt).
    width_inches = figure.get_size_inches()[0]
    figure.suptitle(textwrap.fill(title, width=max(20, int(width_inches * 14))), fontsize=10)
    return save_figure(figure, Path(path))


def upscale(image: torch.Tensor, min_side: int = READABLE_SIDE) -> tuple[torch.Tensor, int]:
    """(uint8 (C, H, W) enlarged by a whole factor (nearest neighbour) so its shorter side is >= min_side, factor)."""
    factor = max(1, math.ceil(min_side / max(1, min(image.shape[-2:]))))
    if factor == 1:
        return image, 1
    return image.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1), factor


def html_image(path: Path, alt: str, css: str = "") -> str:
    """An <img> with the PNG embedded (data URI), captioned with the file's name beside the report."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure class="{css}"><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>report/{html.escape(path.name)}</figcaption></figure>")


def missing(error: Exception) -> str:
    """The note a section shows instead of what it could not draw."""
    return f'<p class="missing">Not available: {html.escape(str(error) or type(error).__name__)}</p>'


def guarded(section_id: str, title: str, build: Callable[[], str]) -> tuple[str, str, str]:
    """(id, title, build()); an error becomes a short note in the section instead of a lost report."""
    try:
        return section_id, title, build()
    except Exception as error:  # noqa: BLE001 - the report is written at the end of every run: never lose it
        return section_id, title, missing(error)


def check_time(deadline: float) -> None:
    """Raise (a note in the section) once the report's time budget is spent."""
    if time.perf_counter() > deadline:
        raise TimeoutError("skipped: the time budget (max_seconds) was spent; `cnnkit report RUN_DIR "
                           "--max-seconds 600` draws it")


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table; floats with 4 decimals, None as "-"."""
    def cell(value) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))

    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(value)}</td>" for value in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
