"""Optional dependencies: import one, or fail with one line naming the extra to install.

``pip install cnnlab`` stays light (torch, NumPy, Pillow, matplotlib, tqdm, scikit-learn);
the export formats, TensorBoard logs, the lab and the notebooks need packages that only
their users want. Code that needs one calls ``require`` at the point of use::

    ort = require("onnxruntime", extra="export")

and a missing package becomes ``CnnlabError: ... needs onnxruntime, which is not installed;
pip install 'cnnlab[export]'`` (the CLI prints it as one line, exit 2).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from cnnlab.errors import CnnlabError

# Import name -> the name pip installs it under, where they differ.
_PIP_NAMES = {"PIL": "pillow", "sklearn": "scikit-learn", "multipart": "python-multipart"}


class MissingExtra(CnnlabError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, *, extra: str, package: str | None = None, purpose: str | None = None) -> ModuleType:
    """Import ``module`` (e.g. "onnxruntime", "torch.utils.tensorboard") or raise MissingExtra.

    ``extra``: the optional-dependency group in pyproject.toml that installs it.
    ``package``: the pip package that is missing, when it is not the module's own (torch's
    ``torch.utils.tensorboard`` needs ``tensorboard``).
    ``purpose``: what needs it, for the message (default: the module's name).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = (exc.name or module).split(".")[0]
        package = package or _PIP_NAMES.get(top, top)
        raise MissingExtra(f"{purpose or module} needs {package}, which is not installed; "
                           f"pip install 'cnnlab[{extra}]'") from exc
