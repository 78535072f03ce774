"""Per-process services of the API and the dependencies handlers receive them through."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from irq.events import FinishedListener
from irq.jobs import JobManager
from irq.keys import KeyCache, Principal
from irq.settings import Settings
from irq.store.db import Database


@dataclass
class Services:
    """Created once in the app's lifespan, closed on shutdown."""

    settings: Settings
    db: Database
    jobs: JobManager
    redis: redis.Redis
    finished: FinishedListener
    keys: KeyCache

    @classmethod
    def open(cls, settings: Settings) -> Services:
        db = Database(settings.database_url)
        return cls(
            settings=settings,
            db=db,
            jobs=JobManager(db),
            redis=redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2),
            finished=FinishedListener(settings.redis_url),
            keys=KeyCache(db),
        )

    def close(self) -> None:
        self.redis.close()
        self.db.dispose()


async def services(request: Request) -> Services:  # async: no thread hop for a lookup
    return request.app.state.services  # type: ignore[no-any-return]


_bearer = HTTPBearer(auto_error=False, description="An API key from `irq keys create NAME`.")


def principal(
    svc: Annotated[Services, Depends(services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    found = svc.keys.authenticate(credentials.credentials)
    if found is None:
        raise ApiError(
            401, "unauthorized", "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    _check_rate(svc, found)
    return found


def _check_rate(svc: Services, who: Principal) -> None:
    """At most `rate_limit_per_s` requests per key in each wall-clock second, counted in Redis."""
    limit = svc.settings.rate_limit_per_s
    if limit <= 0:
        return
    counter = f"irq:rate:{who.key_id}:{int(time.time())}"
    try:
        pipe = svc.redis.pipeline()
        pipe.incr(counter)
        pipe.expire(counter, 2)
        count = int(pipe.execute()[0])
    except redis.RedisError:
        return  # no counter without Redis; a submit then fails with 503 anyway
    if count > limit:
        raise ApiError(
            429,
            "rate_limited",
            f"this API key is limited to {limit} requests per second",
            headers={"Retry-After": "1"},
        )


ServicesDep = Annotated[Services, Depends(services)]
PrincipalDep = Annotated[Principal, Depends(principal)]
