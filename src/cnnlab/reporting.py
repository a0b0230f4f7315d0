"""Report a run directory in one call: collect its results, then render them.

The one place that joins ``cnnlab.insight.results`` (which loads the run, evaluates it and
saves ``metrics.json``) and ``cnnlab.report`` (which renders what it is handed), for the
command line, the demo, ``cnnlab train``'s report and ``cnnlab.write_report``.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.insight.results import ResultsOptions, collect_filters, collect_results
from cnnlab.report.html import ReportOptions, output_path, write_filters_page, write_report

__all__ = ["filters_page", "report_run"]


def report_run(run_dir: str | Path, *, out: str | Path | None = None, evaluation=None,
               options: ReportOptions | None = None, collect: ResultsOptions | None = None,
               progress: bool = False) -> Path:
    """Write ``report.html`` (or ``out``) for a run directory and return its path.

    Evaluates the best weights on the test split unless ``evaluation`` is given, and saves
    the metrics as ``metrics.json``; when the dataset is absent now, the saved metrics are
    rendered instead. A bad ``out`` is refused before any work; the HTML is written atomically.
    ``options`` say how it is shown, ``collect`` how much is gathered (defaults when None).
    """
    output_path(out, Path(run_dir) / "report.html")  # fail fast, before evaluating
    results = collect_results(run_dir, evaluation=evaluation, options=collect or ResultsOptions(), progress=progress)
    return write_report(results, out=out, options=options or ReportOptions())


def filters_page(run_dir: str | Path, *, layer: str | int | None = None, out: str | Path | None = None) -> Path:
    """Write the page of every filter of ``layer`` (default: the first conv layer) of a run
    and return its path (default ``RUN_DIR/filters-<layer>.html``)."""
    if out is not None:
        output_path(out, Path(run_dir) / "filters.html")
    return write_filters_page(collect_filters(run_dir, layer=layer), out=out)
