"""Stopping an inference call from another thread: the worker aborts the request of a job that ended while
the request was in flight (`worker/cancels.py`), and each client drops it its own way (the HTTP client
closes its connection, so the service stops the generation; the Modal client cancels its call).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("irq.inference")


class Aborted(Exception):
    """The call was stopped by its caller (its job ended meanwhile): no fault of the endpoint, and nothing
    to retry or to store."""


class Abort:
    """Set once, by any thread; the hooks a client registered for its call in flight run when it is set
    (at once, for a hook registered after)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._hooks: list[Callable[[], None]] = []

    @property
    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with self._lock:
            if self._set:
                return
            self._set = True
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            _run(hook)

    def on_set(self, hook: Callable[[], None]) -> None:
        with self._lock:
            if not self._set:
                self._hooks.append(hook)
                return
        _run(hook)

    def check(self, what: str) -> None:
        """`Aborted` if set: the call stops before `what`."""
        if self._set:
            raise Aborted(f"aborted before {what}")


def _run(hook: Callable[[], None]) -> None:
    try:
        hook()
    except Exception as exc:  # the call may have ended meanwhile: nothing left to stop
        log.debug("abort hook %s: %s", getattr(hook, "__name__", hook), exc)
