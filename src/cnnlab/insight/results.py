"""A run's finished results, computed once, for the report (and anyone else) to render.

:func:`collect_results` loads a run directory, evaluates its best weights on the test
split (when the dataset is present), saves ``metrics.json``, and gathers everything the
report shows into :class:`Results`: plain data (numbers, strings, NumPy arrays), no model,
no tensors. ``cnnlab.report`` renders a ``Results`` and computes nothing; the HTML can be
rebuilt from a hand-made ``Results`` without a model or a dataset (see tests/test_report.py).

Adding what a new report section needs (Grad-CAM of the top losses, a layer sweep, feature
visualisations, an embedding map):

1. add a field to :class:`Results` with a default of ``None`` (None = not computed, and the
   section is left out), holding plain data, e.g. ``gradcam: GradCamResults | None = None``;
2. fill it in a function here (or in your insight module) called from :func:`collect_results`
   or by whoever builds the ``Results`` (``dataclasses.replace(results, gradcam=...)``);
3. render it with one section function in ``cnnlab.report`` (see ``cnnlab.report.sections``).

Modules and arrays use the layouts of the rest of cnnlab: images uint8 ``(H, W, C)``,
probabilities ``(N, K)``, filters ``(out, in, kh, kw)``, feature maps ``(C, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from cnnlab.insight.decisions import DecisionMaps

__all__ = ["ActivationExample", "FilterResults", "Predictions", "Results", "ResultsOptions", "collect_filters",
           "collect_results"]


@dataclass(frozen=True)
class ResultsOptions:
    """How much :func:`collect_results` gathers (the rendering options are ``cnnlab.report.ReportOptions``)."""

    n_top_losses: int = 20  # rows in the top-loss table and images in its grid
    n_wrong: int = 25  # images of wrong predictions kept
    n_activation_images: int = 3  # test images whose feature maps are kept
    n_feature_channels: int = 8  # channels of the last conv layer visualised (0: none)
    feature_steps: int = 128  # optimisation steps per visualisation (cnnlab.insight.featurevis)
    n_feature_examples: int = 6  # top test images shown beside each visualisation
    embedding_method: str | None = "pca"  # the embedding map's projection (None: no map); cached in the run
    n_explained: int = 6  # top losses explained with Grad-CAM ("Why it decided")
    batch_size: int = 1024
    device: str = "cpu"  # where the model runs: "auto" picks CUDA when present


@dataclass(frozen=True, eq=False)
class Predictions:
    """Some test examples with their predictions: ``images`` uint8 ``(n, H, W, C)``, ``probs``
    ``(n, K)``, ``labels`` ``(n,)``; ``total`` is how many there were before any cut."""

    images: np.ndarray | None
    probs: np.ndarray
    labels: np.ndarray
    total: int


@dataclass(frozen=True, eq=False)
class FilterResults:
    """The weights of one conv layer, float32 ``(out, in, kh, kw)``, and their display patches
    (``cnnlab.insight.internals.filter_images``: global scaling to [0, 1])."""

    layer: str
    weights: np.ndarray
    patches: np.ndarray
    run_dir: Path | None = None


@dataclass(frozen=True, eq=False)
class ActivationExample:
    """One test image (uint8 ``(H, W, C)``) and the feature maps ``{layer: (C, H, W)}`` it
    produced; ``label``/``predicted``/``prob`` are None when the labels were not evaluated."""

    index: int
    image: np.ndarray
    maps: dict[str, np.ndarray]
    label: int | None = None
    predicted: int | None = None
    prob: float | None = None


@dataclass(frozen=True, eq=False)
class Results:
    """Everything the report of one run shows, computed. Fields left None are not shown
    (with ``skipped`` saying why, where that is not obvious)."""

    run_dir: Path
    config: dict[str, Any]
    classes: list[str]
    history: list[dict[str, float]] = field(default_factory=list)
    model_summary: str | None = None  # cnnlab.models.summary's table
    model_text: str = ""  # repr(model): shown when the summary is not available
    metrics: dict[str, Any] | None = None  # what metrics.json holds
    top_losses: list[Any] = field(default_factory=list)  # cnnlab.insight.metrics.TopLoss, largest first
    top_loss_images: np.ndarray | None = None  # uint8 (n, H, W, C); row i is top_losses[i]'s image
    wrong: Predictions | None = None  # the first wrong predictions, with their images
    predictions: Predictions | None = None  # every test example, without images: confidence
    first_filters: FilterResults | None = None
    activations: list[ActivationExample] | None = None
    activations_skipped: str | None = None  # why there are no activations
    features: Any = None  # cnnlab.insight.featurevis.ChannelVisuals of the last conv layer
    features_skipped: str | None = None  # why there are no feature visualisations
    embedding: Any = None  # cnnlab.insight.embedding.Embedding of the test split
    embedding_skipped: str | None = None  # why there is no embedding map
    decisions: DecisionMaps | None = None  # Grad-CAM of the top losses for both classes, and a layer sweep
    decisions_skipped: str | None = None  # why there are no decision maps
    skipped: str | None = None  # why per-example sections are missing
    data_problem: str | None = None  # why the dataset could not be loaded

    @property
    def name(self) -> str:
        return Path(self.run_dir).name


# --------------------------------------------------------------------------- computing


def collect_results(run_dir, *, evaluation=None, options: ResultsOptions = ResultsOptions(),
                    progress: bool = False, save: bool = True) -> Results:
    """Load ``run_dir``, evaluate it on its test split (unless ``evaluation`` is given) and
    gather its :class:`Results`; with ``save``, write the evaluation into ``metrics.json``
    (merged over what training wrote). When the dataset is absent now, the saved metrics
    and top losses are used and the per-example fields say why they are empty.
    """
    from cnnlab.insight.predictions import evaluate_images, evaluate_stream, merged_metrics
    from cnnlab.insight.stream_images import StreamImages
    from cnnlab.runs.directory import load_run, save_metrics
    from cnnlab.train.device import resolve_device

    run = load_run(run_dir)
    model = run.build_model(weights="best").to(resolve_device(options.device))
    data, problem = _load_data(run)
    streamed = data is not None and not hasattr(data.test, "images")
    if evaluation is None and streamed:  # batch by batch from the files; the report's few images decoded by index
        evaluation = evaluate_stream(model, data.test, classes=run.classes, batch_size=options.batch_size,
                                     progress=progress)
    elif evaluation is None and data is not None:
        evaluation = evaluate_images(model, data.test.images, data.test.labels, preprocess=run.preprocess,
                                     classes=run.classes, batch_size=options.batch_size, progress=progress)
    metrics = run.metrics if evaluation is None else merged_metrics(run.readable_metrics, evaluation.metrics)
    images = (StreamImages(data.test) if streamed else data.test.images) if data is not None else None
    why = problem or "the dataset was not loaded"
    summary, text = _model_text(model, run.input_shape)
    results = Results(
        run_dir=run.path, config=run.config, classes=run.classes, history=run.history,
        model_summary=summary, model_text=text, metrics=metrics,
        **_example_fields(evaluation, metrics, images, options),
        first_filters=_first_filters(model),
        **_activation_fields(run, model, evaluation, images, options),
        **_learned_fields(run, model, data, options),
        **_decision_fields(run, model, images, losses_of(evaluation, metrics, options), options),
        skipped=None if evaluation is not None and images is not None else (
            "Per-example sections (images of top losses and wrong predictions, confidence histograms, "
            f"activations) are skipped: {why}" if evaluation is None else
            f"Images (top losses, wrong predictions, activations) are skipped: {why}"),
        data_problem=problem,
    )
    if save and evaluation is not None:  # last: everything above succeeded
        save_metrics(run.path, metrics)
    return results


def _load_data(run) -> tuple[Any, str | None]:
    """The run's dataset, or None and the reason it is absent now."""
    try:
        return (run.load_stream() if run.streamed else run.load_data()), None
    except (CnnlabError, FileNotFoundError, OSError) as exc:
        return None, str(exc)


def _model_text(model, input_shape: Sequence[int]) -> tuple[str | None, str]:
    try:
        from cnnlab.models.summary import summarize

        return str(summarize(model, tuple(input_shape))), str(model)
    except (ImportError, CnnlabError):  # no summary module, or a model it cannot trace
        return None, str(model)


def _saved_top_losses(metrics: dict | None, n: int) -> list:
    from cnnlab.insight.metrics import TopLoss

    saved = (metrics or {}).get("top_losses") or []
    return [TopLoss(**{k: d[k] for k in TopLoss._fields}) for d in saved[:n]]


def _example_fields(ev, metrics: dict | None, images, opt: ResultsOptions) -> dict[str, Any]:
    """Top losses (from the evaluation, else from metrics.json), wrong predictions, confidence."""
    losses = ev.top_losses(opt.n_top_losses) if ev is not None else _saved_top_losses(metrics, opt.n_top_losses)
    out: dict[str, Any] = {"top_losses": losses}
    if ev is None:
        return out
    out["predictions"] = Predictions(images=None, probs=ev.probs, labels=ev.labels, total=len(ev.labels))
    wrong = ev.wrong_indices()
    kept = wrong[: opt.n_wrong]
    out["wrong"] = Predictions(images=images[kept] if images is not None else None, probs=ev.probs[kept],
                               labels=ev.labels[kept], total=len(wrong))
    if images is not None and losses:
        out["top_loss_images"] = images[[t.index for t in losses]]
    return out


def _first_filters(model) -> FilterResults | None:
    from cnnlab.insight.internals import conv_layers, filter_images, filters

    convs = conv_layers(model)
    if not convs:
        return None
    weights = filters(model, convs[0])
    return FilterResults(layer=convs[0], weights=weights, patches=filter_images(weights))


def _activation_fields(run, model, ev, images, opt: ResultsOptions) -> dict[str, Any]:
    from cnnlab.insight.internals import activations_of, conv_layers

    convs = conv_layers(model)
    if images is None or not convs:
        reason = "the dataset is not available" if images is None else "the model has no Conv2d layer"
        return {"activations": None, "activations_skipped": reason}
    picks = np.arange(min(opt.n_activation_images, len(images)))
    picked = images[picks]  # one read: a streamed split decodes what is indexed
    maps = activations_of(model, run.preprocess(picked), convs)
    examples = []
    for j, i in enumerate(picks):
        label = predicted = prob = None
        if ev is not None:
            label, predicted = int(ev.labels[i]), int(ev.preds[i])
            prob = float(ev.probs[i, predicted])
        examples.append(ActivationExample(index=int(i), image=picked[j], maps={n: maps[n][j] for n in convs},
                                          label=label, predicted=predicted, prob=prob))
    return {"activations": examples, "activations_skipped": None}


def _learned_fields(run, model, data, opt: ResultsOptions) -> dict[str, Any]:
    """Feature visualisations of the last conv layer (with their top test images) and the
    embedding map of the test split; a field left None has its reason beside it."""
    from cnnlab.insight.embedding import run_embedding
    from cnnlab.insight.featurevis import run_channel_visuals
    from cnnlab.insight.internals import conv_layers
    from cnnlab.insight.stream_images import load_test_images

    out: dict[str, Any] = {}
    if opt.n_feature_channels < 1 or not conv_layers(model):
        out["features_skipped"] = "the model has no Conv2d layer" if opt.n_feature_channels else "not asked for"
    else:
        last = conv_layers(model)[-1]
        count = min(opt.n_feature_channels, getattr(dict(model.named_modules())[last], "out_channels", 1))
        # A streamed split is scored batch by batch and only the top examples are decoded again.
        out["features"] = run_channel_visuals(run, model, layer=last, channels=list(range(count)),
                                              steps=opt.feature_steps,
                                              images=load_test_images(run, data)[0] if data else None,
                                              k=opt.n_feature_examples)
    if opt.embedding_method is None or data is None:
        out["embedding_skipped"] = "not asked for" if opt.embedding_method is None else "the dataset is not available"
        return out
    try:  # a streamed split: features computed batch by batch, one row per image kept
        out["embedding"] = run_embedding(run.path, method=opt.embedding_method, model=model, data=data,
                                         batch_size=opt.batch_size)
    except CnnlabError as exc:  # e.g. no Linear layer: no penultimate features
        out["embedding_skipped"] = str(exc)
    return out
def losses_of(ev, metrics: dict | None, opt: ResultsOptions) -> list:
    return ev.top_losses(opt.n_top_losses) if ev is not None else _saved_top_losses(metrics, opt.n_top_losses)


def _decision_fields(run, model, images, losses: list, opt: ResultsOptions) -> dict[str, Any]:
    from cnnlab.insight.decisions import explain_decisions

    if images is None or not losses:
        return {"decisions": None, "decisions_skipped": "the dataset is not available" if images is None else None}
    picked = images[[t.index for t in losses[: opt.n_explained]]]
    decisions = explain_decisions(model, run.preprocess, picked, losses, n=opt.n_explained)
    return {"decisions": decisions, "decisions_skipped": None if decisions else "the model has no Conv2d layer"}


def collect_filters(run_dir, *, layer: str | int | None = None) -> FilterResults:
    """The filters of one conv layer (default: the first) of a run's best weights.
    CnnlabError listing the conv layers when ``layer`` is not one."""
    from cnnlab.insight.internals import conv_layers, filter_images, filters, get_layer
    from cnnlab.runs.directory import load_run

    run = load_run(run_dir)
    model = run.build_model(weights="best")
    if layer is None:
        convs = conv_layers(model)
        if not convs:
            raise CnnlabError(f"{type(model).__name__} has no Conv2d layer, so it has no filters to show")
        name = convs[0]
    else:
        name = get_layer(model, layer)[0]
    weights = filters(model, name)
    return FilterResults(layer=name, weights=weights, patches=filter_images(weights), run_dir=run.path)
