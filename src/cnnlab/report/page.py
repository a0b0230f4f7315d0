"""The HTML page the reports are built on: sections with a table of contents, inline CSS,
figures and arrays embedded as base64 PNG, and small escaping/table helpers.

Everything is embedded so a page opens offline with a double-click and can be mailed as it is.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnlab.text import clean_figure_text, printable

__all__ = ["Page", "array_to_png", "escape", "fig_to_png", "img", "note", "table"]


def escape(text: Any) -> str:
    return html.escape(printable(str(text)))  # names from the file system may not be UTF-8


def fig_to_png(fig, *, dpi: int = 80) -> bytes:
    """A matplotlib Figure rendered to PNG bytes."""
    buf = io.BytesIO()
    clean_figure_text(fig)
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def array_to_png(image: np.ndarray) -> bytes:
    """A uint8 (H, W) or (H, W, 3) array encoded as PNG bytes with Pillow."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def img(png: bytes, alt: str, width: int | None = None, pixelated: bool = False) -> str:
    data = base64.b64encode(png).decode("ascii")
    size = f' width="{width}"' if width else ""
    cls = ' class="pixels"' if pixelated else ""
    return f'<img alt="{escape(alt)}"{size}{cls} src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool] | None = None) -> str:
    numeric = numeric or [False] * len(header)
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "\n".join(
        "<tr>" + "".join(f'<td{" class=num" if num else ""}>{escape(_fmt(v))}</td>' for v, num in
                         zip(row, numeric, strict=True)) + "</tr>"
        for row in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def note(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{escape(text)}</p>'


@dataclass
class Page:
    """Accumulates HTML sections (with a table of contents) and renders figures to PNG."""

    title: str
    dpi: int = 80
    parts: list[str] = field(default_factory=list)
    toc: list[tuple[str, str]] = field(default_factory=list)

    def section(self, anchor: str, heading: str, *body: str) -> None:
        self.toc.append((anchor, heading))
        head = f'<section id="{anchor}">\n<h2>{escape(heading)}</h2>\n'
        self.parts.append(head + "\n".join(body) + "\n</section>")

    def skipped(self, anchor: str, heading: str, reason: str) -> None:
        """A section that says why it is empty (``reason`` may be an exception's text,
        with or without its full stop)."""
        self.section(anchor, heading, note(f"Skipped: {reason.rstrip('.')}.", "skip"))

    def figure(self, fig, alt: str) -> str:
        return img(fig_to_png(fig, dpi=self.dpi), alt)

    def html(self, subtitle: str = "") -> str:
        toc = " · ".join(f'<a href="#{a}">{escape(h)}</a>' for a, h in self.toc)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(self.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{escape(self.title)}</h1>\n<p class=\"note\">{subtitle}</p>\n<nav>{toc}</nav>\n"
            + "\n".join(self.parts)
            + "\n</body>\n</html>\n"
        )


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
nav { font-size: 0.9em; margin: 0.5em 0 1em; line-height: 1.6; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
.note { color: #666; font-size: 0.9em; }
.skip { background: #fff6e0; border-left: 4px solid #e0a000; padding: 0.4em 0.8em; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.filter { display: inline-block; text-align: center; font-size: 0.75em; margin: 0.2em; }
.filter img { image-rendering: pixelated; margin: 0 auto; }
img.pixels { image-rendering: pixelated; }
"""
