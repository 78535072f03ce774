"""Dropping the inference request of a job that ended while a worker thread still waits on it.

The lifecycle publishes the id of every job that reaches a terminal status (`irq/events.py`). A job this
process has a request in flight for was ended by someone else: cancelled by its client or with its batch,
ended at its batch's expiry, or given up by the sweeper. Its result would be dropped anyway (a transition
is conditional on the attempt), so the request is aborted (`inference/abort.py`): the thread is free
within a second and the engine stops generating for nobody.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from inference.abort import Abort
from irq.broker import FINISHED_CHANNEL

log = logging.getLogger("irq.cancels")

# How long an ended job is remembered: a notice may arrive between a job's claim and its request's
# registration here, and the request must still be dropped.
REMEMBER_S = 60.0
POLL_S = 0.5  # how long one read of the subscription waits (and so how soon `stop` is heard)


class CancelWatch:
    """Subscribes to the finished notices and aborts this process's requests of the jobs they name."""

    def __init__(self, client: redis.Redis, remember_s: float = REMEMBER_S) -> None:
        self._client = client
        self._remember_s = remember_s
        self._lock = threading.Lock()
        self._inflight: dict[str, Abort] = {}
        self._ended: OrderedDict[str, float] = OrderedDict()  # job id → when its notice came (monotonic)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="irq-cancels", daemon=True)
        self.subscribed = threading.Event()  # set while the subscription is up

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @contextmanager
    def watching(self, job_id: str) -> Iterator[Abort]:
        """The abort of the request made for `job_id` inside the block; set if the job ends meanwhile."""
        abort = Abort()
        with self._lock:
            self._inflight[job_id] = abort
            ended = job_id in self._ended
        if ended:
            abort.set()
        try:
            yield abort
        finally:
            with self._lock:
                if self._inflight.get(job_id) is abort:
                    del self._inflight[job_id]

    def ended(self, job_id: str) -> None:
        """A finished notice: abort the job's request if one is in flight here."""
        now = time.monotonic()
        with self._lock:
            self._ended[job_id] = now
            self._ended.move_to_end(job_id)
            while self._ended and next(iter(self._ended.values())) < now - self._remember_s:
                self._ended.popitem(last=False)
            abort = self._inflight.get(job_id)
        if abort is not None and not abort.is_set:
            log.info("job %s ended while its request was in flight: dropping the request", job_id)
            abort.set()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(FINISHED_CHANNEL)
                    self.subscribed.set()
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=POLL_S)
                        if message is not None and message["type"] == "message":
                            self.ended(message["data"].decode())
            except Exception as exc:  # Redis went away: a result still comes back, and is dropped
                log.warning("finished notices: %s; subscribing again", exc)
                self._stop.wait(1.0)
            finally:
                self.subscribed.clear()
