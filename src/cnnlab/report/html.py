"""One self-contained HTML report per run, and a page of every filter of a layer.

The report assembles what ``evaluate``, ``inspect`` and ``plots`` compute; it computes
nothing itself. Every image is embedded as a base64 PNG and the CSS is inline, so the file
opens offline with a double-click and can be mailed as it is.

When the run's dataset is not present now, the report still renders the metrics saved in
``metrics.json`` and says which per-example sections it had to skip.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab import files
from cnnlab.errors import CnnlabError
from cnnlab.insight.evaluate import Evaluation, TopLoss, evaluate_images, merged_metrics
from cnnlab.insight.inspect import activations_of, conv_layers, filter_images, filters, get_layer
from cnnlab.report import plots
from cnnlab.scratch.images import tile
from cnnlab.text import clean_figure_text, printable
from cnnlab.train.device import resolve_device

__all__ = ["ReportOptions", "render_filters_page", "render_report", "write_filters_page", "write_report"]


@dataclass(frozen=True)
class ReportOptions:
    """How much the report shows. Tables past these lengths are truncated with a note."""

    max_class_rows: int = 30  # per-class table: the worst classes by F1 when there are more
    max_pairs: int = 20  # most-confused pairs
    n_top_losses: int = 20  # rows in the top-loss table and images in its grid
    n_wrong: int = 25  # wrong-prediction grid
    n_activation_images: int = 3  # test images whose feature maps are shown
    max_maps: int = 64  # feature maps per layer and image
    dpi: int = 80  # PNG resolution: 80 keeps a 100-class report small and fast
    batch_size: int = 1024
    device: str = "cpu"  # where the model runs: "auto" picks CUDA when present


@dataclass
class _Page:
    """Accumulates HTML sections (with a table of contents) and renders figures to PNG."""

    title: str
    dpi: int = 80
    parts: list[str] = field(default_factory=list)
    toc: list[tuple[str, str]] = field(default_factory=list)

    def section(self, anchor: str, heading: str, *body: str) -> None:
        self.toc.append((anchor, heading))
        head = f'<section id="{anchor}">\n<h2>{_e(heading)}</h2>\n'
        self.parts.append(head + "\n".join(body) + "\n</section>")

    def figure(self, fig, alt: str) -> str:
        return _img(fig_to_png(fig, dpi=self.dpi), alt)

    def html(self, subtitle: str = "") -> str:
        toc = " · ".join(f'<a href="#{a}">{_e(h)}</a>' for a, h in self.toc)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{_e(self.title)}</h1>\n<p class=\"note\">{subtitle}</p>\n<nav>{toc}</nav>\n"
            + "\n".join(self.parts)
            + "\n</body>\n</html>\n"
        )


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
nav { font-size: 0.9em; margin: 0.5em 0 1em; line-height: 1.6; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
.note { color: #666; font-size: 0.9em; }
.skip { background: #fff6e0; border-left: 4px solid #e0a000; padding: 0.4em 0.8em; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.filter { display: inline-block; text-align: center; font-size: 0.75em; margin: 0.2em; }
.filter img { image-rendering: pixelated; margin: 0 auto; }
img.pixels { image-rendering: pixelated; }
"""


# --------------------------------------------------------------------------- small helpers


def _e(text: Any) -> str:
    return html.escape(printable(str(text)))  # names from the file system may not be UTF-8


def fig_to_png(fig, *, dpi: int = 80) -> bytes:
    """A matplotlib Figure rendered to PNG bytes."""
    buf = io.BytesIO()
    clean_figure_text(fig)
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def array_to_png(image: np.ndarray) -> bytes:
    """A uint8 (H, W) or (H, W, 3) array encoded as PNG bytes with Pillow."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def _img(png: bytes, alt: str, width: int | None = None, pixelated: bool = False) -> str:
    data = base64.b64encode(png).decode("ascii")
    size = f' width="{width}"' if width else ""
    cls = ' class="pixels"' if pixelated else ""
    return f'<img alt="{_e(alt)}"{size}{cls} src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool] | None = None
) -> str:
    numeric = numeric or [False] * len(header)
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "\n".join(
        "<tr>" + "".join(f'<td{" class=num" if num else ""}>{_e(_fmt(v))}</td>' for v, num in
                         zip(row, numeric, strict=True)) + "</tr>"
        for row in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _note(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{_e(text)}</p>'


def _load_data(run) -> tuple[Any, str | None]:
    """The run's dataset, or None and the reason it is absent now."""
    try:
        return run.load_data(), None
    except (CnnlabError, FileNotFoundError, OSError) as exc:
        return None, str(exc)


def _summary_text(model, run) -> str | None:
    try:
        from cnnlab.models.summary import summarize

        return str(summarize(model, tuple(run.config["input_shape"])))
    except (ImportError, CnnlabError):  # no summary module, or a model it cannot trace
        return None


# --------------------------------------------------------------------------- the run report


def render_report(
    run,
    *,
    evaluation: Evaluation | None = None,
    data: Any = None,
    data_problem: str | None = None,
    model=None,
    options: ReportOptions = ReportOptions(),
) -> str:
    """The report of a loaded run (``cnnlab.train.runs.load_run``) as one HTML string.

    ``evaluation`` and ``data`` (``run.load_data()``) are optional: with neither, metrics come
    from ``run.metrics`` and per-example sections are skipped with ``data_problem`` as reason.
    """
    model = run.build_model(weights="best") if model is None else model
    classes = run.classes
    metrics = evaluation.metrics if evaluation is not None else run.metrics
    images = data.test.images if data is not None else None
    page = _Page(title=f"cnnlab report: {run.path.name}", dpi=options.dpi)

    _config_section(page, run)
    summary = _summary_text(model, run)
    page.section("summary", "Model", f"<pre>{_e(summary)}</pre>" if summary else
                 _note(f"{type(model).__name__}; the model summary (cnnlab.models.summary) is not available.")
                 + f"<pre>{_e(model)}</pre>")
    if run.history:
        curves = page.figure(plots.plot_history(run.history), "training curves")
        page.section("curves", "Training curves", curves)
    else:
        page.section("curves", "Training curves", _note("history.csv is empty or missing."))

    skipped = None
    why = data_problem or "the dataset was not loaded"
    if evaluation is None:
        skipped = ("Per-example sections (images of top losses and wrong predictions, confidence "
                   f"histograms, activations) are skipped: {why}")
    elif images is None:
        skipped = f"Images (top losses, wrong predictions, activations) are skipped: {why}"
    if metrics is None:
        page.section("metrics", "Test metrics", _note(
            f"No metrics: metrics.json is missing and the dataset is not available to compute them ({why}).",
            "skip"))
    else:
        _metrics_sections(page, metrics, classes, options, skipped)
    _example_sections(page, evaluation, metrics, images, classes, options)
    _filter_section(page, model)
    _activation_section(page, run, model, evaluation, images, classes, options)
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return page.html(f"Run directory <code>{_e(run.path)}</code> · generated {when}")


def _config_section(page: _Page, run) -> None:
    cfg = run.config
    keys = ("data", "model", "input_shape", "num_classes", "mean", "std")
    rows = [(k, json.dumps(cfg.get(k))) for k in keys if k in cfg]
    full = f"<details><summary>config.json</summary><pre>{_e(json.dumps(cfg, indent=2))}</pre></details>"
    page.section("config", "Configuration", _table(("key", "value"), rows), full)


def _metrics_sections(
    page: _Page, m: dict, classes: list[str], opt: ReportOptions, skipped: str | None
) -> None:
    # metrics.json written by `cnnlab train` alone has test_accuracy/test_loss; evaluation adds the rest.
    rows = [("examples", m.get("n")), ("accuracy", m.get("accuracy", m.get("test_accuracy"))),
            ("loss", m.get("loss", m.get("test_loss"))), ("top-5 accuracy", m.get("top5_accuracy")),
            ("wrong", m.get("n_wrong"))]
    for avg in ("macro", "weighted"):
        rows += [(f"{avg} {key}", value) for key, value in (m.get(avg) or {}).items()]
    notes = [_note(skipped, "skip")] if skipped else []
    if "per_class" not in m:
        notes.append(_note("metrics.json holds only the summary written by training; run `cnnlab evaluate` "
                           "where the dataset is present for per-class numbers and the confusion matrix.", "skip"))
    page.section("metrics", "Test metrics", *notes,
                 _table(("metric", "value"), [r for r in rows if r[1] is not None], (False, True)))
    if "per_class" not in m:
        return
    _per_class_section(page, m["per_class"], opt)
    cm = np.asarray(m.get("confusion_matrix") or [], dtype=np.int64)
    if cm.size:
        names = m.get("classes") or classes
        cm_note = "" if len(names) <= plots.MAX_ANNOTATED_CLASSES else _note(
            f"{len(names)} classes: counts are left out of the cells; colour shows them.")
        page.section("confusion", "Confusion matrix", cm_note,
                     page.figure(plots.plot_confusion_matrix(cm, names), "confusion matrix"),
                     page.figure(plots.plot_errors_per_class(cm, names), "errors per class"))
    _most_confused_section(page, m.get("most_confused") or [], opt)


def _per_class_section(page: _Page, per_class: list[dict], opt: ReportOptions) -> None:
    note = ""
    shown = per_class
    if len(per_class) > opt.max_class_rows:
        shown = sorted(per_class, key=lambda r: (r["f1"], r["class"]))[: opt.max_class_rows]
        note = _note(f"Showing the {opt.max_class_rows} classes with the lowest F1 of {len(per_class)}; "
                     "metrics.json holds them all.")
    page.section("per-class", "Per-class metrics", note, _table(
        ("class", "precision", "recall", "F1", "support"),
        [(r["class"], r["precision"], r["recall"], r["f1"], r["support"]) for r in shown],
        (False, True, True, True, True)))


def _most_confused_section(page: _Page, pairs: list, opt: ReportOptions) -> None:
    note = ""
    if len(pairs) > opt.max_pairs:
        note = _note(f"Showing the top {opt.max_pairs} of {len(pairs)} pairs; metrics.json holds them all.")
    page.section("most-confused", "Most confused pairs", note,
                 _table(("actual", "predicted", "count"), pairs[: opt.max_pairs], (False, False, True))
                 if pairs else _note("No confusions: every example was classified correctly."))


def _top_loss_table(losses: Sequence[TopLoss], classes: list[str]) -> str:
    return _table(
        ("index", "predicted", "p(predicted)", "actual", "p(actual)", "loss"),
        [(t.index, classes[t.predicted], t.predicted_prob, classes[t.actual], t.actual_prob, t.loss)
         for t in losses],
        (True, False, True, False, True, True))


def _saved_top_losses(metrics: dict | None, n: int) -> list[TopLoss]:
    saved = (metrics or {}).get("top_losses") or []
    return [TopLoss(**{k: d[k] for k in TopLoss._fields}) for d in saved[:n]]


def _example_sections(page: _Page, ev: Evaluation | None, metrics: dict | None, images, classes,
                      opt: ReportOptions) -> None:
    n = opt.n_top_losses
    losses = ev.top_losses(n) if ev is not None else _saved_top_losses(metrics, n)
    body = [_note("Predicted class with its probability, actual class with its probability, and the loss, "
                  "largest loss first."), _top_loss_table(losses, classes)]
    if images is not None and ev is not None and losses:
        body.append(page.figure(plots.plot_top_losses(images, losses, classes), "top losses"))
    elif losses:
        body.append(_note("The images are skipped: the dataset is not available.", "skip"))
    if losses:
        page.section("top-losses", "Top losses", *body)
    if ev is None:
        return
    if images is not None:
        page.section("wrong", "Wrong predictions",
                     _note(f"The first {min(opt.n_wrong, len(ev.wrong_indices()))} of "
                           f"{len(ev.wrong_indices())} wrong predictions; each title reads "
                           "predicted p (actual p)."),
                     page.figure(plots.plot_wrong_predictions(images, ev.probs, ev.labels, classes,
                                                              max_images=opt.n_wrong), "wrong predictions"))
    page.section("confidence", "Confidence", _note(
        "Normalised histograms of the predicted class's probability: all predictions vs the wrong ones."),
        page.figure(plots.plot_confidence_histograms(ev.probs, ev.labels), "confidence histograms"))


def _filter_section(page: _Page, model) -> None:
    convs = conv_layers(model)
    if not convs:
        page.section("filters", "First-layer filters", _note("The model has no Conv2d layer."))
        return
    w = filters(model, convs[0])
    title = f"{convs[0]}: {w.shape[0]} filters of {w.shape[1]}×{w.shape[2]}×{w.shape[3]}"
    page.section("filters", f"First-layer filters ({convs[0]})",
                 page.figure(plots.plot_filters(w, title=title), "first-layer filters"))


def _maps_title(name: str, maps: np.ndarray) -> str:
    c, h, w = maps.shape[1:4]
    return f"layer {name}: {c} maps of {h}×{w}"


def _activation_section(page: _Page, run, model, ev, images, classes, opt: ReportOptions) -> None:
    convs = conv_layers(model)
    if images is None or not convs:
        reason = "the dataset is not available" if images is None else "the model has no Conv2d layer"
        page.section("activations", "Activations", _note(f"Skipped: {reason}.", "skip"))
        return
    picks = np.arange(min(opt.n_activation_images, len(images)))
    maps = activations_of(model, run.preprocess(images[picks]), convs)
    body = [_note(f"Feature maps of every conv layer ({len(convs)}) for {len(picks)} test images; "
                  f"at most {opt.max_maps} maps per layer.")]
    for j, i in enumerate(picks):
        title = f"test image {i}: {classes[int(ev.labels[i])]}" if ev is not None else f"test image {i}"
        if ev is not None:
            p = int(ev.preds[i])
            title += f", predicted {classes[p]} ({ev.probs[i, p]:.2f})"
        body.append(f"<h3>{_e(title)}</h3>")
        img = images[i]
        body.append(_img(array_to_png(img[..., 0] if img.shape[-1] == 1 else img), title, width=112,
                         pixelated=True))
        figs = [page.figure(plots.plot_feature_maps(maps[name][j], title=_maps_title(name, maps[name]),
                                                    max_maps=opt.max_maps), f"activations of {name}")
                for name in convs]
        body.append('<div class="row">' + "".join(f"<div>{f}</div>" for f in figs) + "</div>")
    page.section("activations", "Activations", *body)


def write_report(
    run_dir: str | Path,
    *,
    evaluation: Evaluation | None = None,
    out: str | Path | None = None,
    options: ReportOptions = ReportOptions(),
    progress: bool = False,
) -> Path:
    """Write ``report.html`` (or ``out``) for a run directory and return its path.

    Computes the evaluation on the test split when not given and saves it as metrics.json.
    When the dataset is absent now, renders the saved metrics.json instead. Everything is
    computed before anything is written; the HTML is written atomically.
    """
    from cnnlab.train.runs import load_run, save_metrics

    run = load_run(run_dir)
    out = _output_path(out, run.path / "report.html")
    model = run.build_model(weights="best").to(resolve_device(options.device))
    data, problem = _load_data(run)
    if evaluation is None and data is not None:
        evaluation = evaluate_images(model, data.test.images, data.test.labels, preprocess=run.preprocess,
                                     classes=run.classes, batch_size=options.batch_size, progress=progress)
    text = render_report(run, evaluation=evaluation, data=data, data_problem=problem, model=model,
                         options=options)
    if evaluation is not None:
        save_metrics(run.path, merged_metrics(run.metrics, evaluation.metrics))
    files.write_text(out, printable(text))
    return out


def _output_path(out: str | Path | None, default: Path) -> Path:
    """Where to write, checked before any work so a bad path fails fast and writes nothing."""
    out = Path(out) if out is not None else default
    if out.is_dir():
        raise CnnlabError(f"{out} is a directory; give a file name such as {out / default.name}")
    if not out.parent.is_dir():
        raise CnnlabError(f"cannot write {out}: folder {out.parent} does not exist; create it first")
    return out


# --------------------------------------------------------------------------- filters page


_PADDING_RGB = np.array([0xB7, 0xCD, 0xE8]) / 255  # plots.GREY_WITH_PADDING's NaN colour


def render_filters_page(run, model, layer: str | int | None = None, *, scale: int = 6) -> str:
    """HTML showing every filter of one conv layer (default: the first): an overview grid,
    then each output filter's kernels (a colour patch for RGB input, else one grey patch
    per input channel). CnnlabError listing the conv layers when ``layer`` is not one."""
    name = _filter_layer(model, layer)
    w = filters(model, name)
    out_c, in_c, kh, kw = w.shape
    page = _Page(title=f"Filters of {name} ({run.path.name})")
    overview = plots.plot_filters(w, max_patches=16384)
    page.section("overview", "Overview", page.figure(overview, f"filters of {name}"))
    patches = filter_images(w)  # global scaling: filters stay comparable with each other
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
        img = _img(png, f"filter {f}", width=width)
        cells.append(f'<div class="filter">{img}#{f}<br>|w| {norm:.2f}</div>')
    explain = ("one colour patch per filter (RGB input)" if in_c == 3 else
               f"each filter's {in_c} input-channel kernels tiled, pale blue padding between them")
    page.section("all", f"All {out_c} filters", _note(
        f"Weights {out_c}×{in_c}×{kh}×{kw}, scaled together to [0, 1] (white = largest); {explain}; "
        "|w| is the filter's L2 norm."), "".join(cells))
    return page.html(f"Run directory <code>{_e(run.path)}</code>")


def _filter_layer(model, layer: str | int | None) -> str:
    if layer is None:
        convs = conv_layers(model)
        if not convs:
            raise CnnlabError(f"{type(model).__name__} has no Conv2d layer, so it has no filters to show")
        return convs[0]
    return get_layer(model, layer)[0]


def write_filters_page(
    run_dir: str | Path, *, layer: str | int | None = None, out: str | Path | None = None
) -> Path:
    """Write the page of every filter of ``layer`` (default: the first conv layer) and return
    its path (default ``RUN_DIR/filters-<layer>.html``)."""
    from cnnlab.train.runs import load_run

    run = load_run(run_dir)
    model = run.build_model(weights="best")
    text = render_filters_page(run, model, layer)
    out = _output_path(out, run.path / f"filters-{_filter_layer(model, layer)}.html")
    files.write_text(out, printable(text))
    return out
