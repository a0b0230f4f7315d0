"""Old import paths from before the package was grouped by concern (0.1 had 22 flat modules).

``import cnnlab.conv`` and ``from cnnlab import plots`` in users' notebooks keep working for
this release: the old name is bound to the new module and a FutureWarning names the new path
(FutureWarning, not DeprecationWarning, because Python hides the latter outside __main__).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "cnnlab.conv": "cnnlab.scratch.conv",
    "cnnlab.kernels": "cnnlab.scratch.kernels",
    "cnnlab.images": "cnnlab.scratch.images",
    "cnnlab.summary": "cnnlab.models.summary",
    "cnnlab.pretrained": "cnnlab.models.pretrained",
    "cnnlab.winograd": "cnnlab.fast.winograd",
    "cnnlab.step": "cnnlab.train.step",
    "cnnlab.optim": "cnnlab.train.optim",
    "cnnlab.distributed": "cnnlab.train.distributed",
    "cnnlab.device": "cnnlab.train.device",
    "cnnlab.memory": "cnnlab.fast.memory",
    "cnnlab.train.memory": "cnnlab.fast.memory",
    "cnnlab.experiment": "cnnlab.runs.experiment",
    "cnnlab.recipes": "cnnlab.train.config",
    # The run directory left cnnlab.train (which now only trains) for its own package.
    "cnnlab.train.runs": "cnnlab.runs.directory",
    "cnnlab.train.runlock": "cnnlab.runs.lock",
    "cnnlab.train.config_file": "cnnlab.runs.config_file",
    "cnnlab.train.program": "cnnlab.runs.program",
    "cnnlab.train.experiment": "cnnlab.runs.experiment",
    "cnnlab.evaluate": "cnnlab.insight.predictions",
    "cnnlab.inspect": "cnnlab.insight.internals",
    # Renamed: "inspect" shadowed the standard library's, "evaluate" named four things.
    "cnnlab.insight.inspect": "cnnlab.insight.internals",
    "cnnlab.insight.evaluate": "cnnlab.insight.predictions",
    "cnnlab.plots": "cnnlab.report.plots",
}


class _Redirect(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there (the old path goes in the next release)",
                      FutureWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):  # the new module is already executed
        pass


def install() -> None:
    if not any(isinstance(f, _Redirect) for f in sys.meta_path):
        sys.meta_path.append(_Redirect())
