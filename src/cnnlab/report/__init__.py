"""Rendering: ``plots`` (each a function returning a matplotlib Figure), ``page`` (the HTML
building blocks), ``sections`` (the report's sections, one function each) and ``html`` (the
self-contained report and filters pages). It renders results that ``cnnlab.insight``
computed (``cnnlab.insight.results``) and computes nothing: it never imports training or
evaluation and never runs a model (tests/test_report.py checks the imports).
"""

from cnnlab.report.html import ReportOptions, render_filters_page, render_report, write_filters_page, write_report

__all__ = ["ReportOptions", "render_filters_page", "render_report", "write_filters_page", "write_report"]
