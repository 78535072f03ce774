"""The broker: the Celery app factory and its Redis transport, the job queues (one per served model and
backend, `irq/endpoints.py`), enqueueing, and every Redis key irq uses. The API (producer) and the workers
(consumer) both use this module; neither imports the other.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast
from urllib.parse import urlparse

import redis
from celery import Celery
from kombu.entity import Queue
from kombu.transport import redis as kombu_redis

from irq.endpoints import Endpoint, load_registry
from irq.settings import Settings

log = logging.getLogger("irq.broker")

TASK_RUN_JOB = "irq.run_job"
PRIORITY_STEPS = list(range(10))
# Redis redelivers an unacknowledged message after this long; it must exceed the longest job
# (acks are late), or a long job would be delivered twice while it still runs.
VISIBILITY_MARGIN_S = 300
# A Redis that does not answer (paused, partitioned) fails a command after this long, so that a submit is
# answered 503 within seconds instead of hanging. Above kombu's 1-s BRPOP, which a worker's read waits on.
REDIS_TIMEOUT_S = 2.0
RECHECK_S = 1.0  # before a job whose message was not seen is called lost

# Every Redis key irq reads or writes. kombu's own: one list per queue and priority step (the queue's name,
# then the name + separator + step), and the hash of messages delivered to a worker and not yet
# acknowledged.
_KOMBU_PRIORITY_SEP = "\x06\x16"
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"  # kombu's: delivery tag → when it was delivered (Unix seconds)
FINISHED_CHANNEL = "irq:finished"  # pub/sub: the id of each job that reached a terminal status
KEYS_REVOKED_CHANNEL = "irq:keys-revoked"  # pub/sub: the id of each API key just revoked
SWEEP_LOCK = "irq:sweeper"  # held by the one worker sweeping the store for lost jobs
RECORDS_LOCK = "irq:records"  # held by the one worker rolling up and pruning finished jobs
ENDPOINT_STATE = "irq:endpoint-state"  # hash: endpoint name → what its workers last saw of it (JSON)


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def rate_key(key_id: int, second: int) -> str:
    """The counter of one API key's requests in one wall-clock second."""
    return f"irq:rate:{key_id}:{second}"


def queue_keys(queue: str) -> list[str]:
    """The Redis lists that hold one queue's messages, one per priority step."""
    return [queue if p == 0 else f"{queue}{_KOMBU_PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]


def redis_client(url: str, timeout_s: float = REDIS_TIMEOUT_S) -> redis.Redis:
    """A Redis client with bounded timeouts, so that a Redis that does not answer fails fast."""
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=min(timeout_s, 5.0))


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, reusing one client for its commands instead of building one per command.

    kombu makes a new `redis.Redis` for every publish, ack and bookkeeping command (`conn_or_acquire`);
    redis-py's constructor alone costs about twice a round trip, and it was 14% of a busy worker's Python
    time (docs/benchmarks.md). A client takes a connection from the channel's pool per command and is safe
    to share between threads; a new one is made when kombu replaces the pool (after a fork or a reconnect).
    """

    _shared_client: redis.Redis | None = None

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        # A channel outlives its connection: after a reconnect, what was made on the old connection (the
        # event dispatcher a running job's request holds, the channel that delivered its message) still
        # sends on it. kombu closes a connection by dropping the references between it, its transport and
        # its channels, so a closed channel's next command, building a new pool, failed with AttributeError
        # (`'NoneType' object has no attribute 'hostname'` or `'client'`), which Celery's consumer takes as
        # unrecoverable: the worker stopped. A connection error is what Celery expects there: it logs it
        # or retries on the new connection (closing the channel gave its messages back to the queue).
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("the channel's broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call,no-any-return]

    def _create_client(self, asynchronous: bool = False) -> redis.Redis:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call,no-any-return]
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()  # type: ignore[no-untyped-call]
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def make_celery(settings: Settings, include: Sequence[str] = (), stock_transport: bool = False) -> Celery:
    """The Celery app of one process: the workers' (with `include`, the task modules) or a producer's.
    `stock_transport` keeps kombu's own Redis transport (Flower recognises brokers by URL scheme)."""
    url = settings.celery_broker_url
    app = Celery("irq", broker=url, include=list(include))
    if settings.broker_is_amqp:
        _amqp_conf(app, settings)
        return app
    custom = urlparse(url).scheme == "redis" and not stock_transport
    app.conf.update(
        # The Redis transport with the channel above, for redis:// URLs; others (rediss://, whose TLS
        # defaults kombu sets by scheme, and redis+socket://) keep kombu's own.
        broker_transport=f"{__name__}:Transport" if custom else None,
        # The registry's queues, declared so that Flower lists each of them and its length.
        task_queues=[Queue(name) for name in load_registry(settings).queues],  # type: ignore[no-untyped-call]
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
            "socket_timeout": REDIS_TIMEOUT_S,
            "socket_connect_timeout": min(REDIS_TIMEOUT_S, 2.0),
        },
        # One more try on a connection error (a Redis that restarted); a Redis that does not answer fails
        # the publish within twice the timeout, and the submit is answered 503.
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
        worker_hijack_root_logger=False,
    )
    return app


def _amqp_conf(app: Celery, settings: Settings) -> None:
    """RabbitMQ: durable queues with priorities (9 most urgent, as a job's), persistent messages, and a
    consumer's unacknowledged messages given back at once when its connection drops (no visibility
    timeout); connections that fail within seconds."""
    app.conf.update(
        task_queues=[
            Queue(name, queue_arguments={"x-max-priority": max(PRIORITY_STEPS)})  # type: ignore[no-untyped-call]
            for name in load_registry(settings).queues
        ],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=REDIS_TIMEOUT_S,
        broker_heartbeat=10,
        # After a reconnect Celery lowers the prefetch by the jobs still running, then raises it one step per
        # acknowledgement with a synchronous `basic.qos` from inside its event loop; after a dropped
        # connection that call waited on the old one until RabbitMQ gave up on it (30 s), and nothing was
        # consumed meanwhile. Without the cut the worker may hold as many more messages as jobs were running
        # (they wait for a thread; a dropped connection gives them back).
        worker_enable_prefetch_count_reduction=False,
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
        worker_hijack_root_logger=False,
    )


def worker_argv(settings: Settings, endpoint: Endpoint, pool: str = "threads") -> list[str]:
    """The arguments of Celery's `worker` command for the process serving `endpoint` (`pool` other than
    threads only for the benchmarks' comparison): its queue, as many threads as it takes requests at once,
    and a node name of its own (`endpoint@host`), since one host may run a worker for each endpoint.
    Without mingle: at each (re)connect it broadcasts a hello to the other workers with kombu's own bounded
    retry, whose error Celery's consumer does not count as a connection error, so a broker still
    restarting stopped the worker ("Unrecoverable error: OperationalError"); irq needs none of what it
    syncs (revoked task ids, the logical clock), since a cancel lives in the store."""
    return [
        "worker",
        f"--pool={pool}",
        f"--concurrency={endpoint.max_inflight}",
        "-Q",
        endpoint.queue,
        "--loglevel=INFO",
        "-E",
        "--without-mingle",
        f"--hostname={endpoint.name}@{settings.worker_name or '%h'}",
    ]


class Broker:
    """Puts job ids on the queue and reads what it holds; one per process, its Celery app built on first
    use (so importing this module connects to nothing)."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self._app = app
        self.redis = redis_client(settings.redis_url)
        self.registry = load_registry(settings)  # the process's one reading of it
        self.queues = self.registry.queues
        self.amqp = settings.broker_is_amqp
        self._release = self.redis.register_script(_RELEASE)

    @property
    def app(self) -> Celery:
        if self._app is None:
            self._app = make_celery(self.settings)
        return self._app

    def enqueue(self, job_id: str, queue: str, priority: int, countdown: float | None = None) -> None:
        """Send one job's message to `queue`. Job priority runs 0..9 with 9 most urgent, as RabbitMQ's;
        kombu's Redis transport serves step 0 first."""
        step = priority if self.amqp else 9 - priority
        self.app.send_task(TASK_RUN_JOB, args=[job_id], queue=queue, priority=step, countdown=countdown)

    def queue_depths(self) -> dict[str, int]:
        """Per queue, the messages waiting in it (not those a worker holds)."""
        if self.amqp:
            with self.app.connection_for_read() as conn:
                channel = conn.default_channel
                return {q: int(channel.queue_declare(q, passive=True).message_count) for q in self.queues}
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                for key in queue_keys(queue):
                    pipe.llen(key)
            lengths = [int(n) for n in pipe.execute()]
        steps = len(PRIORITY_STEPS)
        return {q: sum(lengths[i * steps : (i + 1) * steps]) for i, q in enumerate(self.queues)}

    def publish_endpoint_state(self, name: str, state: dict[str, object]) -> None:
        self.redis.hset(ENDPOINT_STATE, name, json.dumps(state))

    def endpoint_states(self) -> dict[str, dict[str, object]]:
        """What the workers last published about each endpoint (`worker/gate.py`)."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(ENDPOINT_STATE))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def without_message(self, job_ids: set[str], delivered_after: float) -> set[str]:
        """Those of `job_ids` that have no message in Redis: none waiting in the queue, and none delivered
        to a worker after `delivered_after` (Unix seconds) and not yet acknowledged. A message delivered
        before that counts as held by nobody: a worker claims what it is given at once, so a job still
        queued long after its delivery was delivered to a worker that died (Redis would redeliver it only
        after the visibility timeout, an hour). A message on its way between the queue and the delivered set
        (a delivery pops it, then records it; the queue is read first) is briefly seen in neither, so a job
        found without one is looked for again `RECHECK_S` later."""
        unseen = job_ids - self._brokered_job_ids(delivered_after)
        if unseen:
            time.sleep(RECHECK_S)
            unseen -= self._brokered_job_ids(delivered_after)
        return unseen

    def _brokered_job_ids(self, delivered_after: float) -> set[str]:
        return {job_id for job_id in map(_job_id, self._payloads(delivered_after)) if job_id is not None}

    def message_count(self, delivered_after: float) -> int:
        """How many messages `without_message` would read (without reading them): a count per key."""
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                for key in queue_keys(queue):
                    pipe.llen(key)
            pipe.zcount(UNACKED_INDEX_KEY, delivered_after, "+inf")
            return sum(int(n) for n in pipe.execute())

    def take_lock(self, key: str, holder: str, ttl_ms: int) -> bool:
        return bool(self.redis.set(key, holder, nx=True, px=ttl_ms))

    def release_lock(self, key: str, holder: str) -> None:
        """Give the lock up if `holder` still holds it (one round trip; a lapsed lock is left as it is)."""
        self._release(keys=[key], args=[holder])

    def close(self) -> None:
        self.redis.close()

    def _payloads(self, delivered_after: float, chunk: int = 1000) -> Iterator[dict]:  # type: ignore[type-arg]
        for key in (key for queue in self.queues for key in queue_keys(queue)):
            for start in range(0, int(self.redis.llen(key)), chunk):
                for raw in self.redis.lrange(key, start, start + chunk - 1):
                    yield json.loads(raw)
        tags = cast(list[bytes], self.redis.zrangebyscore(UNACKED_INDEX_KEY, delivered_after, "+inf"))
        for start in range(0, len(tags), chunk):
            for message in self.redis.hmget(UNACKED_KEY, tags[start : start + chunk]):
                if message is not None:  # acknowledged meanwhile
                    yield json.loads(message)[0]


def _job_id(payload: dict) -> str | None:  # type: ignore[type-arg]
    try:
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
