"""The sections of a run's report, in order. Each renders fields of a finished
:class:`cnnlab.insight.results.Results`; none computes anything.

A section is one function ``section(page, results, options) -> None`` that adds zero or
more ``page.section(anchor, heading, *html)`` blocks, and leaves itself out (or adds a
note) when its field is None. To add one (say, Grad-CAM of the top losses):

1. give ``Results`` a field (``gradcam: ... | None = None``), filled in ``cnnlab.insight``;
2. write the function, here or in a module of its own in this package, using the helpers
   of ``cnnlab.report.page`` and the figures of ``cnnlab.report.plots``::

       def gradcam_section(page, r, opt):
           if r.gradcam is None:
               return
           page.section("gradcam", "Grad-CAM of the top losses", note("..."),
                        page.figure(plots.plot_gradcam(r.gradcam), "Grad-CAM"))

3. put it in :data:`SECTIONS` where it belongs in the page. Tests build a ``Results`` by
   hand and render it: no model, no dataset (tests/test_report.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from cnnlab.report import plots, plots_insight
from cnnlab.report.page import Page, array_to_png, escape, img, note, table
from cnnlab.report.why import why_section

if TYPE_CHECKING:
    from cnnlab.insight.results import Results
    from cnnlab.report.options import ReportOptions

__all__ = ["SECTIONS"]


def config_section(page: Page, r: Results, opt: ReportOptions) -> None:
    cfg = r.config
    keys = ("data", "model", "input_shape", "num_classes", "mean", "std")
    rows = [(k, json.dumps(cfg.get(k))) for k in keys if k in cfg]
    full = f"<details><summary>config.json</summary><pre>{escape(json.dumps(cfg, indent=2))}</pre></details>"
    page.section("config", "Configuration", table(("key", "value"), rows), full)


def model_section(page: Page, r: Results, opt: ReportOptions) -> None:
    if r.model_summary:
        body = f"<pre>{escape(r.model_summary)}</pre>"
    else:
        body = note("The model summary (cnnlab.models.summary) is not available.") + f"<pre>{escape(r.model_text)}</pre>"
    page.section("summary", "Model", body)


def curves_section(page: Page, r: Results, opt: ReportOptions) -> None:
    if r.history:
        page.section("curves", "Training curves", page.figure(plots.plot_history(r.history), "training curves"))
    else:
        page.section("curves", "Training curves", note("history.csv is empty or missing."))


def metrics_section(page: Page, r: Results, opt: ReportOptions) -> None:
    m = r.metrics
    if m is None:
        why = r.data_problem or "the dataset was not loaded"
        page.section("metrics", "Test metrics", note(
            f"No metrics: metrics.json is missing and the dataset is not available to compute them ({why}).", "skip"))
        return
    # metrics.json written by `cnnlab train` alone has test_accuracy/test_loss; evaluation adds the rest.
    rows = [("examples", m.get("n")), ("accuracy", m.get("accuracy", m.get("test_accuracy"))),
            ("loss", m.get("loss", m.get("test_loss"))), ("top-5 accuracy", m.get("top5_accuracy")),
            ("wrong", m.get("n_wrong"))]
    for avg in ("macro", "weighted"):
        rows += [(f"{avg} {key}", value) for key, value in (m.get(avg) or {}).items()]
    notes = [note(r.skipped, "skip")] if r.skipped else []
    if "per_class" not in m:
        notes.append(note("metrics.json holds only the summary written by training; run `cnnlab evaluate` "
                          "where the dataset is present for per-class numbers and the confusion matrix.", "skip"))
    page.section("metrics", "Test metrics", *notes,
                 table(("metric", "value"), [row for row in rows if row[1] is not None], (False, True)))


def per_class_section(page: Page, r: Results, opt: ReportOptions) -> None:
    per_class = (r.metrics or {}).get("per_class")
    if per_class is None:
        return
    shown, text = per_class, ""
    if len(per_class) > opt.max_class_rows:
        shown = sorted(per_class, key=lambda row: (row["f1"], row["class"]))[: opt.max_class_rows]
        text = note(f"Showing the {opt.max_class_rows} classes with the lowest F1 of {len(per_class)}; "
                    "metrics.json holds them all.")
    page.section("per-class", "Per-class metrics", text, table(
        ("class", "precision", "recall", "F1", "support"),
        [(row["class"], row["precision"], row["recall"], row["f1"], row["support"]) for row in shown],
        (False, True, True, True, True)))


def confusion_section(page: Page, r: Results, opt: ReportOptions) -> None:
    m = r.metrics or {}
    cm = np.asarray(m.get("confusion_matrix") or [], dtype=np.int64)
    if "per_class" not in m or not cm.size:
        return
    names = m.get("classes") or r.classes
    text = "" if len(names) <= plots.MAX_ANNOTATED_CLASSES else note(
        f"{len(names)} classes: counts are left out of the cells; colour shows them.")
    page.section("confusion", "Confusion matrix", text,
                 page.figure(plots.plot_confusion_matrix(cm, names), "confusion matrix"),
                 page.figure(plots.plot_errors_per_class(cm, names), "errors per class"))


def most_confused_section(page: Page, r: Results, opt: ReportOptions) -> None:
    m = r.metrics or {}
    if "per_class" not in m:
        return
    pairs = m.get("most_confused") or []
    text = ""
    if len(pairs) > opt.max_pairs:
        text = note(f"Showing the top {opt.max_pairs} of {len(pairs)} pairs; metrics.json holds them all.")
    page.section("most-confused", "Most confused pairs", text,
                 table(("actual", "predicted", "count"), pairs[: opt.max_pairs], (False, False, True))
                 if pairs else note("No confusions: every example was classified correctly."))


def top_losses_section(page: Page, r: Results, opt: ReportOptions) -> None:
    losses, classes = r.top_losses, r.classes
    if not losses:
        return
    body = [note("Predicted class with its probability, actual class with its probability, and the loss, "
                 "largest loss first."),
            table(("index", "predicted", "p(predicted)", "actual", "p(actual)", "loss"),
                  [(t.index, classes[t.predicted], t.predicted_prob, classes[t.actual], t.actual_prob, t.loss)
                   for t in losses], (True, False, True, False, True, True))]
    if r.top_loss_images is not None:
        # plot_top_losses indexes images by t.index; here row i holds losses[i]'s image.
        shown = [t._replace(index=i) for i, t in enumerate(losses)]
        body.append(page.figure(plots.plot_top_losses(r.top_loss_images, shown, classes), "top losses"))
    else:
        body.append(note("The images are skipped: the dataset is not available.", "skip"))
    page.section("top-losses", "Top losses", *body)


def wrong_section(page: Page, r: Results, opt: ReportOptions) -> None:
    w = r.wrong
    if w is None or w.images is None:
        return
    page.section("wrong", "Wrong predictions",
                 note(f"The first {len(w.labels)} of {w.total} wrong predictions; each title reads "
                      "predicted p (actual p)."),
                 page.figure(plots.plot_wrong_predictions(w.images, w.probs, w.labels, r.classes,
                                                          max_images=len(w.labels)), "wrong predictions"))


def confidence_section(page: Page, r: Results, opt: ReportOptions) -> None:
    if r.predictions is None:
        return
    page.section("confidence", "Confidence", note(
        "Normalised histograms of the predicted class's probability: all predictions vs the wrong ones."),
        page.figure(plots.plot_confidence_histograms(r.predictions.probs, r.predictions.labels),
                    "confidence histograms"))


def filters_section(page: Page, r: Results, opt: ReportOptions) -> None:
    f = r.first_filters
    if f is None:
        page.section("filters", "First-layer filters", note("The model has no Conv2d layer."))
        return
    w = f.weights
    title = f"{f.layer}: {w.shape[0]} filters of {w.shape[1]}×{w.shape[2]}×{w.shape[3]}"
    page.section("filters", f"First-layer filters ({f.layer})",
                 page.figure(plots.plot_filters(w, title=title), "first-layer filters"))


def _maps_title(name: str, maps: np.ndarray) -> str:
    c, h, w = maps.shape[-3:]
    return f"layer {name}: {c} maps of {h}×{w}"


def activations_section(page: Page, r: Results, opt: ReportOptions) -> None:
    if not r.activations:
        reason = r.activations_skipped or "no activations were collected"
        page.skipped("activations", "Activations", reason)
        return
    layers = list(r.activations[0].maps)
    body = [note(f"Feature maps of every conv layer ({len(layers)}) for {len(r.activations)} test images; "
                 f"at most {opt.max_maps} maps per layer.")]
    for ex in r.activations:
        title = f"test image {ex.index}"
        if ex.label is not None:
            title += f": {r.classes[ex.label]}, predicted {r.classes[ex.predicted]} ({ex.prob:.2f})"
        body.append(f"<h3>{escape(title)}</h3>")
        image = ex.image[..., 0] if ex.image.shape[-1] == 1 else ex.image
        body.append(img(array_to_png(image), title, width=112, pixelated=True))
        figs = [page.figure(plots.plot_feature_maps(maps, title=_maps_title(name, maps), max_maps=opt.max_maps),
                            f"activations of {name}") for name, maps in ex.maps.items()]
        body.append('<div class="row">' + "".join(f"<div>{f}</div>" for f in figs) + "</div>")
    page.section("activations", "Activations", *body)


def features_section(page: Page, r: Results, opt: ReportOptions) -> None:
    v = r.features
    if v is None:
        if r.features_skipped and r.features_skipped != "not asked for":
            page.skipped("features", "Feature visualisation", r.features_skipped)
        return
    beside = "" if v.examples is None else f", each beside the {v.examples.shape[1]} test images that excite it most"
    fig = plots_insight.plot_feature_visualizations(v.images, labels=[f"channel {c}" for c in v.channels],
                                                    examples=v.examples, title=f"layer {v.layer}")
    page.section("features", f"Feature visualisation ({v.layer})", note(
        f"What {len(v.channels)} channels of the last conv layer respond to most: an image optimised from noise "
        f"to maximise each channel's mean activation (Fourier parameterisation, random jitter, scale and "
        f"rotation; Olah et al., Distill 2017){beside}."), page.figure(fig, f"feature visualisation of {v.layer}"))


def embedding_section(page: Page, r: Results, opt: ReportOptions) -> None:
    e = r.embedding
    if e is None:
        if r.embedding_skipped and r.embedding_skipped != "not asked for":
            page.skipped("embedding", "Embedding map", r.embedding_skipped)
        return
    page.section("embedding", "Embedding map", note(
        f"The input of the last Linear layer for {len(e.coords)} test images, projected to 2-D "
        f"({e.method.upper() if e.method == 'pca' else e.method}); colour and marker = actual class, "
        f"black × = wrong prediction ({int(e.wrong.sum())}). `cnnlab embed RUN_DIR --method tsne` draws a t-SNE map."),
        page.figure(plots_insight.plot_embedding(e, classes=r.classes), "embedding map"))


# The report, top to bottom. A new section is one function added here (see the module docstring).
SECTIONS: list[Callable[[Page, Results, ReportOptions], None]] = [
    config_section,
    model_section,
    curves_section,
    metrics_section,
    per_class_section,
    confusion_section,
    most_confused_section,
    top_losses_section,
    wrong_section,
    confidence_section,
    filters_section,
    activations_section,
    features_section,
    embedding_section,
    why_section,
]
