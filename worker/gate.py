"""Whether a worker's endpoint takes requests. While it does not, the worker takes no job from its queue: the
jobs wait there, queued, for the endpoint to come back (or for a replica's worker to take them), instead of
spending their attempts on an endpoint that is known to be down.

The gate closes when a request cannot reach the endpoint at all (`inference.errors.EndpointDown`: nothing
listens, or no connection could be made). While closed, the worker stops consuming its queue and a thread
probes the endpoint's health check every `PROBE_S`; the first good answer opens the gate and the worker
consumes again. What the gate saw is published for `/readyz`, `/metrics` and `/v1/stats`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from irq.endpoints import Endpoint

log = logging.getLogger("irq.gate")

PROBE_S = 2.0  # how often a closed gate asks the endpoint's health check


class EndpointGate:
    """Open while the endpoint takes requests. `on_change(open)` runs (in the probing thread, or the
    caller's) each time it opens or closes: the worker stops or resumes consuming its queue there."""

    def __init__(
        self,
        endpoint: Endpoint,
        healthy: Callable[[], bool],
        on_change: Callable[[bool], None],
        probe_s: float = PROBE_S,
    ) -> None:
        self.endpoint = endpoint
        self._healthy = healthy
        self._on_change = on_change
        self._probe_s = probe_s
        self._open = threading.Event()
        self._open.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._reason = ""
        self._since = time.time()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def wait_open(self, timeout_s: float) -> bool:
        """Whether the gate is open, waiting up to `timeout_s` for it."""
        return self._open.wait(timeout_s)

    def close(self, reason: str) -> None:
        """The endpoint could not be reached: stop taking its jobs until its health check answers."""
        with self._lock:
            if not self._open.is_set() or self._stop.is_set():
                return
            self._open.clear()
            self._reason, self._since = reason[:300], time.time()
        log.warning("endpoint %s is down (%s): its jobs wait in the queue", self.endpoint.name, reason)
        self._notify(False)
        threading.Thread(target=self._probe, name=f"irq-gate-{self.endpoint.name}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def state(self) -> dict[str, Any]:
        """What the gate saw, as published for the API's readiness, metrics and statistics."""
        return {
            "up": self.is_open,
            "since": self._since,
            "reason": "" if self.is_open else self._reason,
            "model": self.endpoint.model,
            "backend": self.endpoint.backend,
            "at": time.time(),
        }

    def _probe(self) -> None:
        while not self._stop.wait(self._probe_s):
            if self._healthy():
                with self._lock:
                    self._open.set()
                    self._reason, self._since = "", time.time()
                log.warning("endpoint %s answers again: taking its jobs", self.endpoint.name)
                self._notify(True)
                return

    def _notify(self, is_open: bool) -> None:
        try:
            self._on_change(is_open)
        except Exception as exc:  # the broker is down too: the gate still holds jobs back in the task
            log.warning("endpoint %s: could not switch consuming: %s", self.endpoint.name, exc)
