"""fit and summarize as a Keras user and a PyTorch user write them (issue 27).

Each of the two scripts is written the way its user writes code elsewhere: the Keras user
passes one-hot labels, validation_split, shuffle, a loss name and a ``lambda epoch, logs:``
callback; the PyTorch user passes an optimizer built on the model's parameters, a loss
module, a Dataset of uint8 (H, W, C) arrays, and asks for a torchinfo-style summary.
Then the forms that cannot work get one-line errors that say what to pass.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.train.batches import Batches


def _images(n=60, seed=0):
    """uint8 (N, 8, 8, 1) images whose class (0..2) is which third of the image is bright."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, 8, 8, 1), dtype=np.uint8)
    for i, k in enumerate(y):
        x[i, :, 3 * k : 3 * k + 2, 0] += 180
    return x, y


def _net(classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, classes))


def test_a_keras_users_script():
    x, y = _images()
    y_onehot = np.eye(3, dtype=np.float32)[y]  # keras.utils.to_categorical(y)
    model = _net()
    seen = []
    history = cnnlab.fit(model, x, y_onehot, epochs=3, batch_size=16, lr=0.01, validation_split=0.25, shuffle=True,
                         loss="categorical_crossentropy", verbose=0,
                         callbacks=[lambda epoch, logs: seen.append((epoch, round(logs["val_accuracy"], 6)))])
    # validation_split holds out the last quarter (15 of 60), as Keras does, before shuffling.
    assert [e for e, _ in seen] == [0, 1, 2]  # Keras' 0-based epochs, after every epoch
    assert [a for _, a in seen] == [round(r["val_accuracy"], 6) for r in history.epochs]
    model.eval()
    with torch.no_grad():
        held = cnnlab.data.transforms.to_tensor(x[45:])
        acc = (model(held).argmax(1).numpy() == y[45:]).mean()
    assert acc == pytest.approx(history.epochs[-1]["val_accuracy"])
    assert history.epochs[-1]["accuracy"] > 0.6  # the bright third is easy to learn


def test_validation_split_equals_passing_the_tail_and_shuffle_false_keeps_the_order():
    x, y = _images()
    a, b = _net(), _net()
    ha = cnnlab.fit(a, x, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    hb = cnnlab.fit(b, x[:45], y[:45], epochs=2, batch_size=16, validation_data=(x[45:], y[45:]), verbose=0)
    same = ('loss', 'accuracy', 'val_loss', 'val_accuracy')
    assert {k: ha.history[k] for k in same} == {k: hb.history[k] for k in same}
    order = Batches(7, 3, seed=0, shuffle=False)
    assert [b.tolist() for b in order.epoch(None)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert sorted(sum((b.tolist() for b in Batches(7, 3, seed=0).epoch(None)), [])) == list(range(7))
    c, d = _net(), _net()
    cnnlab.fit(c, x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    cnnlab.fit(d, x, y, epochs=1, batch_size=16, shuffle=True, verbose=0)
    assert not torch.equal(c[0].weight, d[0].weight)  # the order of the batches changed the training
    e = _net()
    cnnlab.fit(e, PhotoDataset(x, y), epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert torch.equal(c[0].weight, e[0].weight)  # a Dataset in order trains as the arrays in order


class PhotoDataset(Dataset):
    """What a PyTorch user writes around load_dataset's arrays: (H, W, C) uint8 images and int labels."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_a_pytorch_users_script():
    x, y = _images()
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.05)
    history = cnnlab.fit(model, PhotoDataset(x[:45], y[:45]), optimizer=optimizer, loss=criterion, epochs=4,
                         batch_size=15, validation_data=PhotoDataset(x[45:], y[45:]), verbose=0,
                         precision="fp32")  # fp32 here only so that the check below can be exact
    assert history.epochs[-1]["lr"] == pytest.approx(0.2)  # the optimizer's own rate, untouched
    assert optimizer.state  # the very optimizer given did the steps (its momentum buffers exist)
    assert history.epochs[-1]["val_accuracy"] > 0.6
    # val_loss is the given loss (label smoothing included), computed in eval mode over the held-out images
    model.eval()
    with torch.no_grad():
        logits = model(cnnlab.data.transforms.to_tensor(x[45:]))
    assert history.epochs[-1]["val_loss"] == pytest.approx(criterion(logits, torch.as_tensor(y[45:])).item(),
                                                            rel=1e-5)
    # torchinfo's habit: input_size=(N, C, H, W); PyTorch's (C, H, W); Keras' (H, W, C): one summary.
    keras = cnnlab.summarize(model, (8, 8, 1))
    assert str(cnnlab.summarize(model, input_size=(32, 1, 8, 8))) == str(keras)
    assert str(cnnlab.summarize(model, (1, 8, 8))) == str(keras)
    rgb = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 30 * 30, 2))
    assert cnnlab.summarize(rgb, (3, 32, 32)).input_shape == (32, 32, 3)
    assert cnnlab.summarize(rgb, torch.Size([8, 3, 32, 32])).input_shape == (32, 32, 3)


def test_an_optimizer_factory_and_a_loss_function():
    x, y = _images()
    a, b = _net(), _net()
    ha = cnnlab.fit(a, x, y, epochs=2, batch_size=16, verbose=0,
                    optimizer=functools.partial(torch.optim.SGD, lr=0.05), loss=nn.functional.cross_entropy)
    hb = cnnlab.fit(b, x, y, epochs=2, batch_size=16, verbose=0, optimizer="sgd", lr=0.05)
    assert ha.history["loss"] == pytest.approx(hb.history["loss"], rel=1e-5)  # the same SGD, the same loss
    per_example = cnnlab.fit(_net(), x, y, epochs=1, batch_size=16, verbose=0, optimizer="sgd", lr=0.05,
                             loss=lambda logits, t: nn.functional.cross_entropy(logits, t, reduction="none"))
    assert per_example.history["loss"][0] == pytest.approx(ha.history["loss"][0], rel=1e-5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"optimizer": 0.1}, "optimizer must be a name such as 'adam'"),
    ({"optimizer": torch.optim.SGD(_net().parameters(), lr=0.1)}, "not this model's"),
    ({"optimizer": lambda params: "sgd"}, "returned str, not a torch.optim.Optimizer"),
    ({"optimizer": torch.optim.SGD, "lr": 0.1}, "lr cannot be set beside your own optimizer"),
    ({"loss": "mse"}, "unknown loss 'mse'"),
    ({"loss": nn.CrossEntropyLoss}, "pass an instance: loss=CrossEntropyLoss()"),
    ({"loss": lambda logits, t: logits[:2, 0]}, "return a scalar"),
    ({"loss": nn.CrossEntropyLoss(), "label_smoothing": 0.1}, "label_smoothing applies to cnnlab's"),
    ({"validation_split": 1.5}, "validation_split must be a fraction"),
    ({"validation_split": 0.001}, "leaves no validation examples"),
    ({"validation_split": 0.2, "validation_data": "x"}, "not both"),
    ({"shuffle": "yes"}, "shuffle must be True or False"),
    ({"callbacks": [lambda a, b, c: None]}, "takes 3 arguments"),
])
def test_what_cannot_work_is_a_one_line_error(kwargs, message):
    x, y = _images(20)
    with pytest.raises(CnnlabError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        cnnlab.fit(_net(), x, y, epochs=1, batch_size=8, verbose=0, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("labels", "message"), [
    (np.full((20, 3), 0.5), "must be one-hot"),
    (np.zeros((20, 2, 2)), "class indices (N,) or one-hot"),
    (np.linspace(0, 2, 20), "whole class indices"),
])
def test_labels_that_are_neither_indices_nor_one_hot(labels, message):
    x, _ = _images(20)
    with pytest.raises(CnnlabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cnnlab.fit(_net(), x, labels, epochs=1, batch_size=8, verbose=0)


def test_validation_split_of_a_dataset_says_what_to_pass():
    x, y = _images(20)
    with pytest.raises(CnnlabError, match="validation_data= a second one"):
        cnnlab.fit(_net(), PhotoDataset(x, y), epochs=1, validation_split=0.2, verbose=0)
