"""One self-contained HTML report per run, and a page of every filter of a layer.

Both render results that ``cnnlab.insight.results`` computed (:class:`Results`,
:class:`FilterResults`); nothing here loads a run, runs a model or writes metrics.
Every image is embedded as a base64 PNG and the CSS is inline, so the file opens offline
with a double-click and can be mailed as it is. The report's sections and how to add one:
``cnnlab.report.sections``. To report a run directory in one call (collect, then render):
``cnnlab.reporting.report_run``.

When the run's dataset was absent, the results hold the metrics saved in ``metrics.json``
and the report says which per-example sections it had to skip.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np

from cnnlab import files
from cnnlab.errors import CnnlabError
from cnnlab.insight.results import FilterResults, Results
from cnnlab.report import plots
from cnnlab.report.options import ReportOptions
from cnnlab.report.page import Page, array_to_png, escape, img, note
from cnnlab.report.sections import SECTIONS
from cnnlab.scratch.images import tile
from cnnlab.text import printable

__all__ = ["ReportOptions", "output_path", "render_filters_page", "render_report", "write_filters_page",
           "write_report"]


DEFAULT_OPTIONS = ReportOptions()  # frozen: one shared default


def render_report(results: Results, *, options: ReportOptions = DEFAULT_OPTIONS) -> str:
    """The report of finished ``results`` as one HTML string: each of ``SECTIONS`` in turn."""
    _check_results(results, Results, "collect_results")
    page = Page(title=f"cnnlab report: {results.name}", dpi=options.dpi)
    for section in SECTIONS:
        section(page, results, options)
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return page.html(f"Run directory <code>{escape(results.run_dir)}</code> · generated {when}")


def write_report(results: Results, *, out: str | Path | None = None,
                 options: ReportOptions = DEFAULT_OPTIONS) -> Path:
    """Render ``results`` and write the HTML atomically to ``out`` (default
    ``RUN_DIR/report.html``); return its path."""
    _check_results(results, Results, "collect_results")
    out = output_path(out, Path(results.run_dir) / "report.html")
    return files.write_text(out, printable(render_report(results, options=options)))


def _check_results(results, kind: type, collect: str) -> None:
    if isinstance(results, (str, os.PathLike)):
        raise CnnlabError(f"cnnlab.report renders results and computes nothing, got the path {str(results)!r}; "
                          f"pass cnnlab.insight.results.{collect}(RUN_DIR), or call "
                          "cnnlab.reporting.report_run(RUN_DIR) (cnnlab.write_report) to do both")
    if not isinstance(results, kind):
        raise CnnlabError(f"expected a {kind.__name__} (cnnlab.insight.results.{collect}), "
                          f"got {type(results).__name__}")


def output_path(out: str | Path | None, default: Path) -> Path:
    """Where to write, checked before any work so a bad path fails fast and writes nothing."""
    out = Path(out) if out is not None else default
    if out.is_dir():
        raise CnnlabError(f"{out} is a directory; give a file name such as {out / default.name}")
    if not out.parent.is_dir():
        raise CnnlabError(f"cannot write {out}: folder {out.parent} does not exist; create it first")
    return out


# --------------------------------------------------------------------------- filters page


_PADDING_RGB = np.array([0xB7, 0xCD, 0xE8]) / 255  # plots.GREY_WITH_PADDING's NaN colour


def render_filters_page(filters: FilterResults, *, scale: int = 6) -> str:
    """HTML showing every filter of one conv layer: an overview grid, then each output
    filter's kernels (a colour patch for RGB input, else one grey patch per input channel)."""
    _check_results(filters, FilterResults, "collect_filters")
    name, w, patches = filters.layer, filters.weights, filters.patches
    out_c, in_c, kh, kw = w.shape
    where = f" ({Path(filters.run_dir).name})" if filters.run_dir is not None else ""
    page = Page(title=f"Filters of {name}{where}")
    overview = plots.plot_filters(w, max_patches=16384)
    page.section("overview", "Overview", page.figure(overview, f"filters of {name}"))
    cells = []
    for f in range(out_c):
        if in_c == 3:
            grid = patches[f]
        else:  # grey kernels padded with NaN, drawn pale blue (a white kernel stays visible)
            grid = tile(patches[f * in_c : (f + 1) * in_c], padding=1, pad_value=np.nan)
            grid = np.where(np.isnan(grid)[..., None], _PADDING_RGB, np.nan_to_num(grid)[..., None])
        png = array_to_png((np.clip(grid, 0, 1) * 255).round().astype(np.uint8))
        width = max(48, grid.shape[1] * scale)
        norm = float(np.sqrt((w[f] ** 2).sum()))
        cells.append(f'<div class="filter">{img(png, f"filter {f}", width=width)}#{f}<br>|w| {norm:.2f}</div>')
    explain = ("one colour patch per filter (RGB input)" if in_c == 3 else
               f"each filter's {in_c} input-channel kernels tiled, pale blue padding between them")
    page.section("all", f"All {out_c} filters", note(
        f"Weights {out_c}×{in_c}×{kh}×{kw}, scaled together to [0, 1] (white = largest); {explain}; "
        "|w| is the filter's L2 norm."), "".join(cells))
    return page.html(f"Run directory <code>{escape(filters.run_dir)}</code>" if filters.run_dir else "")


def write_filters_page(filters: FilterResults, *, out: str | Path | None = None) -> Path:
    """Write the page of ``filters`` and return its path (default ``RUN_DIR/filters-<layer>.html``)."""
    _check_results(filters, FilterResults, "collect_filters")
    if out is None and filters.run_dir is None:
        raise CnnlabError("these filters come from no run directory; pass out=PATH")
    default = Path(filters.run_dir or ".") / f"filters-{filters.layer}.html"
    out = output_path(out, default)
    return files.write_text(out, printable(render_filters_page(filters)))
