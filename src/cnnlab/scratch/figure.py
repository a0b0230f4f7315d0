"""The Figure every cnnlab plot returns: matplotlib's, with a rich display of its own.

cnnlab draws on ``matplotlib.figure.Figure`` objects, never through ``pyplot`` (nothing enters
pyplot's global list, nothing needs closing, no GUI backend is touched). Jupyter renders such a
figure only once pyplot has set up its inline display in that kernel, so in a fresh kernel a
plot cell printed ``<Figure size 750x287.5 with 3 Axes>``. This subclass gives IPython the PNG
itself (``_repr_png_``), so a returned figure shows as an image in any kernel and any backend.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure as _MatplotlibFigure


class Figure(_MatplotlibFigure):
    """A ``matplotlib.figure.Figure`` that Jupyter and IPython show as a PNG image."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        # As matplotlib's inline backend draws it: the figure's own dpi, cropped to what is drawn.
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()
