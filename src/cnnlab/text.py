"""Text fit to show: file and folder names that are not valid UTF-8, made printable.

On Linux a name is bytes; Python hands over the bytes that are not UTF-8 as lone
surrogates (``'caf\\udce9'`` for ``b'caf\\xe9'``, PEP 383's surrogateescape). They round-trip
to the file system, but matplotlib, UTF-8 files and HTML pages cannot encode them and fail
with a traceback. ``printable`` shows each such byte as U+FFFD, as a browser would.
"""

from __future__ import annotations

import codecs
import contextlib
import sys

REPLACEMENT = "\ufffd"


def printable(text: str) -> str:
    """``text`` with undecodable bytes (and any other lone surrogate) replaced by U+FFFD."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate surrogateescape did not make (e.g. '\ud800')
        return "".join(REPLACEMENT if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)


def clean_figure_text(fig) -> None:
    """Make every text of a matplotlib Figure printable, in place (before saving it)."""
    from matplotlib.text import Text

    for artist in fig.findobj(Text):
        text = artist.get_text()
        if isinstance(text, str) and any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
            artist.set_text(printable(text))


def _replace_unencodable(error: UnicodeError):
    if not isinstance(error, UnicodeEncodeError):
        raise error
    try:  # bytes: an encoder takes only ASCII from a handler's str, but any bytes
        mark = REPLACEMENT.encode(error.encoding)
    except (UnicodeError, LookupError):
        mark = b"?"
    return mark * (error.end - error.start), error.end


codecs.register_error("cnnlab.printable", _replace_unencodable)


def printable_streams() -> None:
    """Let stdout and stderr print any name: unencodable characters show as U+FFFD (or '?').

    Under a UTF-8 locale Python's stdout refuses the surrogates of a non-UTF-8 file name,
    so a command that prints a path would die with a traceback after doing its work.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="cnnlab.printable")
