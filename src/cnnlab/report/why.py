"""The report's "Why it decided" section: renders ``Results.decisions``
(``cnnlab.insight.decisions.DecisionMaps``), computes nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnlab.report.overlay import plot_attributions, plot_layer_sweep
from cnnlab.report.page import Page, note

if TYPE_CHECKING:
    from cnnlab.insight.results import Results
    from cnnlab.report.options import ReportOptions

__all__ = ["why_section"]


def _gray(image):
    return image[..., 0] if image.shape[-1] == 1 else image


def why_section(page: Page, r: Results, opt: ReportOptions) -> None:
    d = r.decisions
    if d is None:
        if r.decisions_skipped:
            page.skipped("why", "Why it decided", r.decisions_skipped)
        return
    names = r.classes
    rows = [f"#{i}: {names[a]} as {names[p]}" for i, a, p in zip(d.indices, d.labels, d.predicted, strict=True)]
    grid = plot_attributions([_gray(im) for im in d.images], [d.actual_maps, d.predicted_maps],
                             column_titles=["actual class", "predicted class"], row_titles=rows)
    sweep = plot_layer_sweep(_gray(d.images[0]), d.sweep,
                             title=f"test image {d.sweep_index}: Grad-CAM after every conv layer for "
                                   f"'{names[d.predicted[0]]}'")
    page.section(
        "why", "Why it decided",
        note(f"Grad-CAM (layer {d.layer}: the rectified output of the last conv layer with a map larger than "
             f"1×1) of the {len(d.indices)} largest losses, for the actual class and for the class the model "
             "predicted: where the two maps differ is what pulled the model the wrong way. Grad-CAM maps are "
             "never negative; brighter is more influence (cividis colormap, colour bar beside each map); the "
             "two maps of a row share one scale."),
        page.figure(grid, "Grad-CAM of the top losses for the actual and the predicted class"),
        note("The same map after every conv layer (its activation, or the block it ends) of the worst mistake, "
             "early layers first: early layers "
             "respond to edges everywhere, the last ones to what decides the class."),
        page.figure(sweep, "Grad-CAM layer sweep"),
    )
