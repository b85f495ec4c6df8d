"""Figures: one style (`style`), the figures of one run (`run_figures`), of a sweep
(`sweep_figures`) and of runs side by side (`compare`).

Why this exists: publication-ready figures from saved results, one command away. Everything
here reads results files (never a live run), draws with matplotlib's object API on the Agg
canvas (no pyplot, so no global figure state and no display needed) and is imported only when
figures are drawn, so runs with `--no-plots` and `medbft validate` never load matplotlib.
"""

from __future__ import annotations

__all__ = ["DEFAULT_FORMATS", "FORMATS"]

#: PNG for screens and the report, SVG (vector) for papers and editing. PDF is one option
#: away (`medbft plot DIR --formats png,pdf`); it is not the default because it takes about
#: twice as long as SVG to write (it embeds fonts), and every run draws its figures.
DEFAULT_FORMATS: tuple[str, ...] = ("png", "svg")
FORMATS: tuple[str, ...] = ("png", "svg", "pdf")
