"""Small checks the command groups share."""

from __future__ import annotations

from pathlib import Path

from cnnkit.errors import CnnkitError


def require_images(images: list[str]) -> None:
    """Raise CnnkitError naming the first of `images` that is not a file, before any model is loaded."""
    for image in images:
        if not Path(image).is_file():
            raise CnnkitError(f"image {image} not found")
