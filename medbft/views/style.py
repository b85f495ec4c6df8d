"""The one figure style: a paper's column width, small but legible type, colour-blind-safe
colours, every axis labelled with its unit.

Why this exists: every figure medbft draws should drop into a two-column paper unchanged and
look like its siblings. Figures are 3.5 in wide (an IEEE/ACM column), text is 7-8 pt, lines
are thin, colours come from the Okabe-Ito palette (distinguishable with the common colour
vision deficiencies and in greyscale by lightness). Nothing here knows what is plotted.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from cycler import cycler
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medbft.views import DEFAULT_FORMATS, FORMATS

__all__ = [
    "COLUMN_WIDTH_IN",
    "DEFAULT_FORMATS",
    "FAULT_COLOURS",
    "FAULT_CYCLE",
    "FORMATS",
    "PALETTE",
    "ROLE_COLOURS",
    "figure",
    "nice_step",
    "save",
    "style",
    "wants_log",
]

COLUMN_WIDTH_IN = 3.5

PNG_DPI = 300

#: Okabe & Ito (2008), "Color Universal Design".
PALETTE = {
    "blue": "#0072B2", "orange": "#E69F00", "green": "#009E73", "vermillion": "#D55E00",
    "sky": "#56B4E9", "purple": "#CC79A7", "yellow": "#F0E442", "black": "#000000",
    "grey": "#999999",
}
CYCLE = [PALETTE[c] for c in ("blue", "vermillion", "green", "orange", "purple", "sky",
                               "black", "yellow")]
ROLE_COLOURS = {"hospital": PALETTE["blue"], "pharmacy": PALETTE["green"],
                "regulator": PALETTE["orange"], "client": PALETTE["grey"]}
#: Shading of fault windows, by fault kind (anything else: grey).
FAULT_COLOURS = {"crash": PALETTE["vermillion"], "partition": PALETTE["orange"],
                 "isolate": PALETTE["orange"], "link": PALETTE["sky"],
                 "slow": PALETTE["yellow"], "byzantine": PALETTE["purple"]}
#: Colours for a second (third ...) window of a kind whose colour is taken: each window its own.
FAULT_CYCLE = [PALETTE[c] for c in ("vermillion", "sky", "purple", "orange", "green", "yellow",
                                    "blue", "grey")]

RC: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "legend.frameon": False,
    "axes.linewidth": 0.6,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=CYCLE),
    "lines.linewidth": 1.0,
    "lines.markersize": 3,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "figure.constrained_layout.use": True,
    "savefig.dpi": PNG_DPI,
    "pdf.fonttype": 42,          # TrueType: text stays text in the PDF
    "svg.fonttype": "path",      # SVG renders the same without the fonts installed
    "svg.hashsalt": "medbft",    # deterministic ids in SVG output
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Apply the medbft style for the duration of a `with` block (rcParams are restored)."""
    with matplotlib.rc_context(RC):  # type: ignore[arg-type]  # keys checked at run time
        yield


def figure(height_in: float, nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """A column-wide figure and its axes (one `Axes`, or an array for a grid)."""
    fig = Figure(figsize=(COLUMN_WIDTH_IN, height_in))
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no pyplot state
    axes = fig.subplots(nrows, ncols, squeeze=True, **kwargs)
    return fig, axes


def save(fig: Figure, stem: Path, formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    """Write `fig` as stem.<format> for each format; return the paths written."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.parent / f"{stem.name}.{fmt}"  # not with_suffix: stems may hold dots
        metadata = {"Software": None} if fmt == "png" else None
        fig.savefig(path, format=fmt, metadata=_metadata(fmt, metadata))
        paths.append(path)
    return paths


def _metadata(fmt: str, png: dict[str, Any] | None) -> dict[str, Any] | None:
    """Keep output byte-stable where the format allows (no creation dates)."""
    if fmt == "pdf":
        return {"CreationDate": None, "ModDate": None}
    if fmt == "svg":
        return {"Date": None}
    return png


def nice_step(span: float, target_bins: int) -> float:
    """A round bin width (1, 2 or 5 times a power of ten) giving about `target_bins` bins."""
    if span <= 0:
        return 1.0
    raw = span / target_bins
    power = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * power:
            return mult * power
    return 10 * power  # pragma: no cover - the loop always returns


def wants_log(values: Sequence[float], ratio: float = 20.0) -> bool:
    """A log axis when positive values span more than `ratio` (a stall next to 50 ms)."""
    pos = [v for v in values if v > 0]
    return bool(pos) and max(pos) / min(pos) > ratio
