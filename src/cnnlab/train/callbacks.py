"""Callbacks in Keras' shape: objects with ``on_epoch_begin/on_epoch_end/on_batch_end``.

A callback is either

- an object with any of ``on_train_begin(logs)``, ``on_epoch_begin(epoch, logs)``,
  ``on_batch_end(batch, logs)``, ``on_epoch_end(epoch, logs)``, ``on_train_end(logs)``
  (``epoch`` and ``batch`` 0-based, as in Keras; subclass ``Callback`` or not), or
- a plain function of one ``EpochEnd`` (cnnlab's own form, used for checkpoints), called
  after every epoch, or
- a function of ``(epoch, logs)`` (``lambda epoch, logs: ...``, as Keras' LambdaCallback calls
  its ``on_epoch_end``), called after every epoch with the 0-based epoch and a dict of its logs.

Stopping early, as Keras does it: set ``self.model.stop_training = True`` (fit gives every
callback that has a ``model`` attribute or a ``set_model`` method the model first), or raise
``StopTraining`` from any hook. Training then ends after the current batch; the epochs
finished so far are kept in the History.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

HOOKS = ("on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end")


class StopTraining(Exception):  # noqa: N818 (Keras users know the name from their own code)
    """Raise from a callback hook to end training after the current batch."""


class Callback:
    """Base class with empty hooks (override the ones you need); ``self.model`` is the trained model."""

    model = None

    def set_model(self, model) -> None:
        self.model = model

    def on_train_begin(self, logs: dict | None = None) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...

    def on_train_end(self, logs: dict | None = None) -> None: ...


class CallbackList:
    """Dispatches fit's events to the callbacks, and tells fit when one asks to stop."""

    def __init__(self, callbacks: Sequence, model) -> None:
        from cnnlab.errors import CnnlabError

        self.objects, self.functions = [], []
        for cb in callbacks:
            if any(hasattr(cb, hook) for hook in HOOKS):
                self.objects.append(cb)
                if hasattr(cb, "set_model"):
                    cb.set_model(model)
            elif callable(cb):
                self.functions.append((cb, _positional(cb)))
            else:
                raise CnnlabError(f"callback {cb!r} is neither a function of EpochEnd or of (epoch, logs) nor an "
                                  f"object with {', '.join(HOOKS)}; subclass cnnlab.train.callbacks.Callback")
        self.model = model
        self.stopped = False
        model.stop_training = False

    @property
    def wants_batches(self) -> bool:
        return any(hasattr(cb, "on_batch_end") for cb in self.objects)

    def call(self, hook: str, *args) -> bool:
        """Run ``hook`` on every callback that has it; True when training should stop."""
        try:
            for cb in self.objects:
                method: Callable | None = getattr(cb, hook, None)
                if method is not None:
                    method(*args)
        except StopTraining:
            self.stopped = True
        self.stopped = self.stopped or bool(getattr(self.model, "stop_training", False))
        return self.stopped

    def epoch_end(self, end) -> bool:
        """cnnlab's functions get the EpochEnd, Keras-style objects (epoch, logs)."""
        try:
            for fn, arity in self.functions:
                fn(end) if arity == 1 else fn(end.epoch - 1, dict(end.logs))
        except StopTraining:
            self.stopped = True
        return self.call("on_epoch_end", end.epoch - 1, dict(end.logs))


def _positional(fn) -> int:
    """How a plain function callback is called: 1 (an EpochEnd) or 2 (Keras' epoch, logs)."""
    import inspect

    from cnnlab.errors import CnnlabError

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: cnnlab's form
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params) or len(required) in (1, 2):
        return 2 if len(required) == 2 else 1
    raise CnnlabError(f"callback {getattr(fn, '__name__', fn)!r} takes {len(required)} arguments; a function "
                      "callback takes one EpochEnd, or (epoch, logs) as Keras' LambdaCallback")
