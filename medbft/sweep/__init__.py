"""Parameter sweeps: a base scenario, a grid of overrides by dotted path, every combination run
with each seed, in parallel, resumable; one CSV row per run.

Why this exists: a single run is an anecdote; a paper's figure is a metric against a parameter
over several seeds with a confidence interval. This package turns a sweep file into runs
(spec.py: the file's format and validation), runs them on local processes or a Dask
distributed cluster (execute.py), keeps each finished run on disk so a rerun only does what
is missing, and writes results.csv (store.py); stats.py gives the 95% confidence intervals.
Figures are `medbft.views.sweep_figures`.

What it must not know: the command line (medbft/cli/sweep.py); errors are `UsageError`
(medbft/errors.py).
"""

from medbft.sweep.execute import SweepOutcome, run_sweep
from medbft.sweep.spec import Sweep, expand, load_sweep
from medbft.sweep.stats import mean_ci95, t_quantile_975
from medbft.sweep.store import RESULTS, SPEC, flatten_metrics, read_results

__all__ = [
    "RESULTS",
    "SPEC",
    "Sweep",
    "SweepOutcome",
    "expand",
    "flatten_metrics",
    "load_sweep",
    "mean_ci95",
    "read_results",
    "run_sweep",
    "t_quantile_975",
]
