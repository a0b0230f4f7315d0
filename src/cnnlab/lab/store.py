"""Inputs the page has sent (drawn digits, uploaded photos), kept in memory only.

Each gets a random token; the page names its current input by that token (or by
``test:<index>`` for a test image) in every later request. Nothing is written to disk, and
the oldest entries are dropped once ``capacity`` is reached, so memory stays bounded.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict

from cnnlab.lab.imaging import LabError
from cnnlab.lab.targets import Input, evaluated

_TOKEN = re.compile(r"[0-9a-f]{16}")
_TEST = re.compile(r"test:(\d{1,7})")


class InputStore:
    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[int, Input]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, target_id: int, item: Input) -> str:
        token = secrets.token_hex(8)
        with self._lock:
            self._items[token] = (target_id, item)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return token

    def resolve(self, target_id: int, target, ref: str | None) -> Input:
        """The Input named by ``ref``: ``test:<index>`` or a token from :meth:`add`."""
        if not ref:
            raise LabError(400, "no input given; pick a test image, draw, or upload a photo first")
        if m := _TEST.fullmatch(ref):
            return evaluated(target).test_input(int(m.group(1)))
        if _TOKEN.fullmatch(ref):
            with self._lock:
                found = self._items.get(ref)
            if found is None or found[0] != target_id:
                raise LabError(404, "that input has expired (the lab keeps the latest 64); draw or upload it again")
            return found[1]
        raise LabError(400, f"input {ref[:40]!r} is neither test:<index> nor a token the lab gave out")
