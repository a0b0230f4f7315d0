"""TensorBoard logs of a training run: scalars, histograms, filters, and the embedding projector.

``TensorBoardLog(logdir)`` is a ``fit()`` callback: after every epoch it writes each value
of the epoch's logs (loss, accuracy, val_loss, val_accuracy, lr, seconds; the tags are
history.csv's column names, the step is the epoch), a histogram of every parameter and of
its gradient (the last batch's: each step zeroes them first, so that is what is left), and
the first convolution's filters as one image. ``write_embedding`` (called by ``fit`` when
training ends) writes the projector's files itself rather than through ``add_embedding``,
which breaks on non-square images and on more images than one sprite sheet holds
(pytorch#46739, pytorch#75502): here each thumbnail keeps its aspect ratio and shrinks so
that the whole sheet stays within the projector's 8192 x 8192 limit.

    tensorboard --logdir runs/NAME/tensorboard
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnlab.extras import require
from cnnlab.files import write_text, write_with

SPRITE_LIMIT = 8192  # the projector refuses a larger sprite sheet (either side, in pixels)
PROJECTOR_DIR = "projector"


class TensorBoardLog:
    """A ``fit()`` callback writing TensorBoard event files into ``logdir``; see the module doc."""

    def __init__(self, logdir, *, classes=None, histograms: bool = True, max_points: int = 5000) -> None:
        tb = require("torch.utils.tensorboard", extra="tensorboard", package="tensorboard",
                     purpose="TensorBoard logging")
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.classes = list(classes) if classes is not None else None
        self.histograms, self.max_points = histograms, max_points
        self.writer = tb.SummaryWriter(str(self.logdir))

    def __call__(self, end) -> None:
        """Log one finished epoch (``end`` is a ``cnnlab.train.loop.EpochEnd``)."""
        for key, value in end.logs.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, end.epoch)
        if self.histograms:
            for name, p in end.model.named_parameters():
                self.writer.add_histogram(f"weights/{name}", p.detach().float().cpu(), end.epoch)
                if p.grad is not None:
                    self.writer.add_histogram(f"gradients/{name}", p.grad.detach().float().cpu(), end.epoch)
        grid = first_filters_image(end.model)
        if grid is not None:
            self.writer.add_image("filters/first_conv", grid, end.epoch, dataformats="HWC")
        self.writer.flush()

    def write_embedding(self, model: nn.Module, x: torch.Tensor, labels, *, batch_size: int = 512) -> Path:
        """The projector's files for the first ``max_points`` of ``x`` (N, C, H, W): the inputs
        of the model's last Linear layer (its penultimate features), labels and predictions as
        metadata, and the images as a sprite sheet. Returns the projector config's path."""
        x, labels = x[: self.max_points], np.asarray(labels)[: self.max_points]
        features, predicted = penultimate_features(model, x, batch_size=batch_size)
        names = self.classes or [str(i) for i in range(int(max(labels.max(), predicted.max())) + 1)]
        folder = self.logdir / PROJECTOR_DIR
        folder.mkdir(exist_ok=True)
        write_text(folder / "tensors.tsv", "".join("\t".join(f"{v:.6g}" for v in row) + "\n" for row in features))
        write_text(folder / "metadata.tsv", "label\tpredicted\n" + "".join(
            f"{_tsv(names[int(a)])}\t{_tsv(names[int(b)])}\n" for a, b in zip(labels, predicted, strict=True)))
        sprite, (w, h) = sprite_sheet(x)
        write_with(folder / "sprite.png", lambda f: sprite.save(f, format="PNG"))
        config = (f'embeddings {{\n  tensor_name: "penultimate"\n  tensor_path: "{PROJECTOR_DIR}/tensors.tsv"\n'
                  f'  metadata_path: "{PROJECTOR_DIR}/metadata.tsv"\n  sprite {{\n'
                  f'    image_path: "{PROJECTOR_DIR}/sprite.png"\n    single_image_dim: {w}\n'
                  f'    single_image_dim: {h}\n  }}\n}}\n')
        return write_text(self.logdir / "projector_config.pbtxt", config)

    def close(self) -> None:
        self.writer.close()


def _tsv(text: str) -> str:
    return str(text).replace("\t", " ").replace("\n", " ")


def first_filters_image(model: nn.Module) -> np.ndarray | None:
    """The first Conv2d's filters tiled into one (H, W, 3) float image in [0, 1]; None without one."""
    from cnnlab.insight.inspect import conv_layers, filter_images, filters

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


def penultimate_features(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), predicted class (N,)): what the last Linear layer receives, in eval mode.

    A model without a Linear layer gives its flattened outputs."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    seen: list[torch.Tensor] = []
    hook = linears[-1].register_forward_pre_hook(lambda m, args: seen.append(args[0].flatten(1).float().cpu())) \
        if linears else None
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad():
            logits = torch.cat([model(chunk.to(device)).float().cpu() for chunk in x.split(batch_size)])
    finally:
        model.train(was_training)
        if hook is not None:
            hook.remove()
    features = torch.cat(seen) if seen else logits.flatten(1)
    return features.numpy(), logits.argmax(1).numpy()


def sprite_sheet(x: torch.Tensor) -> tuple[Image.Image, tuple[int, int]]:
    """Images (N, C, H, W) as one square sprite sheet, row-major, and one thumbnail's (width, height).

    Each image is min-max scaled on its own (the inputs may be normalised any way).
    Thumbnails keep the images' aspect ratio and shrink until ceil(sqrt(N)) of them fit in
    SPRITE_LIMIT pixels both ways.
    """
    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    scale = min(1.0, SPRITE_LIMIT / (cols * w), SPRITE_LIMIT / (cols * h))
    tw, th = max(1, int(w * scale)), max(1, int(h * scale))
    x = x.detach().float().cpu()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    span = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-12)
    pixels = ((x - lo) / span * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    rgb = c == 3  # any other channel count: the first channel, in grey
    sheet = Image.new("RGB" if rgb else "L", (cols * tw, cols * th))
    for i, img in enumerate(pixels):
        thumb = Image.fromarray(np.ascontiguousarray(img if rgb else img[..., 0]))
        if (tw, th) != (w, h):
            thumb = thumb.resize((tw, th), Image.BILINEAR)
        r, col = divmod(i, cols)
        sheet.paste(thumb, (col * tw, r * th))
    return sheet, (tw, th)
