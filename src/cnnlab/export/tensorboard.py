"""TensorBoard logs of a training run: scalars, histograms, filters, and the embedding projector.

``TensorBoardLog(logdir)`` is a ``fit()`` callback. As Keras' TensorBoard callback lays them
out, there are two runs: ``logdir/train`` and ``logdir/validation``, each with the same tags
(``epoch_loss``, ``epoch_accuracy``), so TensorBoard draws the training and the validation
curve of a metric on one chart; ``epoch_learning_rate`` and ``epoch_seconds`` are in train/.
After every epoch it writes each value of the epoch's logs (history.csv's columns, the step
is the epoch), and into train/ a histogram of every parameter and of
its gradient (the last batch's: each step zeroes them first, so that is what is left), and
the first convolution's filters as one image. ``write_embedding`` (called by ``cnnlab.fit``
when training ends) writes the projector's files itself rather than through ``add_embedding``,
which breaks on non-square images and on more images than one sprite sheet holds
(pytorch#46739, pytorch#75502): the features and the sprite sheet come from
``cnnlab.insight.embedding`` (images letterboxed into square cells that shrink so the sheet
stays within the projector's 8192 x 8192 limit), into train/ as Keras puts its embeddings.

    tensorboard --logdir runs/NAME/tensorboard

``fit`` here is the public ``cnnlab.fit``: ``cnnlab.train.loop.fit`` (which knows only
callbacks) with ``tensorboard=DIR`` attaching this callback and writing the projector at the
end. It lives here, above training, so that training never imports the exporters.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnlab.extras import require
from cnnlab.files import write_text, write_with

PROJECTOR_DIR = "projector"
TRAIN, VALIDATION = "train", "validation"  # Keras' run folders
# history.csv's columns that have a TensorBoard tag of another name (Keras' own names); the rest are epoch_<column>.
TAGS = {"lr": "epoch_learning_rate"}
log = logging.getLogger(__name__)


class TensorBoardLog:
    """A ``fit()`` callback writing TensorBoard event files into ``logdir``; see the module doc."""

    @staticmethod
    def check() -> None:
        """A one-line error now, before anything is written, where the tensorboard extra is missing."""
        require("torch.utils.tensorboard", extra="tensorboard", package="tensorboard", purpose="TensorBoard logging")

    def __init__(self, logdir, *, classes=None, histograms: bool = True, max_points: int = 5000) -> None:
        tb = require("torch.utils.tensorboard", extra="tensorboard", package="tensorboard",
                     purpose="TensorBoard logging")
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.classes = list(classes) if classes is not None else None
        self.histograms, self.max_points = histograms, max_points
        self._tb = tb
        self.writer = tb.SummaryWriter(str(self.logdir / TRAIN))
        self.val_writer = None  # made with the first validation value: no empty validation/ without one

    def __call__(self, end) -> None:
        """Log one finished epoch (``end`` is a ``cnnlab.train.loop.EpochEnd``)."""
        for key, value in end.logs.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                continue
            if key.startswith("val_"):
                if self.val_writer is None:
                    self.val_writer = self._tb.SummaryWriter(str(self.logdir / VALIDATION))
                self.val_writer.add_scalar(tag_of(key[4:]), value, end.epoch)
            else:
                self.writer.add_scalar(tag_of(key), value, end.epoch)
        if self.histograms:
            for name, p in end.model.named_parameters():
                self.writer.add_histogram(f"weights/{name}", p.detach().float().cpu(), end.epoch)
                if p.grad is not None:
                    self.writer.add_histogram(f"gradients/{name}", p.grad.detach().float().cpu(), end.epoch)
        grid = first_filters_image(end.model)
        if grid is not None:
            self.writer.add_image("filters/first_conv", grid, end.epoch, dataformats="HWC")
        self.writer.flush()
        if self.val_writer is not None:
            self.val_writer.flush()

    def write_embedding(self, model: nn.Module, x: torch.Tensor, labels, *, batch_size: int = 512) -> Path | None:
        """The projector's files for the first ``max_points`` of ``x`` (N, C, H, W): the inputs
        of the model's last Linear layer (its penultimate features), labels and predictions as
        metadata, and the images as a sprite sheet. Returns the projector config's path, or
        None for a model without a Linear layer (nothing to map; logged)."""
        from cnnlab.insight.embedding import penultimate_features, sprite_sheet

        if not any(isinstance(m, nn.Linear) for m in model.modules()):
            log.info("%s has no Linear layer: no embedding projector written", type(model).__name__)
            return None
        x, labels = x[: self.max_points], np.asarray(labels)[: self.max_points]
        features, predicted = penultimate_features(model, x, batch_size=batch_size)
        names = self.classes or [str(i) for i in range(int(max(labels.max(), predicted.max())) + 1)]
        folder = self.logdir / TRAIN / PROJECTOR_DIR
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "tensors.tsv", "".join("\t".join(f"{v:.6g}" for v in row) + "\n" for row in features))
        write_text(folder / "metadata.tsv", "label\tpredicted\n" + "".join(
            f"{_tsv(names[int(a)])}\t{_tsv(names[int(b)])}\n" for a, b in zip(labels, predicted, strict=True)))
        # Inputs may be normalised any way: each image is scaled to [0, 1] on its own for display.
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        shown = ((x - lo) / (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-12)).permute(0, 2, 3, 1)
        sprite = sprite_sheet(shown.float().cpu().numpy(), thumb=max(x.shape[2:]))  # (S, S, C), cells square
        image = Image.fromarray(np.ascontiguousarray(sprite.sheet[..., 0] if sprite.sheet.shape[-1] == 1
                                                     else sprite.sheet))
        write_with(folder / "sprite.png", lambda f: image.save(f, format="PNG"))
        config = (f'embeddings {{\n  tensor_name: "penultimate"\n  tensor_path: "{PROJECTOR_DIR}/tensors.tsv"\n'
                  f'  metadata_path: "{PROJECTOR_DIR}/metadata.tsv"\n  sprite {{\n'
                  f'    image_path: "{PROJECTOR_DIR}/sprite.png"\n    single_image_dim: {sprite.thumb}\n'
                  f'    single_image_dim: {sprite.thumb}\n  }}\n}}\n')
        return write_text(self.logdir / TRAIN / "projector_config.pbtxt", config)

    def close(self) -> None:
        self.writer.close()
        if self.val_writer is not None:
            self.val_writer.close()


def fit(model: nn.Module, x, y=None, *, tensorboard=None, callbacks=(), **kwargs):
    """``cnnlab.train.loop.fit(model, x, y, ...)``, and with ``tensorboard`` (a folder, or a
    ``TensorBoardLog``) its logs there, the embedding projector of the validation data (else the
    training arrays) written when training ends. Every other argument is ``fit``'s."""
    from cnnlab.train import distributed as dist
    from cnnlab.train.batches import as_inputs
    from cnnlab.train.feed import is_loader_data
    from cnnlab.train.loop import fit as plain_fit

    if tensorboard is None or not dist.is_main():  # under torchrun rank 0 alone writes the logs
        return plain_fit(model, x, y, callbacks=callbacks, **kwargs)
    log = tensorboard if isinstance(tensorboard, TensorBoardLog) else TensorBoardLog(tensorboard)
    try:
        history = plain_fit(model, x, y, callbacks=[*callbacks, log], **kwargs)
        val = kwargs.get("validation_data")
        val = val if val is not None else kwargs.get("validation")
        xe, ye = val if val is not None else ((x, y) if y is not None else (x, None))
        if ye is not None and not is_loader_data(xe):  # the projector's points come from arrays only
            xe, ye = as_inputs(xe[: log.max_points], ye[: log.max_points], torch.device("cpu"))
            log.write_embedding(model, xe, ye)
    finally:
        log.close()
    return history


def tag_of(column: str) -> str:
    """The TensorBoard tag of a history.csv column (without ``val_``): Keras' ``epoch_loss``, ..."""
    return TAGS.get(column, f"epoch_{column}")


def _tsv(text: str) -> str:
    return str(text).replace("\t", " ").replace("\n", " ")


def first_filters_image(model: nn.Module) -> np.ndarray | None:
    """The first Conv2d's filters tiled into one (H, W, 3) float image in [0, 1]; None without one."""
    from cnnlab.insight.internals import conv_layers, filter_images, filters

    if not conv_layers(model):
        return None
    patches = filter_images(filters(model))  # (n, kh, kw) grey or (n, kh, kw, 3) RGB
    if patches.ndim == 3:
        patches = np.repeat(patches[..., None], 3, axis=3)
    n, kh, kw, _ = patches.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    zoom = max(1, 32 // max(kh, kw))  # a 3x3 filter shown 30x30: TensorBoard does not upscale
    grid = np.ones((rows * (kh + 1) + 1, cols * (kw + 1) + 1, 3), dtype=np.float32)  # white 1-pixel gaps
    for i, patch in enumerate(patches):
        r, c = divmod(i, cols)
        grid[1 + r * (kh + 1): 1 + r * (kh + 1) + kh, 1 + c * (kw + 1): 1 + c * (kw + 1) + kw] = patch
    return grid.repeat(zoom, axis=0).repeat(zoom, axis=1)
