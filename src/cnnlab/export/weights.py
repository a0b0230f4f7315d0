"""Weights alone as safetensors, with what is needed to rebuild and use the network.

A ``.safetensors`` file holds the state dict (no code, nothing to unpickle) and string
metadata: ``architecture`` (a name from ``cnnlab.models.MODELS`` or a spec string),
``input_shape`` (H, W, C), ``num_classes``, ``classes``, the normalisation (``mean``,
``std``) and ``preprocess`` ("run": scale to [0, 1] and normalise as in training;
"imagenet": the pretrained nets' resize, crop and normalisation). Values other than plain
strings are JSON. ``open_weights`` reads it back as an object that ``cnnlab predict`` and
``cnnlab activations`` use like a run directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.extras import require
from cnnlab.files import write_bytes

FORMAT_TAG = "cnnlab-weights-1"
_JSON_KEYS = ("input_shape", "num_classes", "classes", "mean", "std")


def write_safetensors(model: nn.Module, path: Path, meta: dict) -> None:
    """Write ``model``'s state dict with ``meta`` (see the module docstring) to ``path``."""
    st = require("safetensors.torch", extra="export", package="safetensors", purpose="safetensors export")
    # safetensors stores plain row-major buffers: a channels_last weight must be copied out.
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    strings = {"format": FORMAT_TAG, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}}
    data = st.save(tensors, metadata=strings)
    write_bytes(path, data)


def read_safetensors(path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, metadata with its JSON values decoded) of a .safetensors file."""
    st = require("safetensors", extra="export", purpose="reading .safetensors weights")
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"weights file {str(path)!r} not found; pass an existing .safetensors file")
    try:
        with st.safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    except Exception as exc:  # safetensors raises its own SafetensorError for a damaged header
        raise CnnlabError(f"cannot read {str(path)!r} as safetensors ({str(exc).splitlines()[0][:150]}); "
                          "the file is truncated or not a .safetensors file") from exc
    meta = {k: json.loads(v) if k in _JSON_KEYS else v for k, v in raw.items()}
    return state, meta


class ExportedWeights:
    """A .safetensors file written by ``cnnlab export``, used like a run directory
    (``classes``, ``input_shape``, ``config``, ``build_model()``, ``preprocess()``)."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.state, meta = read_safetensors(self.path)
        missing = [k for k in ("architecture", "input_shape", "num_classes") if k not in meta]
        if missing:
            raise CnnlabError(f"{self.path} has no {', '.join(missing)} in its metadata; it was not written by "
                              "`cnnlab export --format safetensors`, so cnnlab cannot rebuild its network")
        self.config = {"model": meta["architecture"], "data": meta.get("data"), **meta}

    @property
    def classes(self) -> list[str]:
        return list(self.config.get("classes") or [str(i) for i in range(self.config["num_classes"])])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.config["input_shape"])

    def build_model(self, weights: str = "best") -> nn.Module:
        """The network in eval mode with these weights (``weights`` is accepted for Run's signature)."""
        from cnnlab.models import build

        with torch.device("meta"):  # no random init: the file's tensors are assigned as they are
            model = build(self.config["model"], input_shape=self.input_shape, num_classes=self.config["num_classes"])
        try:
            model.load_state_dict(self.state, assign=True)
        except RuntimeError as exc:
            reason = " ".join(str(exc).split())  # torch's message spans lines: one line here
            raise CnnlabError(f"{self.path} does not fit {self.config['model']}: {reason[:300]}") from exc
        return model.eval()

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, C) -> the float (N, C, H, W) tensor the network expects."""
        from cnnlab.data.transforms import to_tensor

        if tuple(images.shape[1:]) != self.input_shape:
            raise CnnlabError(f"images of shape {tuple(images.shape[1:])} do not match the network's input "
                              f"{self.input_shape} (H, W, C); resize/convert them first")
        return to_tensor(images, mean=self.config.get("mean"), std=self.config.get("std"))


def open_model(path):
    """A run directory (``cnnlab.runs.directory.Run``) or a .safetensors file (``ExportedWeights``)."""
    path = Path(path)
    if path.suffix == ".safetensors" or path.is_file():
        return ExportedWeights(path)
    from cnnlab.runs.directory import load_run

    return load_run(path)
