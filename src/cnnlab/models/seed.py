"""The tutorials' networks, layer for layer, as ``nn.Sequential``.

Each function takes ``input_shape=(H, W, C)`` (Keras order, as the tutorials write it) and
``num_classes`` and returns a model that takes NCHW float input and returns logits: the
tutorials' final ``Dense(10, activation="softmax")`` is a plain ``Linear`` here, because
softmax belongs to the loss (``cross_entropy``) and to prediction.

Layers are separate modules in the tutorial's order (Conv2d, ReLU, MaxPool2d, Dropout,
Flatten, Linear) so that ``model[i]`` is the i-th row of the Keras summary and activations
are easy to reach with hooks. ``ReLU`` is never in-place: an in-place ReLU would overwrite
the convolution's output that a forward hook has just captured.

Shape comments give (N, C, H, W) in general and, after ``#``, the numbers for the
tutorial's own input. Initialisation is Keras' (Glorot-uniform kernels, zero biases: see
``cnnlab.models.init``), as in the tutorials; ``build(name, init="torch")`` gives PyTorch's.
"""

from __future__ import annotations

from torch import nn

from cnnlab.models.init import initialize


def _keras(*layers: nn.Module) -> nn.Sequential:
    """The layers as one ``nn.Sequential``, initialised as Keras initialises them."""
    return initialize(nn.Sequential(*layers), init="keras")


def _pooled(size: int, window: int = 2) -> int:
    """Side of a map after MaxPool2d(window) (floor, as Keras 'valid' pooling)."""
    return size // window


def intro_cnn(input_shape=(28, 28, 1), num_classes=10) -> nn.Sequential:
    """Smallest tutorial CNN: one 3x3 conv, max-pool, dropout, dense (MNIST, 54,410 params)."""
    h, w, c = input_shape
    h, w = _pooled(h - 2), _pooled(w - 2)
    return _keras(
        nn.Conv2d(c, 32, 3),  # (N, 32, H-2, W-2)         26x26x32 on 28x28x1
        nn.ReLU(),
        nn.MaxPool2d(2),  # (N, 32, (H-2)/2, (W-2)/2)     13x13x32
        nn.Dropout(0.25),
        nn.Flatten(),  # (N, 32*h*w)                      5408
        nn.Dropout(0.5),
        nn.Linear(32 * h * w, num_classes),  # (N, classes)   10
    )


def mnist_cnn(input_shape=(28, 28, 1), num_classes=10) -> nn.Sequential:
    """Two 'same' 3x3 conv + pool blocks, dense 64 (no activation), dropout (MNIST, 220,234 params)."""
    h, w, c = input_shape
    h, w = _pooled(_pooled(h)), _pooled(_pooled(w))
    return _keras(
        nn.Conv2d(c, 32, 3, padding=1),  # (N, 32, H, W)      28x28x32
        nn.ReLU(),
        nn.MaxPool2d(2),  # (N, 32, H/2, W/2)                 14x14x32
        nn.Conv2d(32, 64, 3, padding=1),  # (N, 64, H/2, W/2) 14x14x64
        nn.ReLU(),
        nn.MaxPool2d(2),  # (N, 64, H/4, W/4)                 7x7x64
        nn.Flatten(),  # (N, 64*h*w)                          3136
        # No activation after Dense(64): the tutorial (and the plain-PyTorch peer in
        # shared/bench/peer_torch_mnist.py) has none, so we keep it identical.
        nn.Linear(64 * h * w, 64),  # (N, 64)
        nn.Dropout(0.5),
        nn.Linear(64, num_classes),  # (N, classes)           10
    )


def mnist_deep(input_shape=(28, 28, 1), num_classes=10) -> nn.Sequential:
    """Keras' mnist_cnn example: two valid 3x3 convs, pool, dense 128 (MNIST, 600,810 params)."""
    h, w, c = input_shape
    h, w = _pooled(h - 4), _pooled(w - 4)
    return _keras(
        nn.Conv2d(c, 32, 3),  # (N, 32, H-2, W-2)             26x26x32
        nn.ReLU(),
        nn.Conv2d(32, 32, 3),  # (N, 32, H-4, W-4)            24x24x32
        nn.ReLU(),
        nn.MaxPool2d(2),  # (N, 32, (H-4)/2, (W-4)/2)         12x12x32
        nn.Dropout(0.25),
        nn.Flatten(),  # (N, 32*h*w)                          4608
        nn.Linear(32 * h * w, 128),  # (N, 128)
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, num_classes),  # (N, classes)          10
    )


def cifar_cnn(input_shape=(32, 32, 3), num_classes=10) -> nn.Sequential:
    """TensorFlow's CIFAR-10 tutorial: three valid 3x3 convs, two pools, dense 64 (94,890 params)."""
    h, w, c = input_shape
    h, w = _pooled(_pooled(h - 2) - 2) - 2, _pooled(_pooled(w - 2) - 2) - 2
    return _keras(
        nn.Conv2d(c, 32, 3),  # (N, 32, H-2, W-2)             30x30x32 on 32x32x3
        nn.ReLU(),
        nn.MaxPool2d(2),  # (N, 32, ., .)                     15x15x32
        nn.Conv2d(32, 32, 3),  # (N, 32, ., .)                13x13x32
        nn.ReLU(),
        nn.MaxPool2d(2),  # (N, 32, ., .)                     6x6x32
        nn.Conv2d(32, 64, 3),  # (N, 64, h, w)                4x4x64
        nn.ReLU(),
        nn.Flatten(),  # (N, 64*h*w)                          1024
        nn.Linear(64 * h * w, 64),  # (N, 64)
        nn.ReLU(),
        nn.Linear(64, num_classes),  # (N, classes)           10
    )


def cifar_6layer(input_shape=(32, 32, 3), num_classes=10) -> nn.Sequential:
    """Keras' cifar10_cnn example: 2x(same conv, valid conv, pool, dropout), dense 512 (1,250,858 params)."""
    h, w, c = input_shape
    h, w = _pooled(_pooled(h - 2) - 2), _pooled(_pooled(w - 2) - 2)
    return _keras(
        nn.Conv2d(c, 32, 3, padding=1),  # (N, 32, H, W)      32x32x32
        nn.ReLU(),
        nn.Conv2d(32, 32, 3),  # (N, 32, H-2, W-2)            30x30x32
        nn.ReLU(),
        nn.MaxPool2d(2),  # (N, 32, ., .)                     15x15x32
        nn.Dropout(0.25),
        nn.Conv2d(32, 64, 3, padding=1),  # (N, 64, ., .)     15x15x64
        nn.ReLU(),
        nn.Conv2d(64, 64, 3),  # (N, 64, ., .)                13x13x64
        nn.ReLU(),
        nn.MaxPool2d(2),  # (N, 64, h, w)                     6x6x64
        nn.Dropout(0.25),
        nn.Flatten(),  # (N, 64*h*w)                          2304
        nn.Linear(64 * h * w, 512),  # (N, 512)
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(512, num_classes),  # (N, classes)          10
    )


SEED_MODELS = {
    "intro-cnn": intro_cnn,
    "mnist-cnn": mnist_cnn,
    "mnist-deep": mnist_deep,
    "cifar-cnn": cifar_cnn,
    "cifar-6layer": cifar_6layer,
}
