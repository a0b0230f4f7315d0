"""How the report shows results: its own module, imported by the page assembly (``html``) and
by every section (``sections``, ``why``), so none of them imports another in a circle."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportOptions:
    """How the report shows results. Tables past these lengths are truncated with a note.
    (How much is collected, e.g. the number of top losses: ``cnnlab.insight.results.ResultsOptions``.)"""

    max_class_rows: int = 30  # per-class table: the worst classes by F1 when there are more
    max_pairs: int = 20  # most-confused pairs
    max_maps: int = 64  # feature maps per layer and image
    dpi: int = 80  # PNG resolution: 80 keeps a 100-class report small and fast
