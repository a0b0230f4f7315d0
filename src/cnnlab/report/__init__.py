"""Rendering: ``plots`` (each a function returning a matplotlib Figure) and ``html`` (the
self-contained report page). It renders results that ``cnnlab.insight`` computed.
"""

from cnnlab.report.html import ReportOptions, write_filters_page, write_report

__all__ = ["ReportOptions", "write_filters_page", "write_report"]
