"""Per-process services of the API and the dependencies handlers receive them through."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis as AsyncRedis
from redis.commands.core import AsyncScript

from api.errors import ApiError
from irq.broker import Broker, rate_key
from irq.error_codes import ErrorCode
from irq.events import FinishedListener
from irq.files import FileStorage
from irq.jobs import JobManager
from irq.keys import KeyCache, Principal
from irq.settings import Settings
from irq.store.db import Database
from irq.store.files import FileRecords
from irq.store.jobs import JobStore
from irq.store.models import Job, JobStatus
from irq.store.read_process import ReadProcess

log = logging.getLogger("irq.api")


class ActiveCounts:
    """Per key, queued + running jobs for the in-flight quota, without counting a large backlog on every
    submit: the store's count is re-read when it is older than `ttl_s` or when the cached count would
    refuse (so a refusal always rests on a fresh count), and the jobs this process accepts are added to it
    in between. Other API processes' accepts within `ttl_s` can overrun the quota; nothing else can."""

    def __init__(self, store: JobStore, ttl_s: float = 1.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._counts: dict[int, tuple[int, float]] = {}  # owner → (count, fresh until)
        self._lock = threading.Lock()

    def would_exceed(self, owner_id: int, adding: int, quota: int) -> bool:
        hit = self._counts.get(owner_id)
        if hit is not None and hit[1] > time.monotonic() and hit[0] + adding <= quota:
            return False
        count = self.store.count_active(owner_id)
        with self._lock:
            self._counts[owner_id] = (count, time.monotonic() + self.ttl_s)
        return count + adding > quota

    def added(self, owner_id: int, n: int) -> None:
        with self._lock:
            hit = self._counts.get(owner_id)
            if hit is not None:
                self._counts[owner_id] = (hit[0] + n, hit[1])


READ_STATEMENT_TIMEOUT_S = 30.0

_COUNT_REQUEST = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


@dataclass
class Services:
    """Created once in the app's lifespan, closed on shutdown."""

    settings: Settings
    db: Database
    # The reads' own pool (the jobs active now for /v1/stats and /metrics, the endpoints' running jobs),
    # its statements cut after READ_STATEMENT_TIMEOUT_S on PostgreSQL: a slow read never takes a
    # connection a submit needs.
    reads_db: Database
    # The reads that merge the rollups (/v1/stats, /dashboard/data, /metrics' totals), in processes of their
    # own, with pools of their own: their CPU never holds this process's interpreter lock while submits wait.
    aggregates: ReadProcess
    broker: Broker
    jobs: JobManager  # every move of a job (submit, cancel)
    store: JobStore  # reads of jobs and batches
    aredis: AsyncRedis  # for what runs on the event loop (the rate limiter)
    count_request: AsyncScript  # INCR a counter, with an expiry when it is new: one round trip, atomic
    finished: FinishedListener
    keys: KeyCache
    active: ActiveCounts
    files: FileRecords  # the OpenAI-compatible API's uploads and batches
    storage: FileStorage  # the bytes of the uploads
    rate_warned_at: float = float("-inf")  # when the rate limiter last logged that it could not count

    @classmethod
    def open(cls, settings: Settings) -> Services:
        db = Database(settings.database_url, wait_s=settings.store_wait_s)
        reads_db = Database(
            settings.database_url,
            pool_size=4,
            wait_s=settings.store_wait_s,
            statement_timeout_s=READ_STATEMENT_TIMEOUT_S,
        )
        aggregates = ReadProcess(
            settings.database_url,
            wait_s=settings.store_wait_s,
            statement_timeout_s=READ_STATEMENT_TIMEOUT_S,
            timeout_s=READ_STATEMENT_TIMEOUT_S + 2 * settings.store_wait_s + 10,  # + a child's start
        )
        broker = Broker(settings)
        jobs = JobManager.open(settings, db, broker)
        aredis = AsyncRedis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        keys = KeyCache(db)
        return cls(
            settings=settings,
            db=db,
            reads_db=reads_db,
            aggregates=aggregates,
            broker=broker,
            jobs=jobs,
            store=jobs.store,
            aredis=aredis,
            count_request=aredis.register_script(_COUNT_REQUEST),
            finished=FinishedListener(settings.redis_url, on_revoked=keys.forget),
            keys=keys,
            active=ActiveCounts(jobs.store),
            files=FileRecords(db),
            storage=FileStorage(settings.files_dir),
        )

    def check_quota(self, owner_id: int, adding: int) -> None:
        """429 when `adding` more jobs would take the key over its queued + running quota."""
        quota = self.settings.max_inflight_jobs
        if quota and self.active.would_exceed(owner_id, adding, quota):
            raise ApiError(
                429,
                ErrorCode.quota_exceeded,
                f"this API key may have {quota} jobs queued or running; submit more as they finish",
                headers={"Retry-After": "5"},
            )

    async def wait_finished(self, job_id: str, owner_id: int, wait_s: float) -> Job | None:
        """The owner's job once it has finished, or as it is after `wait_s`; None if it is not theirs.
        Woken by the job's finished notice, and re-reading the store every `long_poll_recheck_s` in case
        the notice was lost."""
        deadline = time.monotonic() + wait_s
        async with self.finished.watch(job_id) as finished:
            while True:
                job = await run_in_threadpool(self.store.get, job_id, owner_id)
                left = deadline - time.monotonic()
                if job is None or JobStatus(job.status).terminal or left <= 0:
                    return job
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), min(left, self.settings.long_poll_recheck_s))
                finished.clear()

    async def close(self) -> None:
        await self.aredis.aclose()
        self.broker.close()
        self.db.dispose()
        self.reads_db.dispose()
        self.aggregates.close()


async def services(request: Request) -> Services:  # async: no thread hop for a lookup
    return request.app.state.services  # type: ignore[no-any-return]


_bearer = HTTPBearer(auto_error=False, description="An API key from `irq keys create NAME`.")


async def principal(  # async: no thread hop on the common path (a cached key)
    svc: Annotated[Services, Depends(services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise ApiError(
            401,
            ErrorCode.unauthorized,
            "missing API key: send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    found = svc.keys.cached(credentials.credentials) or await run_in_threadpool(
        svc.keys.authenticate, credentials.credentials
    )
    if found is None:
        raise ApiError(
            401, ErrorCode.unauthorized, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    await _check_rate(svc, found)
    return found


async def _check_rate(svc: Services, who: Principal) -> None:
    """At most `rate_limit_per_s` requests per key in each wall-clock second, counted in Redis."""
    limit = svc.settings.rate_limit_per_s
    if limit <= 0:
        return
    counter = rate_key(who.key_id, int(time.time()))
    try:
        count = int(await svc.count_request(keys=[counter], args=[2]))
    except redis.RedisError as exc:
        # No counter without Redis (a submit then fails with 503 anyway), or a Redis whose ACL refuses
        # scripts: the request goes through, and operators are told, once a minute at most.
        if time.monotonic() - svc.rate_warned_at > 60:
            svc.rate_warned_at = time.monotonic()
            log.warning("rate limit not applied: %s: %s", type(exc).__name__, exc)
        return
    if count > limit:
        raise ApiError(
            429,
            ErrorCode.rate_limited,
            f"this API key is limited to {limit} requests per second",
            headers={"Retry-After": "1"},
        )


ServicesDep = Annotated[Services, Depends(services)]
PrincipalDep = Annotated[Principal, Depends(principal)]
