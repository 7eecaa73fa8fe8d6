"""The one bounded cache of the library: thread-safe, least recently used first out,
with keys that refer to user objects weakly.

Explainers keep what an input signature fixes (layout, output spec); backends keep
one traced or compiled function per model, operator and output selector. Keying a
cache with the objects themselves would keep every model alive for as long as the
cache holds its entry; :class:`ObjectKey` refers to them weakly where Python allows
it, and compares by identity, so models that define ``__eq__`` (or are unhashable)
are keyed correctly too. An entry whose model, operator or selector has been
collected can never be hit again; it is dropped on the next insertion.

A cache pickles and deep-copies empty, so that whatever holds one can be sent to
another process. Nothing here imports a framework.
"""

from __future__ import annotations

import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["BoundedCache", "ObjectKey", "object_key"]

Value = TypeVar("Value")


class _StrongRef:
    """Stands in for a weak reference to an object that does not support them."""

    __slots__ = ("_obj",)

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __call__(self) -> Any:
        return self._obj


def _reference(obj: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(obj)
    except TypeError:  # ints, some builtins and classes with __slots__ lack __weakref__
        return _StrongRef(obj)


class ObjectKey:
    """The identity of one object, held weakly where possible.

    A bound method is keyed by its instance and function, since every attribute
    access creates a new method object.

    Parameters
    ----------
    obj
        The object to key: a model, an operator or an output selector.
    """

    __slots__ = ("_hash", "_ids", "_is_method", "_refs")

    def __init__(self, obj: Any) -> None:
        self._is_method = isinstance(obj, types.MethodType)
        parts = (obj.__self__, obj.__func__) if self._is_method else (obj,)
        self._refs = tuple(_reference(part) for part in parts)
        self._ids = tuple(id(part) for part in parts)
        self._hash = hash(self._ids)

    def get(self) -> Any:
        """Return the object, or ``None`` once it has been garbage-collected."""
        parts = [ref() for ref in self._refs]
        if any(part is None for part in parts):
            return None
        return types.MethodType(parts[1], parts[0]) if self._is_method else parts[0]

    @property
    def alive(self) -> bool:
        return all(ref() is not None for ref in self._refs)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        # A dead key equals nothing else: its ids may already belong to new objects.
        return (isinstance(other, ObjectKey) and self._ids == other._ids
                and self.alive and other.alive)

    def __repr__(self) -> str:
        return f"ObjectKey({self.get()!r})"


def object_key(obj: Any) -> ObjectKey | None:
    """An :class:`ObjectKey` for ``obj``, or ``None`` for ``None``."""
    return None if obj is None else ObjectKey(obj)


def _key_alive(key: Hashable) -> bool:
    parts = key if isinstance(key, tuple) else (key,)
    return all(part.alive for part in parts if isinstance(part, ObjectKey))


class BoundedCache(Generic[Value]):
    """A bounded mapping with least-recently-used eviction, safe to share between threads.

    Parameters
    ----------
    maxsize
        Most entries kept; the least recently used one is dropped beyond it.
    """

    def __init__(self, maxsize: int = 32) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize={maxsize!r}; expected a positive int such as 32.")
        self.maxsize = maxsize
        self._entries: OrderedDict[Hashable, Value] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_create(self, key: Hashable, factory: Callable[[], Value]) -> Value:
        """Return the value cached under ``key``, creating it with ``factory()`` if missing.

        ``factory`` runs under the cache's lock, so it must be quick and must not
        use the cache itself.
        """
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
                return value
            self._drop_dead()
            value = factory()
            self._entries[key] = value
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
            return value

    def get(self, key: Hashable) -> Value | None:
        """The value cached under ``key``, or ``None``."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Value) -> None:
        """Cache ``value`` under ``key``, dropping the least recently used entry beyond
        ``maxsize``."""
        with self._lock:
            self._drop_dead()
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"maxsize": self.maxsize}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["maxsize"])  # type: ignore[misc]

    def _drop_dead(self) -> None:
        for key in [key for key in self._entries if not _key_alive(key)]:
            del self._entries[key]

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            self._drop_dead()
            return len(self._entries)
