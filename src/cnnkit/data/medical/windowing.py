"""Windowing: scanner values (CT Hounsfield units, MRI intensities) -> float [0, 1] model inputs.

A CT slice holds ~4000 HU levels; a screen (and an 8-bit PNG) shows 256. A *window* (centre C, width W)
picks the band that matters for one tissue and maps it linearly onto [0, 1], clipping the rest. The formula
is DICOM's LINEAR VOI function (PS3.3 C.11.2.1.2.1), the one `pydicom.pixels.apply_voi_lut` uses and the
tests compare with:

    x <= C - 0.5 - (W - 1) / 2  ->  0
    x >  C - 0.5 + (W - 1) / 2  ->  1
    otherwise                   ->  (x - (C - 0.5)) / (W - 1) + 0.5

Window specs (the `window=` setting, stored in a checkpoint's preprocessing and applied again by `predict`):

    brain          C 40,   W 80     (CT head: grey/white matter, blood)
    subdural       C 75,   W 215
    stroke         C 32,   W 8
    lung           C -600, W 1500
    mediastinum    C 50,   W 350
    soft-tissue    C 50,   W 400    (abdomen)
    liver          C 30,   W 150
    bone           C 400,  W 1800
    C,W            any centre and width, in the volume's units (HU for CT), e.g. "40,80"
    dicom          each DICOM file's own first Window Center / Width (CT or MR); files without one: minmax
    percentile     MRI (arbitrary units): clip to the volume's 0.5th .. 99.5th percentile, then scale to [0, 1];
                   "percentile:1,99" sets the two percentiles
    minmax         the volume's own minimum -> 0 and maximum -> 1

Presets are the usual radiology values (Radiopaedia, "Windowing (CT)"). For a volume, percentile and minmax
use the whole volume's values, so every slice of a study is scaled alike; for a single image, its own.
MONOCHROME1 images (bright = low values, some X-ray) are inverted *after* windowing by the DICOM reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy

from cnnkit.errors import ConfigError

PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (32.0, 8.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft-tissue": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
}
DEFAULT_PERCENTILES = (0.5, 99.5)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class Window:
    """A parsed window spec.

    Attributes:
        kind: "linear" (centre/width), "dicom" (the file's own), "percentile" or "minmax".
        center: Window centre (linear).
        width: Window width (linear), >= 1.
        low, high: The percentiles (percentile).
        spec: The text it was parsed from (what the checkpoint stores).
    """

    kind: str
    spec: str
    center: float = 0.0
    width: float = 1.0
    low: float = DEFAULT_PERCENTILES[0]
    high: float = DEFAULT_PERCENTILES[1]


def parse_window(spec: str | None) -> Window:
    """Read a window spec (see the module docstring); None means "minmax".

    Raises:
        ConfigError: Naming the spec and the accepted forms.
    """
    text = "minmax" if spec is None else str(spec).strip().lower().replace("_", "-")
    if text in PRESETS:
        center, width = PRESETS[text]
        return Window("linear", text, center, width)
    if text in ("dicom", "minmax"):
        return Window(text, text)
    match = re.fullmatch(rf"\(?\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)?", text)
    if match:
        center, width = float(match.group(1)), float(match.group(2))
        if width < 1:
            raise ConfigError(f"window={spec!r}: the width must be at least 1 (DICOM's LINEAR window), got {width:g}")
        return Window("linear", f"{center:g},{width:g}", center, width)
    match = re.fullmatch(rf"percentile(?::\s*({_NUMBER})\s*,\s*({_NUMBER}))?", text)
    if match:
        low, high = (float(match.group(1)), float(match.group(2))) if match.group(1) else DEFAULT_PERCENTILES
        if not 0 <= low < high <= 100:
            raise ConfigError(f"window={spec!r}: percentiles must satisfy 0 <= low < high <= 100")
        return Window("percentile", f"percentile:{low:g},{high:g}", low=low, high=high)
    raise ConfigError(f"window={spec!r} is not a window: use one of {', '.join(PRESETS)}, a centre and width "
                      "\"C,W\" (e.g. 40,80), dicom (the file's own), percentile[:LOW,HIGH] (MRI) or minmax")


def linear_window(values: numpy.ndarray, center: float, width: float) -> numpy.ndarray:
    """DICOM's LINEAR VOI function onto [0, 1] (float32), exactly as the module docstring writes it."""
    if width < 1:
        raise ConfigError(f"window width {width:g} must be at least 1")
    values = numpy.asarray(values, dtype=numpy.float64)
    scaled = (values - (center - 0.5)) / (width - 1) + 0.5 if width > 1 else (values > center - 0.5).astype(float)
    scaled = numpy.where(values <= center - 0.5 - (width - 1) / 2, 0.0, scaled)
    scaled = numpy.where(values > center - 0.5 + (width - 1) / 2, 1.0, scaled)
    return scaled.astype(numpy.float32)


def clip_scale(values: numpy.ndarray, low: float, high: float) -> numpy.ndarray:
    """Clip to [low, high] and map it to [0, 1] (float32); a constant range gives 0."""
    values = numpy.asarray(values, dtype=numpy.float64)
    if not high > low:
        return numpy.zeros(values.shape, dtype=numpy.float32)
    return ((numpy.clip(values, low, high) - low) / (high - low)).astype(numpy.float32)


def window_bounds(window: Window, values: numpy.ndarray,
                  dicom_window: tuple[float, float] | None = None) -> tuple[str, float, float]:
    """("linear", C, W) or ("clip", low, high): what `apply_window` does to `values` (a whole volume)."""
    if window.kind == "linear":
        return "linear", window.center, window.width
    if window.kind == "dicom" and dicom_window is not None:
        return "linear", float(dicom_window[0]), max(1.0, float(dicom_window[1]))
    finite = numpy.asarray(values, dtype=numpy.float64)
    finite = finite[numpy.isfinite(finite)]
    if finite.size == 0:
        return "clip", 0.0, 0.0
    if window.kind == "percentile":
        low, high = numpy.percentile(finite, [window.low, window.high])
        return "clip", float(low), float(high)
    return "clip", float(finite.min()), float(finite.max())


def apply_window(values: numpy.ndarray, window: Window | str | None,
                 dicom_window: tuple[float, float] | None = None) -> numpy.ndarray:
    """Scanner values (any shape) -> float32 in [0, 1] through `window`.

    Args:
        values: HU (CT, after the modality LUT) or raw intensities; a whole volume for percentile/minmax.
        window: A Window or a spec string.
        dicom_window: The file's (centre, width), used by window="dicom".
    """
    window = window if isinstance(window, Window) else parse_window(window)
    kind, first, second = window_bounds(window, values, dicom_window)
    if kind == "linear":
        return linear_window(values, first, second)
    return clip_scale(values, first, second)
