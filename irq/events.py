"""Job-finished notices over Redis pub/sub, so that long-polling clients hear of a result at once.

The lifecycle (`irq/jobs.py`) publishes a job's id with every move into a terminal status. The notice is a
hint, never the truth: a waiter still reads the job from the store, and re-reads it every
`Settings.long_poll_recheck_s` in case a notice was lost (Redis restarted, or a publisher could not reach it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence

import redis
import redis.asyncio as aioredis

from irq.broker import FINISHED_CHANNEL, KEYS_REVOKED_CHANNEL

log = logging.getLogger("irq.events")


class Notifier:
    """Publishes that jobs finished; a notice that cannot be sent is logged, never raised."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def finished(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.publish(FINISHED_CHANNEL, job_id)
                pipe.execute()
        except redis.RedisError as exc:  # waiters re-read the store on their own
            log.info("could not publish that %d job(s) finished: %s", len(job_ids), exc)


class FinishedListener:
    """One pub/sub subscription per API process, fanned out to every request waiting on a job; it also
    hears of revoked API keys (`on_revoked`)."""

    def __init__(self, redis_url: str, on_revoked: Callable[[int], None] | None = None) -> None:
        self._redis_url = redis_url
        self._on_revoked = on_revoked
        self._waiting: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set when a notice for `job_id` arrives. Watch before reading the job from the store,
        so that a notice sent between that read and the wait is not missed."""
        event = asyncio.Event()
        self._waiting[job_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiting.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiting[job_id]

    async def _listen(self) -> None:
        while True:
            try:
                client = aioredis.Redis.from_url(self._redis_url)
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(FINISHED_CHANNEL, KEYS_REVOKED_CHANNEL)
                    async for message in pubsub.listen():
                        if message["type"] != "message":
                            continue
                        data = message["data"].decode()
                        if message["channel"].decode() == KEYS_REVOKED_CHANNEL:
                            if self._on_revoked is not None and data.isdigit():
                                self._on_revoked(int(data))
                            continue
                        for event in self._waiting.get(data, ()):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: waiters fall back to re-reading the store
                log.warning("job notices: %s; resubscribing", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
