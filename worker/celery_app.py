"""The Celery application shared by the API (to enqueue) and the workers (to run jobs)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from urllib.parse import urlparse

import redis
from celery import Celery
from kombu.transport import redis as kombu_redis

from irq.settings import Settings, get_settings

TASK_RUN_JOB = "irq.run_job"
QUEUE = "irq"
# Redis redelivers an unacknowledged message after this long; it must exceed the longest job
# (acks are late), or a long job would be delivered twice while it still runs.
VISIBILITY_MARGIN_S = 300


PRIORITY_STEPS = list(range(10))
_KOMBU_PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport keeps one list per priority step


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, reusing one client for its commands instead of building one per command.

    kombu makes a new `redis.Redis` for every publish, ack and bookkeeping command (`conn_or_acquire`);
    redis-py's constructor alone costs about twice a round trip, and it was 14% of a busy worker's Python
    time (docs/benchmarks.md). A client takes a connection from the channel's pool per command and is safe
    to share between threads; a new one is made when kombu replaces the pool (after a fork or a reconnect).
    """

    _shared_client: redis.Redis | None = None

    def _create_client(self, asynchronous: bool = False) -> redis.Redis:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call,no-any-return]
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()  # type: ignore[no-untyped-call]
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def make_celery(settings: Settings) -> Celery:
    app = Celery("irq", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        # The Redis transport with the channel above, for redis:// URLs; others (rediss://, whose TLS
        # defaults kombu sets by scheme, and redis+socket://) keep kombu's own.
        broker_transport=f"{__name__}:Transport" if urlparse(settings.redis_url).scheme == "redis" else None,
        task_default_queue=QUEUE,
        task_ignore_result=True,  # results live in the SQL store
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # The workers' task events feed Flower; the API sends none ("task-sent" would cost every submit
        # another Redis round trip, and Flower shows a task from its "received" event on).
        worker_send_task_events=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": int(settings.max_timeout_s + VISIBILITY_MARGIN_S),
            "queue_order_strategy": "priority",
            "priority_steps": PRIORITY_STEPS,
        },
        worker_hijack_root_logger=False,
    )
    return app


celery_app = make_celery(get_settings())


def worker_argv(settings: Settings, pool: str = "threads") -> list[str]:
    """The arguments of Celery's `worker` command that `irq worker` runs (`pool` other than threads only
    for the benchmarks' comparison)."""
    return [
        "worker",
        f"--pool={pool}",
        f"--concurrency={settings.worker_concurrency}",
        "-Q",
        QUEUE,
        "--loglevel=INFO",
        "-E",
    ] + ([f"--hostname={settings.worker_name}"] if settings.worker_name else [])


def enqueue(job_id: str, priority: int, countdown: float | None = None) -> None:
    """Put a job id on the broker; the API and the worker's retry path both use this.

    Job priority runs 0..9 with 9 most urgent; Celery's Redis transport serves 0 first.
    """
    celery_app.send_task(TASK_RUN_JOB, args=[job_id], priority=9 - priority, countdown=countdown)


def queue_keys() -> list[str]:
    """The Redis lists that hold the job queue's messages, one per priority step."""
    return [QUEUE if p == 0 else f"{QUEUE}{_KOMBU_PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]


UNACKED_KEY = "unacked"  # kombu's Redis transport: messages delivered to a worker and not yet acknowledged


def _job_id(payload: dict) -> str | None:  # type: ignore[type-arg]
    try:
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _payloads(client: redis.Redis, chunk: int = 1000) -> Iterator[dict]:  # type: ignore[type-arg]
    for key in queue_keys():
        for start in range(0, int(client.llen(key)), chunk):
            for raw in client.lrange(key, start, start + chunk - 1):
                yield json.loads(raw)
    for raw in client.hvals(UNACKED_KEY):
        yield json.loads(raw)[0]


def brokered_job_ids(client: redis.Redis) -> set[str]:
    """Ids of the jobs that have a message in Redis: waiting in the queue or held by a worker."""
    ids = set()
    for payload in _payloads(client):
        job_id = _job_id(payload)
        if job_id is not None:
            ids.add(job_id)
    return ids
