"""Models run through ``torch.compile``, for ``TorchBackend(compile=...)``.

``torch.compile(model)`` returns a wrapper that holds the model; the user's model
itself is not changed (``model.compile()`` would change it in place). The wrappers
are kept in a small least-recently-used cache keyed by the model's identity, so a
model is compiled once and at most ``maxsize`` models are kept alive by it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

__all__ = ["CompiledModels"]


class CompiledModels:
    """Thread-safe cache of ``torch.compile(model, **options)`` wrappers.

    Parameters
    ----------
    options
        Keyword arguments for ``torch.compile`` (``mode``, ``backend``, ``dynamic``).
    maxsize
        Most compiled models kept; the least recently used one goes first.
    """

    def __init__(self, options: Mapping[str, Any], maxsize: int = 8) -> None:
        self.options = dict(options)
        self.maxsize = maxsize
        self._lock = threading.Lock()
        # id(model) -> (model, wrapper): the wrapper holds the model anyway, so the id
        # cannot be reused by another model while the entry exists.
        self._entries: OrderedDict[int, tuple[Any, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model: Any) -> Any:
        """The compiled wrapper of ``model``, compiled lazily on its first call."""
        key = id(model)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is model:
                self._entries.move_to_end(key)
                return entry[1]
            import torch

            compiled = torch.compile(model, **self.options)
            self._entries[key] = (model, compiled)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
            return compiled

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
