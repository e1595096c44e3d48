"""A typed change notification for the Qt-free models (napari's EventEmitter, scaled down).

Models emit on the thread that changed them (the GUI thread in the desktop), so a callback
may touch widgets directly; there is no queueing and no Qt here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Emitter(Generic[T]):
    """Calls every connected callback with the new value, in connection order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._callbacks: list[Callable[[T], object]] = []

    def connect(self, callback: Callable[[T], object]) -> None:
        if callback not in self._callbacks:
            self._callbacks.append(callback)

    def disconnect(self, callback: Callable[[T], object]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, value: T) -> None:
        for callback in list(self._callbacks):  # a callback may disconnect itself
            callback(value)

    def __repr__(self) -> str:
        return f"Emitter({self.name!r}, {len(self._callbacks)} callback(s))"
